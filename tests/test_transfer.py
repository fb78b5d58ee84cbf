import csv
import errno
import os

import pytest
import torch

from tests.helpers import (
    ON_CPU,
    assert_one_line_error,
    assert_picture,
    call_script,
    folder_contents,
    hide_progress_bars,
    save_network,
    tiny_network,
    write_bomb,
)
from zfnet.data import scan_classes

PRETRAINED_CLASSES = ["cats", "dogs"]


@pytest.fixture
def pretrained(tmp_path):
    """An untrained two-class network's checkpoint: transfer cares about its layers, not their quality."""
    network = tiny_network(classes=PRETRAINED_CLASSES, fc_features=(64, 64))
    return save_network(tmp_path / "pretrained.pth", network, PRETRAINED_CLASSES)


def test_study_writes_its_table_beside_the_checkpoint_and_skips_finished_scratch_runs(
    pretrained, colour_split, tmp_path
):
    out = tmp_path / "transfer"  # beside the pretrained checkpoint, without --out
    flags = small_study(pretrained, colour_split, per_class="4,2", draws="2")
    result = call_script("transfer.py", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    stem = out / "transfer"
    assert result.stdout.splitlines()[-1] == f"table and plot in {stem}.md, {stem}.csv and {stem}.png"

    with open(out / "transfer.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["per_class"], row["draws"]) for row in rows] == [("2", "2"), ("4", "2")]
    assert all(0 <= float(row[key]) <= 1 for row in rows for key in ("transfer_accuracy", "scratch_accuracy"))
    markdown = (out / "transfer.md").read_text()
    assert "(trained on cats, dogs)" in markdown and markdown.count("| 2 |") == 2
    assert "Transfer to 3 classes, 12 test photos" in markdown  # every draw tests on all of DATA/val
    assert_picture(out / "transfer.png")

    # The from-scratch runs train the checkpoint's own network on exactly the drawn photos.
    split = scan_classes(out / "splits" / "draw1-n4" / "train")
    assert [len(paths) for paths in split.values()] == [4, 4, 4]
    smaller = scan_classes(out / "splits" / "draw1-n2" / "train")
    assert all(set(map(os.path.basename, smaller[name])) < set(map(os.path.basename, split[name])) for name in split)
    scratch = torch.load(out / "scratch" / "draw1-n4" / "last.pth", weights_only=True)
    assert scratch["model_config"]["fc_features"] == [64, 64] and scratch["classes"] == ["blue", "green", "red"]

    again = call_script("transfer.py", *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, skipped") == 4


def test_bad_inputs_exit_2_with_one_line(pretrained, colour_split, tmp_path):
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("hello")
    cases = {
        ("--checkpoint", pretrained, "--data", colour_split, "--per-class", "5,20"): "class blue has 12 photos",
        ("--checkpoint", not_a_checkpoint, "--data", colour_split): "not a checkpoint",
        ("--checkpoint", pretrained, "--data", colour_split, "--arch", "alexnet"): "--arch is set by the study",
        ("--checkpoint", pretrained, "--data", colour_split, "--per-class", "0,5"): "--per-class needs positive",
        ("--checkpoint", pretrained, "--data", colour_split / "train"): "has no train/ folder",
        ("--checkpoint", pretrained, "--data", colour_split, "--per-class", "-3"): "--per-class needs positive",
    }
    for flags, message in cases.items():
        result = call_script("transfer.py", *flags, "--out", tmp_path / "out")
        assert_one_line_error(result, message)
        assert result.stderr.startswith("transfer.py: error: ")
    # Values that are no numbers of their kind: argparse's usage, then the one error line.
    for flags, message in {
        ("--per-class", "a,b"): "comma-separated integers",
        ("--draws", "0"): "--draws",
        ("--epochs", "-1"): "--epochs",
    }.items():
        result = call_script(
            "transfer.py", "--checkpoint", pretrained, "--data", colour_split, *flags, "--out", tmp_path / "out"
        )
        assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def small_study(pretrained, data, out=None, per_class="2", draws="1"):
    """The flags of a study small enough to run in seconds: by default one draw, 2 photos per
    class, 1 epoch."""
    flags = ["--checkpoint", pretrained, "--data", data, "--per-class", per_class, "--draws", draws]
    flags += ["--epochs", "1", "--batch-size", "6", *ON_CPU]
    return flags + (["--out", out] if out is not None else [])


HARMFUL_OUTS = {  # --out, and what the one line says
    "a class folder of the photos": (lambda tmp: tmp / "data" / "train" / "blue", "is within --data"),
    "the data folder": (lambda tmp: tmp / "data", "lies inside --out"),
    "the checkpoint's folder": (lambda tmp: tmp, "--checkpoint"),
    "a folder of the user's": (lambda tmp: tmp / "thesis", "already holds files that zfnet did not write"),
    "a file": (lambda tmp: tmp / "thesis" / "chapter1.txt", "is a file, not a folder"),
}


@pytest.mark.parametrize("case", HARMFUL_OUTS)
def test_an_out_that_would_harm_a_file_is_refused_and_everything_kept(pretrained, colour_split, tmp_path, case):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.txt").write_text("it was a dark and stormy night")
    before = folder_contents(tmp_path)
    out, message = HARMFUL_OUTS[case]
    assert_one_line_error(call_script("transfer.py", *small_study(pretrained, colour_split, out(tmp_path))), message)
    assert folder_contents(tmp_path) == before


def test_a_photo_too_large_to_decode_is_one_line(pretrained, colour_split, tmp_path, monkeypatch):
    hide_progress_bars(monkeypatch)
    bomb = write_bomb(colour_split / "val" / "red" / "huge.png")
    result = call_script("transfer.py", *small_study(pretrained, colour_split, tmp_path / "out"))
    assert_one_line_error(result, f"{bomb}: image too large to decode safely")


def test_links_to_nowhere_in_the_class_folders_are_passed_over(pretrained, colour_split, tmp_path):
    os.symlink("loop.jpg", colour_split / "train" / "blue" / "loop.jpg")
    os.symlink("gone.jpg", colour_split / "val" / "green" / "dangling.jpg")
    result = call_script("transfer.py", *small_study(pretrained, colour_split, tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    for link in (colour_split / "train" / "blue" / "loop.jpg", colour_split / "val" / "green" / "dangling.jpg"):
        assert f"note: skipped {link}: a symbolic link that leads to no file" in result.stderr
    assert "Transfer to 3 classes, 12 test photos" in (tmp_path / "out" / "transfer.md").read_text()


@pytest.mark.parametrize("writer", ["matplotlib.figure.Figure.savefig", "os.fsync"])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_outputs(pretrained, colour_split, tmp_path, monkeypatch, writer):
    flags = small_study(pretrained, colour_split, tmp_path / "out")
    assert call_script("transfer.py", *flags).returncode == 0
    before = folder_contents(tmp_path / "out")
    hide_progress_bars(monkeypatch)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer, full)
    result = call_script("transfer.py", *flags)
    assert_one_line_error(result, "No space left on device; what was there before is unchanged")
    assert folder_contents(tmp_path / "out") == before
