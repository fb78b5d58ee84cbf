import csv
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import transfer
from model import ZFNet
from tests.helpers import ROOT
from train import PREPROCESS
from zfnet.checkpoint import model_payload, save_checkpoint
from zfnet.data import scan_classes
from zfnet.errors import UserError

SMALL = {"fc_features": (64, 64)}  # small checkpoints; the layer structure is what matters here


@pytest.fixture
def pretrained(tmp_path):
    """An untrained two-class network's checkpoint: transfer cares about its layers, not their quality."""
    torch.manual_seed(0)
    path = tmp_path / "pretrained.pth"
    save_checkpoint(model_payload(ZFNet(num_classes=2, **SMALL), ["cats", "dogs"], PREPROCESS, 1), path)
    return str(path)


def test_frozen_layers_stay_bit_identical_and_see_without_dropout(pretrained, colour_split):
    layers, checkpoint = transfer.frozen_layers(pretrained, "cpu")
    assert not layers.training and not any(parameter.requires_grad for parameter in layers.parameters())
    photos = scan_classes(colour_split / "train")
    paths = [path for name in photos for path in photos[name][:4]]
    labels = torch.arange(3).repeat_interleave(4)

    features = transfer.softmax_inputs(layers, paths, checkpoint["preprocess"], "cpu")
    softmax = transfer.fit_softmax(features, labels, 3)

    assert features.shape == (12, 64) and softmax.weight.shape == (3, 64)
    assert transfer.accuracy(softmax(features), labels) == 1.0  # it learned the photos it saw
    state = layers.state_dict()
    assert set(state) == {name for name in checkpoint["model"] if not name.startswith("classifier.")}
    assert all(torch.equal(state[name], checkpoint["model"][name]) for name in state)
    again = transfer.softmax_inputs(layers, paths, checkpoint["preprocess"], "cpu")
    assert torch.equal(again, features)  # no dropout: the same photo gives the same features


def test_draws_are_seeded_nested_and_keep_test_photos_apart(colour_split):
    photos = scan_classes(colour_split / "train")
    args = SimpleNamespace(per_class=[2, 5], draws=2, test_per_class=3, seed=0, data="train")
    draws = transfer.draw_photos(photos, None, args)
    assert draws == transfer.draw_photos(photos, None, args)
    assert draws != transfer.draw_photos(photos, None, SimpleNamespace(**{**vars(args), "seed": 1}))
    (train_0, test_0), (train_1, _) = draws
    assert train_0 != train_1
    for name in photos:
        assert len(train_0[name]) == 5 and len(test_0[name]) == 3
        assert not set(train_0[name]) & set(test_0[name])
    with pytest.raises(UserError, match="class blue has 12 photos in train; --per-class 12 needs 13"):
        transfer.draw_photos(photos, None, SimpleNamespace(**{**vars(args), "per_class": [12]}))


def test_study_writes_its_table_and_skips_finished_scratch_runs(pretrained, colour_split, tmp_path, capsys):
    out = tmp_path / "transfer"
    flags = ["--checkpoint", pretrained, "--data", str(colour_split / "train"), "--test-data", str(colour_split / "val"),
             "--per-class", "4,2", "--draws", "2", "--epochs", "1", "--out", str(out),
             "--workers", "0", "--batch-size", "6", "--device", "cpu"]
    transfer.main(flags)

    with open(out / "transfer.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["per_class"], row["draws"]) for row in rows] == [("2", "2"), ("4", "2")]
    assert all(0 <= float(row[key]) <= 1 for row in rows for key in ("transfer_accuracy", "scratch_accuracy"))
    markdown = (out / "transfer.md").read_text()
    assert "(trained on cats, dogs)" in markdown and markdown.count("| 2 |") == 2
    assert (out / "transfer.png").read_bytes().startswith(b"\x89PNG")

    # The from-scratch runs train the checkpoint's own network on exactly the drawn photos.
    split = scan_classes(out / "splits" / "draw1-n4" / "train")
    assert [len(paths) for paths in split.values()] == [4, 4, 4]
    smaller = scan_classes(out / "splits" / "draw1-n2" / "train")
    assert all(set(map(os.path.basename, smaller[name])) < set(map(os.path.basename, split[name])) for name in split)
    scratch = torch.load(out / "scratch" / "draw1-n4" / "last.pth", weights_only=True)
    assert scratch["model_config"]["fc_features"] == [64, 64] and scratch["classes"] == ["blue", "green", "red"]

    capsys.readouterr()
    transfer.main(flags)
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4


def test_bad_inputs_exit_2_with_one_line(pretrained, colour_split, tmp_path):
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("hello")
    cases = {("--checkpoint", pretrained, "--data", str(colour_split / "train"), "--per-class", "5,20"):
             "class blue has 12 photos",
             ("--checkpoint", str(not_a_checkpoint), "--data", str(colour_split / "train")):
             "not a checkpoint",
             ("--checkpoint", pretrained, "--data", str(colour_split / "train"), "--arch", "alexnet"):
             "--arch is set by the study"}
    for flags, message in cases.items():
        result = subprocess.run([sys.executable, "transfer.py", *flags, "--out", str(tmp_path / "out")],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("transfer.py: error: ") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
