import csv
import os
import subprocess
import sys

import pytest
import torch

import ablation
from model import ZFNet
from train import model_kwargs, parse_args
from zfnet.data import scan_classes
from zfnet.errors import UserError
from zfnet.study import link_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tiny_split(tmp_path):
    photos = scan_classes(os.path.join(ROOT, "samples", "flower_photos"))
    classes = sorted(photos)[:3]
    link_split(tmp_path / "data", {"train": {name: photos[name][:2] for name in classes},
                                   "val": {name: photos[name][2:3] for name in classes}})
    return str(tmp_path / "data")


def test_variants_scale_the_paper_sizes_to_the_base_width():
    assert ablation.variant_widths("full", "half") == ([48, 128, 192, 192, 128], [2048, 2048])
    assert ablation.variant_widths("no-layers3-4-6-7", "half") == ([48, 128, 0, 0, 128], [0, 0])
    assert ablation.variant_widths("wider-layers3-5", "half") == ([48, 128, 256, 512, 256], [2048, 2048])
    # At the paper's own widths the variants are exactly its table 3 sizes.
    assert ablation.variant_widths("wider-layers3-5", "full") == ([96, 256, 512, 1024, 512], [4096, 4096])
    assert ablation.variant_widths("wider-layers6-7", "full")[1] == [8192, 8192]
    assert ablation.variant_widths("narrower-layers6-7", "full")[1] == [2048, 2048]


@pytest.mark.parametrize("name", list(ablation.VARIANTS))
def test_every_variant_builds_and_classifies(name):
    conv_channels, fc_features = ablation.variant_widths(name, "half")
    model = ZFNet(num_classes=5, conv_channels=conv_channels, fc_features=fc_features).eval()
    assert model.conv_layers == [n for n in range(1, 6) if conv_channels[n - 1]]
    assert model.fc_layers == [n for n in (6, 7) if fc_features[n - 6]]
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 5)


def count(name, num_classes=5):
    conv_channels, fc_features = ablation.variant_widths(name, "half")
    config = parse_args(["--conv-channels", ",".join(map(str, conv_channels)),
                         "--fc-features", ",".join(map(str, fc_features))])
    return ablation.parameter_count(config, num_classes)


def test_parameter_counts_match_a_hand_count():
    conv1 = 3 * 7 * 7 * 48 + 48
    conv2 = 48 * 5 * 5 * 128 + 128
    pooled = 128 * 6 * 6  # layer 5's 128 maps, pooled to 6x6
    full = (conv1 + conv2 + (128 * 9 * 192 + 192) + (192 * 9 * 192 + 192) + (192 * 9 * 128 + 128)
            + (pooled * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 5 + 5))
    assert count("full") == full == 14_581_317
    bare = conv1 + conv2 + (128 * 9 * 128 + 128) + (pooled * 5 + 5)
    assert count("no-layers3-4-6-7") == bare == 331_461
    assert count("wider-layers6-7") == full - (pooled * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 5 + 5) + (
        pooled * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 5 + 5)


def read_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_study_writes_the_table_then_resumes_and_skips(tiny_split, tmp_path, capsys):
    out = str(tmp_path / "study")
    flags = ["--data", tiny_split, "--out", out, "--variants", "full,no-layers3-4-6-7",
             "--workers", "0", "--batch-size", "3"]
    ablation.main([*flags, "--epochs", "1"])
    rows = read_rows(os.path.join(out, "ablation.csv"))
    assert [row["variant"] for row in rows] == ["full", "no-layers3-4-6-7"]
    assert [int(row["parameters"]) for row in rows] == [count("full", 3), count("no-layers3-4-6-7", 3)]
    assert all(0 <= float(row["val_error"]) <= 1 for row in rows)
    with open(os.path.join(out, "ablation.md")) as file:
        markdown = file.read()
    assert "| full |" in markdown and "| no-layers3-4-6-7 |" in markdown
    assert os.path.getsize(os.path.join(out, "ablation.png")) > 0
    first_epoch = torch.load(os.path.join(out, "full", "seed0", "last.pth"), weights_only=True)["history"][0]

    # A run with fewer epochs than asked is what an interrupted one leaves: it continues.
    ablation.main([*flags, "--epochs", "2"])
    history = torch.load(os.path.join(out, "full", "seed0", "last.pth"), weights_only=True)["history"]
    assert [row["epoch"] for row in history] == [1, 2] and history[0] == first_epoch

    last = os.path.join(out, "no-layers3-4-6-7", "seed0", "last.pth")
    modified = os.path.getmtime(last)
    capsys.readouterr()
    ablation.main([*flags, "--epochs", "2"])
    assert capsys.readouterr().out.count("skipped") == 2
    assert os.path.getmtime(last) == modified

    with pytest.raises(UserError, match="lr"):
        ablation.main([*flags, "--epochs", "2", "--lr", "0.1"])


def test_bad_requests_are_user_errors(tiny_split, tmp_path):
    flags = ["--data", tiny_split, "--out", str(tmp_path / "study"), "--epochs", "1"]
    with pytest.raises(UserError, match="unknown variant"):
        ablation.main([*flags, "--variants", "full,no-layer9"])
    with pytest.raises(UserError, match="--seed is set by the study"):
        ablation.main([*flags, "--seed", "3"])
    assert not os.path.exists(tmp_path / "study")


def test_unknown_variant_exits_2_with_one_line(tiny_split, tmp_path):
    result = subprocess.run([sys.executable, "ablation.py", "--data", tiny_split, "--out", str(tmp_path / "o"),
                             "--variants", "deeper"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("ablation.py: error: unknown variant(s) deeper")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
