import csv
import json
import os
from itertools import combinations

import pytest
import torch
from tests.helpers import ROOT, assert_one_line_error, run_script, tiny_network, write_checkpoint, write_photo
from PIL import Image

import correspondence
from zfnet.errors import UserError
from zfnet.images import load_input


def test_delta_counts_sign_disagreements_over_pairs():
    changes = torch.tensor([[0.5, -2.0, 0.0], [3.0, 1.0, 0.0], [-1.0, -0.1, 7.0]])
    # signs (+ - 0), (+ + 0), (- - +): pairs differ in 1, 2 and 3 places.
    assert correspondence.delta(changes) == 1 + 2 + 3


def test_delta_is_zero_for_identical_changes():
    change = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert correspondence.delta(change.expand(5, -1)) == 0
    # Only the signs count: scaling a change does not make it different.
    assert correspondence.delta(torch.stack([change, 3 * change, 0.1 * change])) == 0


def test_input_box_follows_the_stretch_to_the_input():
    assert correspondence.input_box((0, 0, 240, 120), (240, 120), 224) == (0, 0, 224, 224)
    # Rows are stretched 224/120, columns 224/240; rounded outwards.
    assert correspondence.input_box((60, 30, 120, 90), (240, 120), 224) == (56, 56, 112, 56)
    assert correspondence.input_box((1, 1, 2, 2), (240, 120), 224) == (1, 0, 3, 2)
    with pytest.raises(ValueError, match="outside the 240 x 120 photo"):
        correspondence.input_box((200, 0, 241, 10), (240, 120), 224)


def test_masked_paints_only_the_box_grey():
    x = torch.ones(3, 8, 8)
    painted = correspondence.masked(x, (2, 3, 4, 2))
    assert painted[:, 2:6, 3:5].eq(0).all() and painted.sum() == 3 * (64 - 8) and x.eq(1).all()


@pytest.fixture
def parts_file(tmp_path):
    """Three photos with a "top" and a "side" part, described in a parts file beside them."""
    photos = []
    for index in range(3):
        name = f"photos/p{index}.jpg"
        write_photo(tmp_path / name, seed=index, size=(80 + 10 * index, 60))
        photos.append({"photo": name, "parts": {"top": [10, 5, 40, 25], "side": [50, 20, 70, 50]}})
    path = tmp_path / "parts.json"
    path.write_text(json.dumps({"photos": photos}))
    return path


def test_part_deltas_match_the_definition(parts_file, tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    out = tmp_path / "out"
    correspondence.main([str(parts_file), "--checkpoint", checkpoint, "--draws", "3", "--out", str(out)])
    with open(out / "correspondence.csv") as file:
        rows = {(row["part"], row["masks"]): row for row in csv.DictReader(file)}
    assert sorted(rows) == [("side", "part"), ("side", "random"), ("top", "part"), ("top", "random")]
    assert rows["top", "random"]["draws"] == "3" and float(rows["top", "part"]["layer5_delta_std"]) == 0

    # Recompute Delta for the "top" part straight from its definition.
    model = tiny_network(64)
    preprocess = {"input_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3}
    entries = json.loads(parts_file.read_text())["photos"]
    changes = {5: [], 7: []}
    for entry in entries:
        path = os.path.join(tmp_path, entry["photo"])
        x = load_input(path, preprocess)
        top, left, height, width = correspondence.input_box(entry["parts"]["top"], Image.open(path).size, 64)
        grey = x.clone()
        grey[:, top:top + height, left:left + width] = 0
        with torch.inference_mode():
            both = model.activations(torch.stack([x, grey]), [5, 7])
        for layer in (5, 7):
            changes[layer].append(torch.sign(both[layer][0] - both[layer][1]).flatten())
    for layer in (5, 7):
        expected = sum(int((changes[layer][i] != changes[layer][j]).sum()) for i, j in combinations(range(3), 2))
        assert float(rows["top", "part"][f"layer{layer}_delta"]) == expected
        features = changes[layer][0].numel()
        assert float(rows["top", "part"][f"layer{layer}_share"]) == pytest.approx(expected / (3 * features), rel=1e-5)
    printed = capsys.readouterr().out
    assert "random (top size)" in printed and "3 pairs of 3 photos" in printed
    assert (out / "correspondence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_boxes_are_reproducible_with_the_seed(parts_file, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    tables = []
    for seed, folder in ((4, "a"), (4, "b"), (5, "c")):
        correspondence.main([str(parts_file), "--checkpoint", checkpoint, "--draws", "2", "--seed", str(seed),
                             "--out", str(tmp_path / folder)])
        tables.append((tmp_path / folder / "correspondence.csv").read_text())
    assert tables[0] == tables[1] != tables[2]


def rewrite(parts_file, change):
    content = json.loads(parts_file.read_text())
    change(content["photos"])
    parts_file.write_text(json.dumps(content))


@pytest.mark.parametrize("change, message", [
    (lambda photos: photos[1]["parts"].update(top=[30, 5, 30, 25]), "part top: empty box"),
    (lambda photos: photos[2]["parts"].pop("side"), "every photo needs the same parts"),
    (lambda photos: photos[0]["parts"].update(side=[50, 20, 70]), "a box is [left, top, right, bottom]"),
    (lambda photos: photos[0]["parts"].update(side=[50, 20, 70, 61]), "outside the 80 x 60 photo"),
    (lambda photos: photos.__delitem__(slice(1, None)), "at least two photos"),
    (lambda photos: photos[0].update(photo="photos/missing.jpg"), "missing.jpg: no such file"),
])
def test_bad_parts_files_are_user_errors(parts_file, tmp_path, change, message):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    rewrite(parts_file, change)
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        correspondence.main([str(parts_file), "--checkpoint", checkpoint, "--out", str(tmp_path / "out")])


def test_the_shipped_example_has_five_sunflowers_with_both_parts():
    path = os.path.join(ROOT, "samples", "correspondence.json")
    entries = correspondence.read_parts(path)
    assert len(entries) == 5
    for photo, parts in entries:
        assert "/sunflowers/" in photo and sorted(parts) == ["disc", "petals"]
        size = Image.open(photo).size
        boxes = {name: correspondence.input_box(box, size, 224) for name, box in parts.items()}
        # The petal patch sits left of the disc, not on it (rounding outwards may touch it).
        _, petals_left, _, petals_width = boxes["petals"]
        assert petals_left + petals_width <= boxes["disc"][1] + 1


def test_empty_box_exits_2_with_one_line(parts_file, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    rewrite(parts_file, lambda photos: photos[0]["parts"].update(top=[10, 25, 40, 25]))
    process = run_script("correspondence.py", parts_file, "--checkpoint", checkpoint)
    assert_one_line_error(process, "empty box")


def test_malformed_parts_file_exits_2_with_one_line(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_one_line_error(run_script("correspondence.py", broken), "not a parts file")
