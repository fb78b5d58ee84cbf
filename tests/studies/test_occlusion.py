"""zfnet/studies/occlusion.py: the windowed maps against the plain loop they replace, and where the
square goes, and where the outputs go."""

import fnmatch
import os

import numpy as np
import pytest
import torch

from tests.helpers import CLASSES, PREPROCESS, record_figure_texts, tiny_network
from zfnet.errors import UserError
from zfnet.outputs import OutputFolder
from zfnet.studies.occlusion import (
    SUMMARY_OUTPUTS,
    damage,
    occlusion_maps,
    output_paths,
    outputs,
    photo_result,
    plot,
    square_positions,
    strongest_activation,
    summarise,
)


def plain_loop(model, x, size, stride, target, layer, channel):
    """The definition: a copy of the photo per position with the square painted on it, each
    run through the whole network (in batches, which does not change any copy's result)."""
    offsets = square_positions(x.shape[1], size, stride)
    copies = []
    for top in offsets:
        for left in offsets:
            occluded = x.clone()
            occluded[:, top : top + size, left : left + size] = 0
            copies.append(occluded)
    feature, probabilities = [], []
    with torch.inference_mode():
        for batch in torch.stack(copies).split(64):
            feature.append(model.activations(batch, [layer])[layer][:, channel].sum((1, 2)))
            probabilities.append(model(batch).softmax(1))
    shape = (len(offsets), len(offsets))
    probabilities = torch.cat(probabilities)
    return (
        torch.cat(feature).view(shape).numpy(),
        probabilities[:, target].view(shape).numpy(),
        probabilities.argmax(1).view(shape).numpy(),
    )


@pytest.mark.parametrize(
    "network, input_size, size, stride, batch_size",
    [
        ({}, 224, 50, 16, 64),  # ZFNet; squares cut off at the edge
        ({"arch": "alexnet"}, 224, 37, 23, 5),  # an 11x11 stride-4 first layer
        ({"conv_channels": (8, 16, 0, 0, 16), "fc_features": (32, 0)}, 224, 60, 41, 7),  # layers 3, 4, 7 removed
        ({}, 64, 3, 3, 16),  # a tiny square
        ({}, 64, 64, 1, 1),  # the square covers everything
    ],
)
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


def test_own_names_take_a_png_only_beside_its_maps(tmp_path):
    for name in ("a.png", "a.npz", "b[1].png", "b[1].npz", "holiday.png"):
        (tmp_path / name).write_bytes(b"x")
    patterns = outputs(str(tmp_path))
    assert all(
        any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
        for name in ("a.png", "a.npz", "b[1].png", "b[1].npz")
    )
    assert not any(fnmatch.fnmatch("holiday.png", pattern) for pattern in patterns)
    # A folder yet to be made, or a file named as the folder, has no names of ours.
    assert outputs(str(tmp_path / "new")) == outputs(str(tmp_path / "a.png")) == ("*.npz", *SUMMARY_OUTPUTS)


def test_output_paths_are_the_photos_names_in_the_claimed_folder(tmp_path):
    out = OutputFolder.claim(str(tmp_path / "out"), inputs=[str(tmp_path / "out" / "c.npz")])
    names = {"x/a.jpg": "a.jpg", "y/b.png": "b.png"}
    assert output_paths(out, names) == {
        "x/a.jpg": (os.path.join(out.folder, "a.png"), os.path.join(out.folder, "a.npz")),
        "y/b.png": (os.path.join(out.folder, "b.png"), os.path.join(out.folder, "b.npz")),
    }
    with pytest.raises(UserError, match="x/a.jpg and y/a.png would both write a.png and a.npz"):
        output_paths(out, {"x/a.jpg": "a.jpg", "y/a.png": "a.png"})
    with pytest.raises(UserError, match="would replace one of the inputs"):
        output_paths(out, {"z/c.jpg": "c.jpg"})


def test_the_figure_labels_every_map_and_says_what_to_look_for(tmp_path, monkeypatch):
    model = tiny_network(64)
    x = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))
    result, strongest = photo_result(model, x, "a.jpg", CLASSES, "roses", 16, 8, batch_size=64)
    texts = record_figure_texts(monkeypatch)
    plot(str(tmp_path / "a.png"), "a.jpg", model, x, PREPROCESS, result, strongest)
    channel = result["channel"]
    assert "a.jpg\nsquare where P(roses) is lowest" in texts
    # The colour bars say what their colours measure; the pictures, what their marks are.
    for label in (f"activation of map {channel}, summed over it", "P(roses)", "most probable class"):
        assert label in texts, (label, texts)
    assert "grey: the 16-pixel square there" in texts and "black frame: its receptive field; grey: 0" in texts
    assert texts.count("square centre x (pixels)") == 3 and texts.count("square centre y (pixels)") == 3, texts
    assert any(text.startswith("What to look for: P(roses) in (b)") for text in texts), texts


@pytest.mark.parametrize("size, stride", [(20, 8), (40, 12)])
def test_the_most_damaging_square_is_the_lowest_over_the_plain_loop(size, stride):
    model = tiny_network(64).double()
    x = torch.randn(3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    channel, _, _ = strongest_activation(model, x, 5)
    _, probability, prediction = plain_loop(model, x, size, stride, 2, 5, channel)
    found = damage(model, x, 2, size, stride, 16, torch.Generator().manual_seed(0))
    offsets = square_positions(64, size, stride)
    lowest = np.unravel_index(probability.argmin(), probability.shape)
    assert found["most_damaging"] == pytest.approx(probability.min(), abs=1e-12)
    assert (found["most_damaging_top"], found["most_damaging_left"]) == (offsets[lowest[0]], offsets[lowest[1]])
    assert found["most_damaging_prediction"] == prediction[lowest]
    with torch.inference_mode():
        unoccluded = model(x[None]).softmax(1)[0]
    assert found["unoccluded"] == pytest.approx(unoccluded[2].item(), abs=1e-12)
    assert found["unoccluded_prediction"] == unoccluded.argmax().item()
    # The random square is one of the slide's positions, drawn from the generator given.
    again = damage(model, x, 2, size, stride, 16, torch.Generator().manual_seed(0))
    assert again["random"] == found["random"] and np.isclose(probability, found["random"], rtol=0, atol=1e-12).any()
    assert found["random"] >= found["most_damaging"]


def test_the_summary_gives_mean_spread_and_lost_classes_per_size():
    rows = [
        {"size": 50, "target": 0, "unoccluded": 0.9, "random": 0.8, "most_damaging": 0.2, "unoccluded_prediction": 0,
         "random_prediction": 0, "most_damaging_prediction": 1},
        {"size": 50, "target": 1, "unoccluded": 0.7, "random": 0.6, "most_damaging": 0.4, "unoccluded_prediction": 1,
         "random_prediction": 1, "most_damaging_prediction": 1},
        {"size": 25, "target": 1, "unoccluded": 0.7, "random": 0.7, "most_damaging": 0.6, "unoccluded_prediction": 1,
         "random_prediction": 1, "most_damaging_prediction": 1},
    ]  # fmt: skip
    table = summarise(rows)
    assert [entry["size"] for entry in table] == [25, 50]
    fifty = table[1]
    assert fifty["photos"] == 2
    assert fifty["most_damaging_mean"] == pytest.approx(0.3) and fifty["most_damaging_sd"] == pytest.approx(
        0.1414, abs=1e-4
    )
    assert fifty["unoccluded_mean"] == pytest.approx(0.8) and fifty["random_mean"] == pytest.approx(0.7)
    assert (fifty["most_damaging_wrong"], fifty["random_wrong"], fifty["unoccluded_wrong"]) == (0.5, 0.0, 0.0)
