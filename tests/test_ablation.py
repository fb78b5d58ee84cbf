import csv
import os
import subprocess
import sys

import pytest
import torch

import ablation

from model import ZFNet
from tests.helpers import ROOT
from zfnet.errors import UserError
from zfnet import training


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
    config = training.parse_args(["--conv-channels", ",".join(map(str, conv_channels)),
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
    wide_top = (pooled * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 5 + 5)
    assert count("wider-layers6-7") == full - (pooled * 2048 + 2048) - (2048 * 2048 + 2048) - (2048 * 5 + 5) + wide_top


def history(run):
    return torch.load(os.path.join(run, "last.pth"), weights_only=True)["history"]


def test_study_writes_its_table_and_continues_after_an_interruption(colour_split, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "study")
    flags = ["--data", str(colour_split), "--out", out, "--variants", "no-layers6-7,no-layers3-4-6-7",
             "--epochs", "2", "--workers", "0", "--batch-size", "12", "--device", "cpu"]

    def killed_after_saving(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # the study dies right after its first epoch's checkpoints
        patch.setattr(training, "write_reports", killed_after_saving)
        with pytest.raises(KeyboardInterrupt):
            ablation.main(flags)
    first = os.path.join(out, "no-layers6-7", "seed0")
    interrupted = history(first)
    assert len(interrupted) == 1 and not os.path.exists(os.path.join(out, "no-layers3-4-6-7"))

    ablation.main(flags)
    assert history(first)[0] == interrupted[0] and len(history(first)) == 2
    with open(os.path.join(out, "ablation.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["variant"] for row in rows] == ["no-layers6-7", "no-layers3-4-6-7"]
    assert [int(row["parameters"]) for row in rows] == [count("no-layers6-7", 3), count("no-layers3-4-6-7", 3)]
    assert [float(row["val_error"]) for row in rows] == [round(1 - history(os.path.join(out, row["variant"], "seed0"))[-1]["val_acc"], 4)
                                                         for row in rows]
    with open(os.path.join(out, "ablation.md")) as file:
        markdown = file.read()
    assert "| no-layers6-7 | layers 6 and 7 removed | 48-128-192-192-128 / 0-0 |" in markdown
    assert "| no-layers3-4-6-7 |" in markdown
    with open(os.path.join(out, "ablation.png"), "rb") as file:
        assert file.read(4) == b"\x89PNG"

    finished = [os.path.getmtime(os.path.join(out, name, "seed0", "last.pth")) for name in ("no-layers6-7", "no-layers3-4-6-7")]
    capsys.readouterr()
    ablation.main(flags)
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
    assert [os.path.getmtime(os.path.join(out, name, "seed0", "last.pth")) for name in ("no-layers6-7", "no-layers3-4-6-7")] == finished
    trained_lr = training.RECIPES["fast"]["lr"]
    with pytest.raises(UserError, match=f"was trained with lr {trained_lr}, this study asks for 0.1"):
        ablation.main([*flags, "--lr", "0.1"])


def test_bad_requests_are_user_errors(colour_split, tmp_path):
    flags = ["--data", str(colour_split), "--out", str(tmp_path / "study"), "--epochs", "1"]
    with pytest.raises(UserError, match="unknown variant"):
        ablation.main([*flags, "--variants", "full,no-layer9"])
    with pytest.raises(UserError, match="--seed is set by the study"):
        ablation.main([*flags, "--seed", "3"])
    assert not os.path.exists(tmp_path / "study")


def test_unknown_variant_exits_2_with_one_line(colour_split, tmp_path):
    result = subprocess.run([sys.executable, "ablation.py", "--data", str(colour_split), "--out", str(tmp_path / "o"),
                             "--variants", "deeper"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("ablation.py: error: unknown variant(s) deeper")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
