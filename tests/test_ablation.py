import csv
import os

import pytest
import torch

from tests.helpers import (
    ON_CPU,
    assert_a_full_disk_keeps_the_outputs,
    assert_one_line_error,
    assert_picture,
    call_script,
    folder_contents,
    hide_progress_bars,
    run_script,
    variant_parameters,
    write_bomb,
)
from zfnet import recipes, training
from zfnet.studies import ablation


def history(run):
    return torch.load(os.path.join(run, "last.pth"), weights_only=True)["history"]


def test_study_writes_its_table_and_continues_after_an_interruption(colour_split, tmp_path, monkeypatch):
    out = str(tmp_path / "study")
    flags = [
        "--data",
        colour_split,
        "--out",
        out,
        "--variants",
        "no-layers6-7,no-layers3-4-6-7",
        "--epochs",
        "2",
        "--workers",
        "0",
        "--batch-size",
        "12",
        "--device",
        "cpu",
    ]

    def killed_after_saving(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # the study dies right after its first epoch's checkpoints
        patch.setattr(training, "write_reports", killed_after_saving)
        assert call_script("ablation.py", *flags).returncode == 130
    first = os.path.join(out, "no-layers6-7", "seed0")
    interrupted = history(first)
    assert len(interrupted) == 1 and not os.path.exists(os.path.join(out, "no-layers3-4-6-7"))

    result = call_script("ablation.py", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    stem = os.path.join(out, "ablation")
    assert result.stdout.splitlines()[-1] == f"table and chart in {stem}.md, {stem}.csv and {stem}.png"
    assert history(first)[0] == interrupted[0] and len(history(first)) == 2
    with open(os.path.join(out, "ablation.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["variant"] for row in rows] == ["no-layers6-7", "no-layers3-4-6-7"]
    assert [int(row["parameters"]) for row in rows] == [variant_parameters(row["variant"], 3) for row in rows]
    assert [float(row["val_error"]) for row in rows] == [
        round(1 - history(os.path.join(out, row["variant"], "seed0"))[-1]["val_acc"], 4) for row in rows
    ]
    with open(os.path.join(out, "ablation.md")) as file:
        markdown = file.read()
    assert "| no-layers6-7 | layers 6 and 7 removed | 48-128-192-192-128 / 0-0 |" in markdown
    assert "| no-layers3-4-6-7 |" in markdown
    assert_picture(os.path.join(out, "ablation.png"))

    finished = [
        os.path.getmtime(os.path.join(out, name, "seed0", "last.pth")) for name in ("no-layers6-7", "no-layers3-4-6-7")
    ]
    again = call_script("ablation.py", *flags)
    assert again.stdout.count("finished earlier, skipped") == 2
    assert [
        os.path.getmtime(os.path.join(out, name, "seed0", "last.pth")) for name in ("no-layers6-7", "no-layers3-4-6-7")
    ] == finished
    trained_lr = recipes.RECIPES["fast"]["lr"]
    assert_one_line_error(
        call_script("ablation.py", *flags, "--lr", "0.1"), f"was trained with lr {trained_lr}, this study asks for 0.1"
    )


def test_bad_requests_are_user_errors(colour_split, tmp_path):
    flags = ["--data", colour_split, "--out", tmp_path / "study", "--epochs", "1"]
    assert_one_line_error(call_script("ablation.py", *flags, "--variants", "full,no-layer9"), "unknown variant")
    assert_one_line_error(call_script("ablation.py", *flags, "--seed", "3"), "--seed is set by the study")
    assert_one_line_error(call_script("ablation.py", *flags, "--seeds", "0"), "--seeds")
    assert_one_line_error(call_script("ablation.py", *flags, "--variants", " , "), "(none given)")
    assert_one_line_error(call_script("ablation.py", *flags, "--epochs", "0"), "--epochs")
    assert_one_line_error(call_script("ablation.py", *flags, "--seeds", "-2"), "--seeds")
    assert not os.path.exists(tmp_path / "study")


def test_unknown_variant_exits_2_with_one_line(colour_split, tmp_path):
    result = run_script("ablation.py", "--data", colour_split, "--out", tmp_path / "o", "--variants", "deeper")
    assert result.returncode == 2
    assert result.stderr.startswith("ablation.py: error: unknown variant(s) deeper")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


HARMFUL_OUTS = {  # --out, and what the one line says
    "a class folder of the photos": (lambda tmp: tmp / "data" / "train" / "blue", "is within --data"),
    "the data folder's parent": (lambda tmp: tmp, "lies inside --out"),
    "a folder of the user's": (lambda tmp: tmp / "thesis", "already holds files that zfnet did not write"),
    "a file": (lambda tmp: tmp / "thesis" / "chapter1.txt", "is a file, not a folder"),
}


@pytest.mark.parametrize("case", HARMFUL_OUTS)
def test_an_out_that_would_harm_a_file_is_refused_and_everything_kept(colour_split, tmp_path, case):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.txt").write_text("it was a dark and stormy night")
    before = folder_contents(tmp_path)
    out, message = HARMFUL_OUTS[case]
    result = call_script("ablation.py", "--data", colour_split, "--out", out(tmp_path), "--epochs", "1")
    assert_one_line_error(result, message)
    assert folder_contents(tmp_path) == before


def pretend_training(monkeypatch):
    """Every run of the study returns at once with a made-up history of its epochs."""

    def history(train_argv, out, epochs):
        return [{"epoch": epoch, "train_acc": 0.5, "val_acc": 0.4, "seconds": 1.0} for epoch in range(1, epochs + 1)]

    monkeypatch.setattr(ablation, "train_run", history)


@pytest.mark.parametrize("writer", ["matplotlib.figure.Figure.savefig", "os.fsync"])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_tables(colour_split, tmp_path, monkeypatch, writer):
    pretend_training(monkeypatch)
    flags = ["--data", colour_split, "--out", tmp_path / "study", "--variants", "no-layers3-4-6-7", "--epochs", "2"]
    before = assert_a_full_disk_keeps_the_outputs(monkeypatch, writer, "ablation.py", flags, tmp_path / "study")
    assert sorted(before) == [".zfnet-outputs", "ablation.csv", "ablation.md", "ablation.png"]


def test_a_photo_too_large_to_decode_is_one_line(colour_split, tmp_path, monkeypatch):
    hide_progress_bars(monkeypatch)
    bomb = write_bomb(colour_split / "train" / "green" / "huge.png")
    result = call_script(
        "ablation.py",
        "--data",
        colour_split,
        "--out",
        tmp_path / "study",
        "--variants",
        "no-layers3-4-6-7",
        "--epochs",
        "1",
        *ON_CPU,
    )
    assert_one_line_error(result, f"{bomb}: image too large to decode safely")
