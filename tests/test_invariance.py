"""invariance.py, run as a user runs it: the figure, table and findings it writes, its
options, and its errors."""

import csv
import os
import re
import shutil

import pytest

from tests.helpers import (
    CLASSES,
    assert_a_full_disk_keeps_the_outputs,
    assert_one_line_error,
    assert_picture,
    call_script,
    flags_without_defaults,
    folder_contents,
    record_figure_texts,
    run_script,
    write_bomb,
    write_checkpoint,
    write_photo,
    write_truncated_photo,
)
from zfnet.outputs import MARKER
from zfnet.studies.invariance import steps


@pytest.fixture
def setup(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    val = tmp_path / "val"
    for seed, name in enumerate(CLASSES):
        for index in range(2):
            write_photo(val / name / f"{name}{index}.jpg", seed=10 * seed + index)
    return checkpoint, val


RANGES = ["--translate=-8:8:4", "--scale", "0.8:1.2:0.2", "--rotate", "0:360:90"]


def test_script_writes_figure_csv_and_summary(setup, tmp_path, monkeypatch):
    checkpoint, val = setup
    texts = record_figure_texts(monkeypatch)
    result = call_script("invariance.py", "--checkpoint", checkpoint, "--images", val, *RANGES)
    assert result.returncode == 0, result.stderr
    # Without --out, beside the checkpoint.
    out = tmp_path / "invariance"
    with open(out / "invariance.csv") as file:
        rows = list(csv.DictReader(file))
    # The default photos: the first of each class, judged against their folders' classes.
    assert sorted({row["photo"] for row in rows}) == [f"{name}0.jpg" for name in CLASSES]
    assert all(row["true_class"] == row["photo"][:-5] for row in rows)
    assert len(rows) == len(CLASSES) * (5 + 3 + 5)
    assert list(rows[0]) == [
        "photo",
        "true_class",
        "transformation",
        "amount",
        "layer1_distance",
        "layer7_distance",
        "true_class_probability",
        "predicted_class",
    ]
    identity = [row for row in rows if row["transformation"] == "translation" and float(row["amount"]) == 0]
    assert all(float(row["layer1_distance"]) < 1e-3 for row in identity)
    assert all(0 <= float(row["true_class_probability"]) <= 1 and row["predicted_class"] in CLASSES for row in rows)
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("Small transformations") and summary in result.stdout
    assert len(summary.splitlines()) == 2 + len(CLASSES) + 1
    assert_picture(out / "invariance.png")
    # The figure names the photos by file name, never by where they lie.
    assert "daisy0.jpg (daisy)" in texts and not any(str(tmp_path) in text for text in texts)


def test_photos_given_use_class_option(setup, tmp_path):
    checkpoint, val = setup
    loose = write_photo(tmp_path / "loose.jpg", seed=99)
    out = tmp_path / "out"
    result = call_script("invariance.py", loose, "--checkpoint", checkpoint, "--class", "roses", "--out", out, *RANGES)
    assert result.returncode == 0, result.stderr
    with open(out / "invariance.csv") as file:
        assert {row["true_class"] for row in csv.DictReader(file)} == {"roses"}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--class", "tulips"], "unknown class 'tulips'"),
        (["--images", "nowhere"], "folder not found: nowhere"),
        (["--batch-size", "0"], "--batch-size"),
        (["--rotate", "0:360:360"], "--rotate needs at least one step that changes the photo"),
    ],
)
def test_bad_input_is_a_user_error(setup, arguments, message):
    checkpoint, val = setup
    assert_one_line_error(
        call_script("invariance.py", "--checkpoint", checkpoint, "--images", val, *arguments), message
    )


def test_images_without_a_class_is_a_user_error(setup):
    checkpoint, val = setup
    shutil.rmtree(val / "roses")
    process = call_script("invariance.py", "--checkpoint", checkpoint, "--images", val)
    assert_one_line_error(process, f"no photos in {val / 'roses'}")


def test_a_network_without_layer_7_is_a_user_error(setup, tmp_path):
    _, val = setup
    checkpoint = write_checkpoint(tmp_path / "no7.pth", input_size=64, fc_features=(32, 0))
    assert_one_line_error(call_script("invariance.py", "--checkpoint", checkpoint, "--images", val), "has no layer 7")


def test_bad_range_exits_2_with_one_line(setup):
    checkpoint, val = setup
    process = run_script("invariance.py", "--checkpoint", checkpoint, "--images", val, "--rotate", "0:360")
    assert_one_line_error(process, "expected START:STOP:STEP")


def test_missing_photo_exits_2_with_one_line(setup, tmp_path):
    checkpoint, _ = setup
    process = run_script("invariance.py", tmp_path / "gone.jpg", "--checkpoint", checkpoint)
    assert_one_line_error(process, "gone.jpg: no such file")


def test_help_states_the_defaults_a_run_uses(setup, tmp_path):
    checkpoint, _ = setup
    result = call_script("invariance.py", "--help")
    assert result.returncode == 0
    assert flags_without_defaults(result.stdout) == []
    help_text = " ".join(result.stdout.split())
    stated = {
        flag: re.search(rf"--{flag} START:STOP:STEP [^(]*\(default: ([-\d.:]+)", help_text).group(1)
        for flag in ("translate", "scale", "rotate")
    }
    assert stated == {"translate": "-60:60:10", "scale": "0.6:1.4:0.1", "rotate": "0:360:10"}
    loose = write_photo(tmp_path / "loose.jpg", seed=7)
    result = call_script("invariance.py", loose, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "invariance.csv") as file:
        rows = list(csv.DictReader(file))
    for flag, kind in (("translate", "translation"), ("scale", "scale"), ("rotate", "rotation")):
        assert [float(row["amount"]) for row in rows if row["transformation"] == kind] == steps(stated[flag])


# Hardening: outputs never over inputs or the user's files, photos the decoder refuses,
# filesystem trouble, and ranges checked before any work.


def test_out_in_the_photos_own_folder_is_refused_and_leaves_them_alone(setup, tmp_path):
    checkpoint, val = setup
    loose = write_photo(tmp_path / "desk" / "flower.png", seed=3)
    for photos, folder in (([loose], tmp_path / "desk"), ([], val / "roses"), ([], val)):
        before = folder_contents(folder)
        process = call_script(
            "invariance.py", *photos, "--checkpoint", checkpoint, "--images", val, *RANGES, "--out", folder
        )
        assert_one_line_error(process, "already holds files that zfnet did not write")
        assert folder_contents(folder) == before


def test_an_output_that_would_replace_an_input_is_refused(setup, tmp_path):
    checkpoint, val = setup
    out = tmp_path / "out"
    loose = write_photo(tmp_path / "loose.jpg", seed=4)
    assert call_script("invariance.py", loose, "--checkpoint", checkpoint, *RANGES, "--out", out).returncode == 0
    # A photo copied into zfnet's own output folder, under the name of the figure.
    photo = write_photo(out / "invariance.png", seed=5)
    before = folder_contents(out)
    process = call_script("invariance.py", photo, "--checkpoint", checkpoint, *RANGES, "--out", out)
    assert_one_line_error(process, "would replace one of the inputs")
    assert folder_contents(out) == before


@pytest.mark.parametrize(
    "users_files", [{"thesis.txt": b"chapter 1"}, {"invariance.csv": b"my own table", "notes.txt": b"mine"}]
)
def test_a_folder_of_the_users_files_is_refused_and_untouched(setup, tmp_path, users_files):
    checkpoint, val = setup
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, data in users_files.items():
        (folder / name).write_bytes(data)
    process = call_script("invariance.py", "--checkpoint", checkpoint, "--images", val, *RANGES, "--out", folder)
    assert_one_line_error(process, "already holds files that zfnet did not write")
    assert folder_contents(folder) == users_files


def test_a_folder_of_invariance_outputs_from_before_the_marker_is_taken_back(setup, tmp_path):
    checkpoint, val = setup
    out = tmp_path / "out"
    assert (
        call_script("invariance.py", "--checkpoint", checkpoint, "--images", val, *RANGES, "--out", out).returncode == 0
    )
    (out / MARKER).unlink()
    result = call_script("invariance.py", "--checkpoint", checkpoint, "--images", val, *RANGES, "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == sorted([MARKER, "invariance.png", "invariance.csv", "summary.txt"])


@pytest.mark.parametrize(
    "write, name, message",
    [
        (write_bomb, "bomb.png", "image too large to decode safely"),
        (write_truncated_photo, "cut.jpg", "truncated or corrupt image"),
        (lambda path: os.symlink("gone.jpg", path) or str(path), "dangling.jpg", ""),
    ],
)
def test_a_bad_photo_stops_the_run_before_any_work(setup, tmp_path, write, name, message):
    checkpoint, val = setup
    good = write_photo(tmp_path / "good.jpg", seed=6)
    bad = write(tmp_path / name)
    process = run_script("invariance.py", good, bad, "--checkpoint", checkpoint, *RANGES, "--out", tmp_path / "out")
    assert_one_line_error(process, f"{bad}: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "write, message",
    [(write_bomb, "image too large to decode safely"), (write_truncated_photo, "truncated or corrupt image")],
)
def test_a_bad_default_photo_stops_the_run_before_any_work(setup, tmp_path, write, message):
    checkpoint, val = setup
    # Sorted first in its class folder: the photo the run would take for the class.
    bad = write(val / "roses" / "a_first.png")
    process = call_script(
        "invariance.py", "--checkpoint", checkpoint, "--images", val, *RANGES, "--out", tmp_path / "out"
    )
    assert_one_line_error(process, f"{bad}: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "target",
    ["gone.jpg", "a_first.jpg"],
    ids=["dangling", "loop"],
)
def test_a_broken_link_in_a_class_folder_is_passed_over(setup, tmp_path, target):
    checkpoint, val = setup
    os.symlink(target, val / "roses" / "a_first.jpg")
    result = call_script(
        "invariance.py", "--checkpoint", checkpoint, "--images", val, *RANGES, "--out", tmp_path / "out"
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "invariance.csv") as file:
        assert "roses0.jpg" in {row["photo"] for row in csv.DictReader(file)}


@pytest.mark.parametrize("writer", ["matplotlib.figure.Figure.savefig", "os.fsync"])
def test_a_full_disk_is_one_line_and_leaves_the_earlier_outputs(setup, tmp_path, monkeypatch, writer):
    checkpoint, val = setup
    out = tmp_path / "out"
    arguments = ["--checkpoint", checkpoint, "--images", val, *RANGES, "--out", out]
    assert_a_full_disk_keeps_the_outputs(monkeypatch, writer, "invariance.py", arguments, out)


def test_out_that_is_a_file_is_refused(setup, tmp_path):
    checkpoint, val = setup
    (tmp_path / "figures").write_text("a file")
    process = run_script(
        "invariance.py", "--checkpoint", checkpoint, "--images", val, *RANGES, "--out", tmp_path / "figures"
    )
    assert_one_line_error(process, "is a file, not a folder")
    assert (tmp_path / "figures").read_text() == "a file"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--scale", "0:1.4:0.2"], "scale factors must be above 0, this range starts at 0"),
        (["--scale=-0.5:1.5:0.5"], "scale factors must be above 0"),
        (["--scale", "1.4:0.6:0.1"], "STOP is below START"),
        (["--translate=10:-10:5"], "STOP is below START"),
        (["--rotate", "90:0:10"], "STOP is below START"),
        (["--rotate", "0:360:0"], "STEP must be above 0"),
        (["--translate=-8:8:-4"], "STEP must be above 0"),
        (["--rotate", "0:inf:10"], "must be finite numbers"),
        (["--scale", "nan:1:0.1"], "must be finite numbers"),
        (["--rotate", "0:360:0.01"], "more than 1000 steps"),
        (["--translate", ""], "expected START:STOP:STEP"),
        (["--translate", "0:0:1"], "--translate needs at least one step that changes the photo"),
        (["--scale", "1:1:0.1"], "--scale needs at least one step that changes the photo"),
        # The tests' network sees 64 x 64 pixels: a shift of 64 leaves it nothing of the photo.
        (
            ["--translate=-64:64:32"],
            "--translate reaches 64 pixels: the photo would leave this network's 64-pixel input",
        ),
    ],
)
def test_ranges_that_make_no_sense_are_refused_before_any_work(setup, tmp_path, arguments, message):
    checkpoint, val = setup
    process = call_script(
        "invariance.py", "--checkpoint", checkpoint, "--images", val, *arguments, "--out", tmp_path / "out"
    )
    assert_one_line_error(process, message)
    assert not (tmp_path / "out").exists()


def test_a_scale_range_reaching_zero_exits_2_with_one_line(setup):
    checkpoint, val = setup
    process = run_script("invariance.py", "--checkpoint", checkpoint, "--images", val, "--scale", "0:1.4:0.1")
    assert_one_line_error(process, "scale factors must be above 0")
