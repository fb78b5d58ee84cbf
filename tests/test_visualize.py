"""visualize.py on a tiny network and a folder of generated photos."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import visualize
from model import ZFNet
from zfnet.checkpoint import model_payload, save_checkpoint
from zfnet.deconv import receptive_fields
from zfnet.errors import UserError
from zfnet.images import load_input

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPROCESS = {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
SMALL = {"num_classes": 2, "conv_channels": (6, 8, 8, 8, 8), "fc_features": (16, 16)}


def small_model(seed):
    torch.manual_seed(seed)
    return ZFNet(**SMALL).eval()


def save(model, path, epoch=1):
    save_checkpoint(model_payload(model, ["a", "b"], PREPROCESS, epoch), str(path))
    return str(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Seven photos in two class folders; the last is a copy of the first, for equal values."""
    folder = tmp_path_factory.mktemp("photos")
    generator = np.random.default_rng(0)
    for i in range(6):
        os.makedirs(folder / f"class{i % 2}", exist_ok=True)
        pixels = generator.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"class{i % 2}" / f"photo{i}.png")
    Image.open(folder / "class0" / "photo0.png").save(folder / "class1" / "photo9.png")
    return str(folder)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save(small_model(0), tmp_path_factory.mktemp("run") / "best.pth")


def brute_force_top(model, paths, layer, k):
    """Every activation of every image, one image per pass as in the running search (batch
    size changes float32 rounding): per map, each image's strongest (first) position,
    then the k strongest images, earlier image first among equals."""
    with torch.no_grad():
        maps = torch.stack([model.activations(load_input(path, PREPROCESS)[None], [layer])[layer][0]
                            for path in paths])
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
    model = small_model(1)
    paths = visualize.list_images(photos)
    assert len(paths) == 7
    best = visualize.strongest_activations(
        model, visualize.decoded_batches(paths, PREPROCESS, 1, "test"), [1, 2, 5], "cpu", k=3)
    for layer in (1, 2, 5):
        values, images, ys, xs = best[layer]
        expected = brute_force_top(model, paths, layer, 3)
        for channel, entries in enumerate(expected):
            assert [(-value, image, (y, x)) for value, image, y, x in zip(
                values[channel].tolist(), images[channel].tolist(), ys[channel].tolist(), xs[channel].tolist())] \
                == entries


def test_top9_figures_and_index(photos, checkpoint, tmp_path):
    visualize.main(["top9", "--checkpoint", checkpoint, "--images", photos, "--out", str(tmp_path),
                    "--layers", "1,5", "--top-maps", "2", "--batch-size", "3", "--device", "cpu"])
    model = small_model(0)
    fields = receptive_fields(model)
    index = json.loads((tmp_path / "top9.json").read_text())
    assert index["receptive_fields"]["5"] == {"size": 139, "stride": 16, "offset": -59}
    patches = index["patches"]
    assert len(patches) == 2 * 2 * 7  # layers x maps x (9 strongest of only 7 images)
    for layer in (1, 5):
        with Image.open(tmp_path / f"top9_layer{layer}.png") as figure:
            assert figure.width > 300 and figure.height > 150
        entries = [entry for entry in patches if entry["layer"] == layer]
        assert len({entry["map"] for entry in entries}) == 2
        for entry in entries:
            with torch.no_grad():
                maps = model.activations(load_input(entry["image"], PREPROCESS)[None], [layer])[layer]
            assert maps[0, entry["map"], entry["y"], entry["x"]].item() == pytest.approx(entry["value"], abs=1e-5)
            assert maps[0, entry["map"]].max().item() == pytest.approx(entry["value"], abs=1e-5)
            assert entry["box"] == list(fields[layer].box(entry["y"], entry["x"]))
        for m in {entry["map"] for entry in entries}:
            ranked = [entry for entry in entries if entry["map"] == m]
            assert [entry["rank"] for entry in ranked] == list(range(1, 8))
            assert [entry["value"] for entry in ranked] == sorted((entry["value"] for entry in ranked), reverse=True)


def test_top9_draws_the_maps_asked_for(photos, checkpoint, tmp_path):
    visualize.main(["top9", "--checkpoint", checkpoint, "--images", photos, "--out", str(tmp_path),
                    "--layers", "2", "--maps", "0,7"])
    index = json.loads((tmp_path / "top9.json").read_text())
    assert sorted({entry["map"] for entry in index["patches"]}) == [0, 7]


def test_filters_one_checkpoint_or_two_side_by_side(checkpoint, tmp_path):
    alexnet = ZFNet(**SMALL, arch="alexnet").eval()
    other = save(alexnet, tmp_path / "alexnet.pth")
    visualize.main(["filters", "--checkpoint", checkpoint, "--out", str(tmp_path / "one")])
    visualize.main(["filters", "--checkpoint", other, checkpoint, "--out", str(tmp_path / "two")])
    with Image.open(tmp_path / "one" / "filters.png") as one, Image.open(tmp_path / "two" / "filters.png") as two:
        assert two.width > 1.5 * one.width


def test_evolution_figures_and_change_table(photos, tmp_path):
    snapshots = tmp_path / "snapshots"
    first = small_model(2)
    save(first, snapshots / "epoch_001.pth", epoch=1)
    save(first, snapshots / "epoch_002.pth", epoch=2)  # unchanged: every change must be zero
    save(small_model(3), snapshots / "epoch_005.pth", epoch=5)
    visualize.main(["evolution", "--snapshots", str(snapshots), "--images", photos, "--out", str(tmp_path),
                    "--layers", "1,2", "--maps-per-layer", "3"])
    for name in ("evolution_layer1.png", "evolution_layer2.png", "evolution_change.png"):
        assert (tmp_path / name).stat().st_size > 1000
    with open(tmp_path / "evolution_change.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 3 * 3  # layers x maps x snapshots
    by_epoch = {epoch: [row for row in rows if row["epoch"] == epoch] for epoch in ("1", "2", "5")}
    assert all(row["change_from_previous"] == "" for row in by_epoch["1"])
    assert all(abs(float(row["change_from_previous"])) < 1e-5 for row in by_epoch["2"])
    assert any(float(row["change_from_previous"]) > 0.01 for row in by_epoch["5"])
    assert all(os.path.isfile(row["strongest_image"]) for row in rows)


@pytest.mark.parametrize("arguments, message", [
    (["top9", "--checkpoint", "missing.pth"], "checkpoint not found"),
    (["top9", "--layers", "3"], "no convolutional layer 3"),
    (["top9", "--layers", "9"], "no convolutional layer 9"),
    (["top9", "--layers", "1", "--maps", "6"], "layer 1 has no map 6"),
    (["top9", "--images", "EMPTY"], "no images in"),
    (["top9", "--images", "nowhere"], "image folder not found"),
    (["top9", "--top-maps", "0"], "at least 1"),
    (["filters", "--checkpoint", "CHECKPOINT", "CHECKPOINT", "CHECKPOINT"], "one checkpoint or two"),
    (["evolution", "--snapshots", "ONE"], "needs at least two"),
])
def test_bad_input_is_a_user_error(arguments, message, photos, tmp_path):
    model = ZFNet(**{**SMALL, "conv_channels": (6, 8, 0, 0, 8)}).eval()
    path = save(model, tmp_path / "removed.pth")
    save(model, tmp_path / "one" / "epoch_001.pth")
    os.makedirs(tmp_path / "empty" / "class0")
    replace = {"EMPTY": str(tmp_path / "empty"), "CHECKPOINT": path, "ONE": str(tmp_path / "one")}
    arguments = [replace.get(argument, argument) for argument in arguments]
    defaults = ["--out", str(tmp_path / "out")]
    if arguments[0] == "top9":
        defaults += ["--images", photos] if "--images" not in arguments else []
        defaults += ["--checkpoint", path] if "--checkpoint" not in arguments else []
    with pytest.raises(UserError, match=message):
        visualize.main(arguments + defaults)


@pytest.mark.parametrize("arguments", [["top9", "--checkpoint", "missing.pth"], ["evolution", "--snapshots", "."]])
def test_errors_exit_2_with_one_line(arguments, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "visualize.py"), *arguments, "--out", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("visualize.py: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not result.stdout
