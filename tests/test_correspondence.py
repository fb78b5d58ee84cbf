"""correspondence.py, run as a user runs it: Delta from its definition, the seed of the
random boxes, and bad parts files."""

import csv
import json
import os
from itertools import combinations

import pytest
import torch
from PIL import Image

from tests.helpers import (
    assert_a_full_disk_keeps_the_outputs,
    assert_one_line_error,
    assert_picture,
    call_script,
    flags_without_defaults,
    folder_contents,
    record_figure_texts,
    run_script,
    tiny_network,
    write_bomb,
    write_checkpoint,
    write_photo,
    write_truncated_photo,
)
from zfnet.images import load_input
from zfnet.studies.correspondence import input_box


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


def test_part_deltas_match_the_definition(parts_file, tmp_path, monkeypatch):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    texts = record_figure_texts(monkeypatch)
    result = call_script("correspondence.py", parts_file, "--checkpoint", checkpoint, "--draws", "3")
    assert result.returncode == 0, result.stderr
    # Without --out, beside the checkpoint.
    out = tmp_path / "correspondence"
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
        left, top, right, bottom = input_box(entry["parts"]["top"], Image.open(path).size, 64)
        grey = x.clone()
        grey[:, top:bottom, left:right] = 0
        with torch.inference_mode():
            both = model.activations(torch.stack([x, grey]), [5, 7])
        for layer in (5, 7):
            changes[layer].append(torch.sign(both[layer][0] - both[layer][1]).flatten())
    for layer in (5, 7):
        expected = sum(int((changes[layer][i] != changes[layer][j]).sum()) for i, j in combinations(range(3), 2))
        assert float(rows["top", "part"][f"layer{layer}_delta"]) == expected
        features = changes[layer][0].numel()
        assert float(rows["top", "part"][f"layer{layer}_share"]) == pytest.approx(expected / (3 * features), rel=1e-5)
    printed = result.stdout
    assert "random (top size)" in printed and "3 pairs of 3 photos" in printed
    assert_picture(out / "correspondence.png")
    # The figure names the photos by file name, never by where they lie.
    assert "p0.jpg" in texts and not any(str(tmp_path) in text for text in texts)


def test_random_boxes_are_reproducible_with_the_seed(parts_file, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    tables = []
    for seed, folder in ((4, "a"), (4, "b"), (5, "c")):
        result = call_script(
            "correspondence.py",
            parts_file,
            "--checkpoint",
            checkpoint,
            "--draws",
            "2",
            "--seed",
            seed,
            "--out",
            tmp_path / folder,
        )
        assert result.returncode == 0, result.stderr
        tables.append((tmp_path / folder / "correspondence.csv").read_text())
    assert tables[0] == tables[1] != tables[2]


def rewrite(parts_file, change):
    content = json.loads(parts_file.read_text())
    change(content["photos"])
    parts_file.write_text(json.dumps(content))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda photos: photos[1]["parts"].update(top=[30, 5, 30, 25]), "part top: empty box"),
        (lambda photos: photos[2]["parts"].pop("side"), "every photo needs the same parts"),
        (lambda photos: photos[0]["parts"].update(side=[50, 20, 70]), "a box is [left, top, right, bottom]"),
        (lambda photos: photos[0]["parts"].update(side=[50, 20, 70, 61]), "outside the 80 x 60 photo"),
        (lambda photos: photos.__delitem__(slice(1, None)), "at least two photos"),
        (lambda photos: photos[0].update(photo="photos/missing.jpg"), "missing.jpg: no such file"),
    ],
)
def test_bad_parts_files_are_user_errors(parts_file, tmp_path, change, message):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    rewrite(parts_file, change)
    result = call_script("correspondence.py", parts_file, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert_one_line_error(result, message)


def test_empty_box_exits_2_with_one_line(parts_file, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    rewrite(parts_file, lambda photos: photos[0]["parts"].update(top=[10, 25, 40, 25]))
    process = run_script("correspondence.py", parts_file, "--checkpoint", checkpoint)
    assert_one_line_error(process, "empty box")


def test_malformed_parts_file_exits_2_with_one_line(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_one_line_error(run_script("correspondence.py", broken), "not a parts file")


def test_help_shows_every_default():
    result = call_script("correspondence.py", "--help")
    assert result.returncode == 0
    assert flags_without_defaults(result.stdout) == []


# Hardening: outputs never over inputs or the user's files, photos the decoder refuses,
# filesystem trouble, and parts files whose numbers make no sense.


def test_out_in_the_photos_own_folder_is_refused_and_leaves_them_alone(parts_file, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    # The photos' folder, and the parts file's (which holds the checkpoint too).
    for folder in (tmp_path / "photos", tmp_path):
        before = folder_contents(folder)
        process = call_script(
            "correspondence.py", parts_file, "--checkpoint", checkpoint, "--draws", "1", "--out", folder
        )
        assert_one_line_error(process, "already holds files that zfnet did not write")
        assert folder_contents(folder) == before


def test_an_output_that_would_replace_an_input_is_refused(parts_file, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    out = tmp_path / "out"
    arguments = ["--checkpoint", checkpoint, "--draws", "1", "--out", out]
    assert call_script("correspondence.py", parts_file, *arguments).returncode == 0
    # The parts file moved into zfnet's own output folder, under the name of the table.
    moved = out / "correspondence.csv"
    moved.write_text(parts_file.read_text().replace('"photos/', '"../photos/'))
    before = folder_contents(out)
    assert_one_line_error(call_script("correspondence.py", moved, *arguments), "would replace one of the inputs")
    assert folder_contents(out) == before


def test_a_folder_of_the_users_files_is_refused_and_untouched(parts_file, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "correspondence.png").write_bytes(b"my own figure")
    (folder / "thesis.txt").write_text("chapter 1")
    before = folder_contents(folder)
    process = call_script("correspondence.py", parts_file, "--checkpoint", checkpoint, "--out", folder)
    assert_one_line_error(process, "already holds files that zfnet did not write")
    assert folder_contents(folder) == before


@pytest.mark.parametrize(
    "write, message",
    [
        (write_bomb, "image too large to decode safely"),
        (write_truncated_photo, "truncated or corrupt image"),
        (lambda path: os.symlink("gone.jpg", path) or str(path), ""),
    ],
)
def test_a_bad_photo_stops_the_run_before_any_work(parts_file, tmp_path, write, message):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    bad = tmp_path / "photos" / "p1.jpg"
    bad.unlink()
    write(bad)
    process = run_script("correspondence.py", parts_file, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert_one_line_error(process, f"{bad}: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("writer", ["matplotlib.figure.Figure.savefig", "os.fsync"])
def test_a_full_disk_is_one_line_and_leaves_the_earlier_outputs(parts_file, tmp_path, monkeypatch, writer):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    out = tmp_path / "out"
    arguments = [parts_file, "--checkpoint", checkpoint, "--draws", "2", "--out", out]
    # The same seed gives the same table, so the one written before the figure failed is as it was.
    assert_a_full_disk_keeps_the_outputs(monkeypatch, writer, "correspondence.py", arguments, out)


def test_out_that_is_a_file_is_refused(parts_file, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    (tmp_path / "figures").write_text("a file")
    process = run_script("correspondence.py", parts_file, "--checkpoint", checkpoint, "--out", tmp_path / "figures")
    assert_one_line_error(process, "is a file, not a folder")
    assert (tmp_path / "figures").read_text() == "a file"


def set_box(index, part, box):
    return lambda photos: photos[index]["parts"].update({part: box})


@pytest.mark.parametrize(
    "change, message",
    [
        (
            set_box(0, "top", [True, 5, 40, 25]),
            "photo 1 (photos/p0.jpg), part top: a box is [left, top, right, bottom] "
            "in whole pixels, not [true, 5, 40, 25]",
        ),
        (set_box(1, "side", [50, 20, 70, False]), "photo 2 (photos/p1.jpg), part side: a box is"),
        (set_box(2, "top", ["10", 5, 40, 25]), "photo 3 (photos/p2.jpg), part top: a box is"),
        (set_box(0, "top", [10.5, 5, 40, 25]), "photo 1 (photos/p0.jpg), part top: a box is"),
        (set_box(0, "top", [10, None, 40, 25]), "photo 1 (photos/p0.jpg), part top: a box is"),
        (set_box(0, "top", {"left": 10}), "photo 1 (photos/p0.jpg), part top: a box is"),
        (
            set_box(1, "top", [-5, 5, 40, 25]),
            "photo 2 (photos/p1.jpg), part top: box [-5, 5, 40, 25] has a negative coordinate",
        ),
        (
            set_box(1, "top", [10, -1, 40, 25]),
            "photo 2 (photos/p1.jpg), part top: box [10, -1, 40, 25] has a negative coordinate",
        ),
        (set_box(2, "side", [70, 20, 50, 50]), "photo 3 (photos/p2.jpg), part side: reversed box [70, 20, 50, 50]"),
        (set_box(2, "side", [50, 50, 70, 20]), "photo 3 (photos/p2.jpg), part side: reversed box [50, 50, 70, 20]"),
        (
            set_box(0, "side", [50, 20, 81, 50]),
            "photo 1 (photos/p0.jpg), part side: box [50, 20, 81, 50] reaches outside the 80 x 60 photo",
        ),
        (
            set_box(2, "top", [10, 5, 40, 61]),
            "photo 3 (photos/p2.jpg), part top: box [10, 5, 40, 61] reaches outside the 100 x 60 photo",
        ),
        (lambda photos: photos[1].update(photo=5), "photo 2: an entry is"),
        (lambda photos: photos[1].pop("photo"), "photo 2: an entry is"),
        (lambda photos: photos.__setitem__(2, ["photos/p2.jpg"]), "photo 3: an entry is"),
        (lambda photos: photos[0].update(parts=[[10, 5, 40, 25]]), 'photo 1 (photos/p0.jpg): "parts" must name'),
        (lambda photos: photos[0].update(parts={}), 'photo 1 (photos/p0.jpg): "parts" must name'),
    ],
)
def test_parts_files_whose_numbers_make_no_sense_are_refused_naming_the_entry(parts_file, tmp_path, change, message):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    rewrite(parts_file, change)
    result = call_script("correspondence.py", parts_file, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert_one_line_error(result, f"{parts_file}: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content",
    ['{"photos": {"photo": "a.jpg"}}', "[1, 2]", '{"pictures": []}', "null", "[" * 100000 + "]" * 100000],
    ids=["dict", "list", "no photos", "null", "deep"],
)
def test_a_file_without_a_list_of_photos_is_not_a_parts_file(tmp_path, content):
    parts = tmp_path / "parts.json"
    parts.write_text(content)
    assert_one_line_error(call_script("correspondence.py", parts), f"{parts}: not a parts file")


@pytest.mark.parametrize("draws", ["0", "-3", "two"])
def test_a_count_of_draws_that_makes_no_sense_is_refused(parts_file, draws):
    assert_one_line_error(call_script("correspondence.py", parts_file, "--draws", draws), "--draws")
