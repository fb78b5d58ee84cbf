import numpy as np
import pytest
import torch
from tests.helpers import CLASSES, assert_one_line_error, run_script, tiny_network, write_checkpoint, write_photo

import occlusion
from zfnet.errors import UserError
from zfnet.occlusion import occlusion_maps, square_positions, strongest_activation


def plain_loop(model, x, size, stride, target, layer, channel):
    """The definition: a copy of the photo per position with the square painted on it, each
    run through the whole network (in batches, which does not change any copy's result)."""
    offsets = square_positions(x.shape[1], size, stride)
    copies = []
    for top in offsets:
        for left in offsets:
            occluded = x.clone()
            occluded[:, top:top + size, left:left + size] = 0
            copies.append(occluded)
    feature, probabilities = [], []
    with torch.inference_mode():
        for batch in torch.stack(copies).split(64):
            feature.append(model.activations(batch, [layer])[layer][:, channel].sum((1, 2)))
            probabilities.append(model(batch).softmax(1))
    shape = (len(offsets), len(offsets))
    probabilities = torch.cat(probabilities)
    return (torch.cat(feature).view(shape).numpy(), probabilities[:, target].view(shape).numpy(),
            probabilities.argmax(1).view(shape).numpy())


@pytest.mark.parametrize("network, input_size, size, stride, batch_size", [
    ({}, 224, 50, 16, 64),                                                   # ZFNet; squares cut off at the edge
    ({"arch": "alexnet"}, 224, 37, 23, 5),                                   # an 11x11 stride-4 first layer
    ({"conv_channels": (8, 16, 0, 0, 16), "fc_features": (32, 0)}, 224, 60, 41, 7),  # layers 3, 4, 7 removed
    ({}, 64, 3, 3, 16),                                                      # a tiny square
    ({}, 64, 64, 1, 1),                                                      # the square covers everything
])
def test_fast_maps_equal_the_plain_loop(network, input_size, size, stride, batch_size):
    model = tiny_network(input_size, **network).double()
    torch.manual_seed(1)
    x = torch.randn(3, input_size, input_size, dtype=torch.float64)
    channel, _, _ = strongest_activation(model, x, 5)
    fast = occlusion_maps(model, x, size, stride, 1, 5, channel, batch_size)
    feature, probability, prediction = plain_loop(model, x, size, stride, 1, 5, channel)
    assert fast["feature"].shape == feature.shape == (len(square_positions(input_size, size, stride)),) * 2
    np.testing.assert_allclose(fast["feature"].numpy(), feature, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast["probability"].numpy(), probability, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(fast["prediction"].numpy(), prediction)
    # The square must change the answers, or equal maps would prove nothing.
    with torch.inference_mode():
        unoccluded = model(x[None]).softmax(1)[0, 1].item()
    assert np.abs(probability - unoccluded).max() > 1e-4


def test_float32_maps_match_the_plain_loop_to_rounding():
    """The defaults (50-pixel square, stride 8) in the precision the script runs in."""
    model = tiny_network(224)
    x = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(2))
    channel, _, _ = strongest_activation(model, x, 5)
    fast = occlusion_maps(model, x, 50, 8, 0, 5, channel)
    feature, probability, _ = plain_loop(model, x, 50, 8, 0, 5, channel)
    np.testing.assert_allclose(fast["feature"].numpy(), feature, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast["probability"].numpy(), probability, atol=1e-6)


def test_square_positions_cover_the_input_as_captum_does():
    # 0 to 168 keep the square whole; at 176 it is cut off by the edge, so nothing stays uncovered.
    assert square_positions(224, 50, 8) == list(range(0, 177, 8))
    assert square_positions(224, 24, 8) == list(range(0, 201, 8))
    assert square_positions(224, 224, 8) == square_positions(224, 224, 300) == [0]
    with pytest.raises(UserError, match="larger than the 224-pixel input"):
        square_positions(224, 225, 8)
    with pytest.raises(UserError, match="at least 1"):
        square_positions(224, 50, 0)
    with pytest.raises(UserError, match="gaps"):
        square_positions(224, 50, 51)


def test_strongest_activation_is_the_largest_of_layer_5():
    model = tiny_network(64)
    x = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))
    channel, row, column = strongest_activation(model, x, 5)
    maps = model.activations(x[None], [5])[5][0]
    assert maps[channel, row, column] == maps.max()


@pytest.fixture
def setup(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    in_class = write_photo(tmp_path / "photos" / "roses" / "a.jpg", seed=0)
    loose = write_photo(tmp_path / "b.png", seed=1, size=(50, 80))
    return checkpoint, in_class, loose


def test_script_writes_maps_and_figures(setup, tmp_path, capsys):
    checkpoint, in_class, loose = setup
    out = tmp_path / "out"
    occlusion.main([in_class, loose, "--checkpoint", checkpoint, "--size", "16", "--stride", "6", "--out", str(out),
                    "--device", "cpu"])
    positions = len(square_positions(64, 16, 6))
    for name in ("a", "b"):
        saved = np.load(out / f"{name}.npz")
        for key in ("feature", "probability", "prediction"):
            assert saved[key].shape == (positions, positions)
        assert list(saved["tops"]) == list(saved["lefts"]) == square_positions(64, 16, 6)
        assert list(saved["classes"]) == CLASSES and saved["layer"] == 5 and saved["size"] == 16
        assert ((saved["probability"] >= 0) & (saved["probability"] <= 1)).all()
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # In a class folder the photo is judged against that class; elsewhere against the prediction.
    assert np.load(out / "a.npz")["target"] == CLASSES.index("roses")
    loose_saved = np.load(out / "b.npz")
    assert loose_saved["target"] == loose_saved["unoccluded_probability"].argmax()
    assert "P(roses)" in capsys.readouterr().out


def test_class_option_picks_the_class_of_map_b(setup, tmp_path):
    checkpoint, in_class, _ = setup
    occlusion.main([in_class, "--checkpoint", checkpoint, "--size", "32", "--stride", "16", "--class", "daisy",
                    "--out", str(tmp_path / "out")])
    assert np.load(tmp_path / "out" / "a.npz")["target"] == CLASSES.index("daisy")


@pytest.mark.parametrize("arguments, message", [
    (["--class", "tulips"], "unknown class 'tulips'"),
    (["--size", "65"], "larger than the 64-pixel input"),
    (["--stride", "0"], "at least 1"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_bad_options_are_user_errors(setup, arguments, message):
    checkpoint, in_class, _ = setup
    with pytest.raises(UserError, match=message):
        occlusion.main([in_class, "--checkpoint", checkpoint, *arguments])


def test_same_file_name_twice_is_a_user_error(setup, tmp_path):
    checkpoint, in_class, _ = setup
    twin = write_photo(tmp_path / "elsewhere" / "a.jpg", seed=5)
    with pytest.raises(UserError, match="same file name"):
        occlusion.main([in_class, twin, "--checkpoint", checkpoint])


def test_missing_photo_exits_2_with_one_line(setup, tmp_path):
    checkpoint, _, _ = setup
    process = run_script("occlusion.py", tmp_path / "nowhere.jpg", "--checkpoint", checkpoint)
    assert_one_line_error(process, "nowhere.jpg: no such file")


def test_square_larger_than_the_input_exits_2_with_one_line(setup):
    checkpoint, in_class, _ = setup
    process = run_script("occlusion.py", in_class, "--checkpoint", checkpoint, "--size", "300")
    assert_one_line_error(process, "300-pixel square is larger than the 64-pixel input")
