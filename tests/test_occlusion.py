"""occlusion.py, run as a user runs it: the maps and figures it writes, its options, and
its errors."""

import csv
import os

import numpy as np
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
from zfnet.studies.occlusion import square_positions

QUICK = ["--size", "32", "--stride", "16"]


@pytest.fixture
def setup(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    in_class = write_photo(tmp_path / "photos" / "roses" / "a.jpg", seed=0)
    loose = write_photo(tmp_path / "b.png", seed=1, size=(50, 80))
    return checkpoint, in_class, loose


def test_script_writes_maps_and_figures(setup, tmp_path, monkeypatch):
    checkpoint, in_class, loose = setup
    out = tmp_path / "out"
    texts = record_figure_texts(monkeypatch)
    result = call_script(
        "occlusion.py",
        in_class,
        loose,
        "--checkpoint",
        checkpoint,
        "--size",
        "16",
        "--stride",
        "6",
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    positions = len(square_positions(64, 16, 6))
    for name in ("a", "b"):
        saved = np.load(out / f"{name}.npz")
        for key in ("feature", "probability", "prediction"):
            assert saved[key].shape == (positions, positions)
        assert list(saved["tops"]) == list(saved["lefts"]) == square_positions(64, 16, 6)
        assert list(saved["classes"]) == CLASSES and saved["layer"] == 5 and saved["size"] == 16
        assert ((saved["probability"] >= 0) & (saved["probability"] <= 1)).all()
        assert_picture(out / f"{name}.png", min_size=(1500, 300))
    # In a class folder the photo is judged against that class; elsewhere against the prediction.
    assert np.load(out / "a.npz")["target"] == CLASSES.index("roses")
    loose_saved = np.load(out / "b.npz")
    assert loose_saved["target"] == loose_saved["unoccluded_probability"].argmax()
    assert "P(roses)" in result.stdout
    # The figures name the photos by file name, never by where they lie.
    assert "a.jpg\nsquare where P(roses) is lowest" in texts and not any(str(tmp_path) in text for text in texts)


def test_class_option_picks_the_class_of_map_b(setup, tmp_path):
    checkpoint, in_class, _ = setup
    result = call_script(
        "occlusion.py",
        in_class,
        "--checkpoint",
        checkpoint,
        "--size",
        "32",
        "--stride",
        "16",
        "--class",
        "daisy",
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "out" / "a.npz")["target"] == CLASSES.index("daisy")


def test_outputs_go_beside_the_checkpoint_by_default(setup, tmp_path):
    checkpoint, in_class, _ = setup
    result = call_script("occlusion.py", in_class, "--checkpoint", checkpoint, "--size", "32", "--stride", "16")
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "occlusion").iterdir()) == sorted([MARKER, "a.npz", "a.png"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--class", "tulips"], "unknown class 'tulips'"),
        (["--size", "65"], "larger than the 64-pixel input"),
        (["--stride", "0"], "at least 1"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_options_are_user_errors(setup, arguments, message):
    checkpoint, in_class, _ = setup
    assert_one_line_error(call_script("occlusion.py", in_class, "--checkpoint", checkpoint, *arguments), message)


def test_same_file_name_twice_is_a_user_error(setup, tmp_path):
    checkpoint, in_class, _ = setup
    twin = write_photo(tmp_path / "elsewhere" / "a.jpg", seed=5)
    assert_one_line_error(call_script("occlusion.py", in_class, twin, "--checkpoint", checkpoint), "same file name")


def test_missing_photo_exits_2_with_one_line(setup, tmp_path):
    checkpoint, _, _ = setup
    process = run_script("occlusion.py", tmp_path / "nowhere.jpg", "--checkpoint", checkpoint)
    assert_one_line_error(process, "nowhere.jpg: no such file")


def test_square_larger_than_the_input_exits_2_with_one_line(setup):
    checkpoint, in_class, _ = setup
    process = run_script("occlusion.py", in_class, "--checkpoint", checkpoint, "--size", "300")
    assert_one_line_error(process, "300-pixel square is larger than the 64-pixel input")


def test_help_shows_every_default():
    result = call_script("occlusion.py", "--help")
    assert result.returncode == 0
    assert flags_without_defaults(result.stdout) == []


def test_out_in_the_photos_own_folder_is_refused_and_leaves_them_alone(setup, tmp_path):
    checkpoint, in_class, _ = setup
    # The example: a PNG photo whose figure would have been written over it.
    flower = write_photo(tmp_path / "garden" / "flower.png", seed=3)
    for photo in (flower, in_class):
        folder = os.path.dirname(photo)
        before = folder_contents(folder)
        process = call_script("occlusion.py", photo, "--checkpoint", checkpoint, *QUICK, "--out", folder)
        assert_one_line_error(process, "already holds files that zfnet did not write")
        assert folder_contents(folder) == before


def test_an_output_that_would_replace_an_input_is_refused(setup, tmp_path):
    checkpoint, in_class, _ = setup
    out = tmp_path / "out"
    assert call_script("occlusion.py", in_class, "--checkpoint", checkpoint, *QUICK, "--out", out).returncode == 0
    # A photo copied into zfnet's own output folder, under the name its figure would take.
    photo = write_photo(out / "b.png", seed=4)
    before = folder_contents(out)
    process = call_script("occlusion.py", photo, "--checkpoint", checkpoint, *QUICK, "--out", out)
    assert_one_line_error(process, "would replace one of the inputs")
    assert folder_contents(out) == before
    # Two photos whose outputs would take the same names.
    twin = write_photo(tmp_path / "twin" / "a.png", seed=6)
    assert_one_line_error(
        call_script("occlusion.py", in_class, twin, "--checkpoint", checkpoint, *QUICK, "--out", out),
        "would both write a.png and a.npz",
    )
    assert folder_contents(out) == before


@pytest.mark.parametrize(
    "users_files",
    [{"thesis.txt": b"chapter 1"}, {"holiday.png": b"\x89PNG\r\n\x1a\n..."}, {"a.npz": b"maps", "notes.txt": b"mine"}],
)
def test_a_folder_of_the_users_files_is_refused_and_untouched(setup, tmp_path, users_files):
    checkpoint, in_class, _ = setup
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, data in users_files.items():
        (folder / name).write_bytes(data)
    process = call_script("occlusion.py", in_class, "--checkpoint", checkpoint, *QUICK, "--out", folder)
    assert_one_line_error(process, "already holds files that zfnet did not write")
    assert folder_contents(folder) == users_files


def test_a_folder_of_occlusion_outputs_from_before_the_marker_is_taken_back(setup, tmp_path):
    checkpoint, in_class, _ = setup
    out = tmp_path / "out"
    assert call_script("occlusion.py", in_class, "--checkpoint", checkpoint, *QUICK, "--out", out).returncode == 0
    (out / MARKER).unlink()
    os.replace(out / "a.png", out / "old.png")
    os.replace(out / "a.npz", out / "old.npz")
    result = call_script("occlusion.py", in_class, "--checkpoint", checkpoint, *QUICK, "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == sorted([MARKER, "a.npz", "a.png", "old.npz", "old.png"])


def not_a_photo(path):
    path.write_text("notes, not a photo")
    return str(path)


@pytest.mark.parametrize(
    "write, name, message",
    [
        (write_bomb, "bomb.png", "image too large to decode safely"),
        (write_truncated_photo, "cut.jpg", "truncated or corrupt image"),
        (not_a_photo, "notes.jpg", "not an image"),
        # Links to nowhere: to themselves, and to a file that is gone.
        (lambda path: os.symlink(path.name, path) or str(path), "loop.jpg", ""),
        (lambda path: os.symlink("gone.jpg", path) or str(path), "dangling.jpg", ""),
    ],
)
def test_a_bad_photo_stops_the_run_before_any_work(setup, tmp_path, write, name, message):
    checkpoint, in_class, loose = setup
    bad = write(tmp_path / name)
    process = run_script(
        "occlusion.py", in_class, bad, loose, "--checkpoint", checkpoint, *QUICK, "--out", tmp_path / "out"
    )
    assert_one_line_error(process, f"{bad}: {message}")
    # Not even the good photo before it was worked on.
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("writer", ["numpy.savez", "matplotlib.figure.Figure.savefig"])
def test_a_full_disk_is_one_line_and_leaves_the_earlier_outputs(setup, tmp_path, monkeypatch, writer):
    checkpoint, in_class, _ = setup
    out = tmp_path / "out"
    arguments = [in_class, "--checkpoint", checkpoint, *QUICK, "--out", out]
    assert_a_full_disk_keeps_the_outputs(monkeypatch, writer, "occlusion.py", arguments, out)


def test_out_that_is_a_file_is_refused(setup, tmp_path):
    checkpoint, in_class, _ = setup
    (tmp_path / "figures").write_text("a file")
    process = run_script("occlusion.py", in_class, "--checkpoint", checkpoint, *QUICK, "--out", tmp_path / "figures")
    assert_one_line_error(process, "is a file, not a folder")
    assert (tmp_path / "figures").read_text() == "a file"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--size", "-5"], "--size: must be at least 1"),
        (["--stride", "2.5"], "--stride: expected a whole number"),
        (["--batch-size", "-1"], "--batch-size: must be at least 1"),
        (["--size", "10", "--stride", "11"], "would leave gaps"),
    ],
)
def test_sizes_strides_and_counts_that_make_no_sense_are_refused_before_any_work(setup, tmp_path, arguments, message):
    checkpoint, in_class, _ = setup
    process = call_script("occlusion.py", in_class, "--checkpoint", checkpoint, *arguments, "--out", tmp_path / "out")
    assert_one_line_error(process, message)
    assert not (tmp_path / "out").exists()


def test_several_sizes_write_a_figure_and_maps_each(setup, tmp_path):
    checkpoint, in_class, _ = setup
    result = call_script("occlusion.py", in_class, "--checkpoint", checkpoint, "--size", "16,32", "--stride", "16",
                         "--out", tmp_path / "out")  # fmt: skip
    assert result.returncode == 0, result.stderr
    for size in (16, 32):
        assert_picture(tmp_path / "out" / f"a-{size}px.png", (600, 150))
        with np.load(tmp_path / "out" / f"a-{size}px.npz") as maps:
            assert int(maps["size"]) == size
        assert f"{size}-pixel square" in result.stdout


def class_folder(folder, count):
    for index in range(count):
        write_photo(folder / CLASSES[index % 3] / f"{index}.jpg", seed=index)
    return folder


def test_the_summary_over_a_folder_writes_its_tables_and_figure(setup, tmp_path):
    checkpoint, _, _ = setup
    photos = class_folder(tmp_path / "val", 5)
    out = tmp_path / "out"
    flags = ("--summary", photos, "--checkpoint", checkpoint, "--size", "16,32", "--stride", "16", "--out", out)
    result = call_script("occlusion.py", *flags)
    assert result.returncode == 0, result.stderr
    with open(out / "occlusion_summary.csv") as file:
        table = list(csv.DictReader(file))
    with open(out / "occlusion_photos.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["size"] for row in table] == ["16", "32"] and {row["photos"] for row in table} == {"5"}
    assert len(rows) == 10 and {row["class"] for row in rows} == set(CLASSES)
    for row in rows:
        assert float(row["most_damaging"]) <= float(row["random"]) + 1e-9
        assert row["most_damaging_prediction"] in CLASSES
    fifty = [float(row["most_damaging"]) for row in rows if row["size"] == "32"]
    assert float(table[1]["most_damaging_mean"]) == pytest.approx(sum(fifty) / 5, abs=1e-4)
    assert_picture(out / "occlusion_summary.png", (600, 250))
    assert "32-pixel square, P(class) over 5 photos: unoccluded" in result.stdout
    assert "most hurt by a 32-pixel square: " in result.stdout


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--summary", "EMPTY", "--size", "16"], "no photos in"),
        (["--summary", "ONE", "--size", "16"], "a summary needs at least 2 photos (it has 1)"),
        (["--summary", "ONE"], "a 112-pixel square is larger than the 64-pixel input"),
        (["--summary", "ONE", "PHOTO"], "give photo files or --summary FOLDER, not both"),
        ([], "give photo files or --summary FOLDER"),
        (["PHOTO", "--size", "16,0"], "--size: must be at least 1"),
    ],
)
def test_summary_input_that_makes_no_sense_is_one_line(setup, tmp_path, arguments, message):
    checkpoint, in_class, _ = setup
    os.makedirs(tmp_path / "empty")
    replace = {"EMPTY": tmp_path / "empty", "ONE": class_folder(tmp_path / "one", 1), "PHOTO": in_class}
    arguments = [replace.get(argument, argument) for argument in arguments]
    process = call_script("occlusion.py", *arguments, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert_one_line_error(process, message)
    assert not (tmp_path / "out" / "occlusion_summary.csv").exists()
