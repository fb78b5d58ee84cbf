"""zfnet.top9: the running top-k search, and the choice of layers and maps."""

import os

import pytest
import torch

from tests.helpers import PREPROCESS, tiny_network, write_bomb, write_tied_photos
from zfnet.data import decoded_batches
from zfnet.errors import UserError
from zfnet.images import find_images, load_input
from zfnet.top9 import (
    chosen_layers,
    chosen_maps,
    pil_box,
    require_maps,
    require_usable,
    spread_evenly,
    strongest_activations,
    tensor_batches,
    usable_batches,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_tied_photos(tmp_path_factory.mktemp("photos"))


def brute_force_top(model, paths, layer, k):
    """Every activation of every image, one image per pass as in the running search (batch
    size changes float32 rounding): per map, each image's strongest (first) position,
    then the k strongest images, earlier image first among equals."""
    with torch.no_grad():
        maps = torch.stack([model.activations(load_input(path, PREPROCESS)[None], [layer])[layer][0] for path in paths])
    found = []
    for channel in range(maps.shape[1]):
        candidates = []
        for image in range(len(paths)):
            flat = maps[image, channel].flatten()
            position = next(i for i, value in enumerate(flat.tolist()) if value == flat.max().item())
            candidates.append((-flat.max().item(), image, divmod(position, maps.shape[-1])))
        found.append(sorted(candidates)[:k])
    return found


def test_running_top_k_equals_brute_force(photos):
    model = tiny_network(seed=1)
    paths = find_images(photos)
    assert len(paths) == 7
    best = strongest_activations(model, decoded_batches(paths, PREPROCESS, 1, "test"), [1, 2, 5], "cpu", k=3)
    for layer in (1, 2, 5):
        values, images, ys, xs = best[layer]
        expected = brute_force_top(model, paths, layer, 3)
        for channel, entries in enumerate(expected):
            assert [
                (-value, image, (y, x))
                for value, image, y, x in zip(
                    values[channel].tolist(), images[channel].tolist(), ys[channel].tolist(), xs[channel].tolist()
                )
            ] == entries


def test_batches_in_memory_find_what_decoded_batches_find(photos):
    model = tiny_network(seed=1)
    paths = find_images(photos)
    inputs = torch.stack([load_input(path, PREPROCESS) for path in paths])
    starts = [start for start, _ in tensor_batches(inputs, 3, "test")]
    assert starts == [0, 3, 6]
    from_files = strongest_activations(model, decoded_batches(paths, PREPROCESS, 3, "test"), [2], "cpu")
    from_memory = strongest_activations(model, tensor_batches(inputs, 3, "test"), [2], "cpu")
    for ours, theirs in zip(from_memory[2], from_files[2]):
        assert torch.equal(ours, theirs)


def test_layers_default_to_every_convolutional_layer_and_are_checked():
    model = tiny_network(conv_channels=(6, 16, 0, 0, 16))
    assert chosen_layers(model, None, "net.pth") == [1, 2, 5]
    assert chosen_layers(model, [5, 1], "net.pth") == [5, 1]
    with pytest.raises(UserError, match=r"net.pth: this network has no layer 3"):
        chosen_layers(model, [1, 3], "net.pth")
    with pytest.raises(UserError, match="layer 6 is fully connected"):
        chosen_layers(model, [6], "net.pth")


def test_maps_named_are_checked_else_the_most_active_are_chosen():
    model = tiny_network(conv_channels=(6, 16, 16, 16, 16))
    values = torch.tensor([[1.0, 1.0], [5.0, 4.0], [0.0, 0.0], [3.0, 3.0], [2.0, 9.0], [0.5, 0.5]])
    require_maps(model, [1, 2], [5, 0])
    require_maps(model, [1, 2], None)
    assert chosen_maps([5, 0], values, 2) == [5, 0]
    assert chosen_maps(None, values, 3) == [4, 1, 3]
    assert chosen_maps(None, values, 99) == [4, 1, 3, 0, 5, 2]
    with pytest.raises(UserError, match="layer 1 has no map 6"):
        require_maps(model, [2, 1], [0, 6])


def test_spread_evenly_reaches_both_ends():
    assert spread_evenly(10, 3) == [0, 4, 9]  # 4.5 rounds to even
    assert spread_evenly(4, 10) == [0, 1, 2, 3]
    assert spread_evenly(7, 1) == [0]


def test_boxes_are_written_in_pils_order():
    assert pil_box((10, 20, 30, 40)) == [20, 10, 40, 30]  # (top, left, bottom, right) -> [left, top, right, bottom]


def test_usable_batches_skip_what_cannot_be_used_and_number_the_rest(photos, tmp_path):
    model = tiny_network(seed=1)
    good = find_images(photos)
    bomb = write_bomb(tmp_path / "bomb.png")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(good[0], "rb").read()[:200])
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    paths = [bomb, *good[:3], str(truncated), *good[3:], str(tmp_path / "loop.jpg")]
    kept, skipped = [], []
    found = strongest_activations(model, usable_batches(paths, PREPROCESS, 3, "test", kept, skipped), [2], "cpu")
    assert kept == good
    assert [error.split(": ")[0] for error in skipped] == [bomb, str(truncated), str(tmp_path / "loop.jpg")]
    assert "too large to decode safely" in skipped[0] and "truncated or corrupt" in skipped[1]
    expected = strongest_activations(model, decoded_batches(good, PREPROCESS, 3, "test"), [2], "cpu")
    for ours, theirs in zip(found[2], expected[2]):  # image i is kept[i], as it is good[i] there
        assert torch.equal(ours, theirs)


def test_a_search_needs_one_usable_photo_and_notes_each_skipped(capsys):
    skipped = ["pics/a.jpg: not an image", "pics/b.png: truncated"]
    with pytest.raises(UserError, match=r"none of the 2 photos in pics can be used \(the first: pics/a.jpg: not an"):
        require_usable([], skipped, "pics")
    require_usable(["pics/c.jpg"], skipped, "pics")
    assert capsys.readouterr().err.splitlines() == [
        "note: skipped pics/a.jpg: not an image",
        "note: skipped pics/b.png: truncated",
    ]
    require_usable(["pics/c.jpg"], [], "pics")
    assert capsys.readouterr().err == ""


def test_a_count_of_maps_beyond_a_layer_is_refused():
    model = tiny_network(conv_channels=(6, 16, 16, 16, 16))
    require_maps(model, [1, 2], None, 6)
    require_maps(model, [2, 5], [15], 16)
    with pytest.raises(UserError, match="--maps-per-layer 7: layer 1 has only 6 maps"):
        require_maps(model, [2, 1], None, 7)
    with pytest.raises(UserError, match="--maps-per-layer 999: layer 2 has only 16 maps"):
        require_maps(model, [2], [0], 999)
    with pytest.raises(UserError, match=r"layer 2 has no map 16 \(it has 16 maps, 0 to 15\)"):
        require_maps(model, [2], [16], None)


def test_layers_and_maps_named_twice_count_once():
    model = tiny_network()
    assert chosen_layers(model, [2, 1, 2], "net.pth") == [2, 1]
    assert chosen_maps([3, 0, 3], torch.zeros(8, 9), 9) == [3, 0]
