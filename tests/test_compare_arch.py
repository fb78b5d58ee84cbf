import csv
import math
import subprocess
import sys

import pytest
import torch

import compare_arch
from model import ZFNet
from tests.helpers import ROOT
from train import PREPROCESS
from zfnet.checkpoint import model_payload, save_checkpoint
from zfnet.errors import UserError


def checkpoint(path, arch, classes=("blue", "green", "red"), change_layer1=None):
    torch.manual_seed(0)
    model = ZFNet(num_classes=len(classes), arch=arch, fc_features=(64, 64))
    if change_layer1:
        with torch.no_grad():
            change_layer1(model.layer1.conv)
    save_checkpoint(model_payload(model, list(classes), PREPROCESS, 1), path)
    return str(path)


def test_frequency_bands_of_known_filters():
    y, x = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
    constant = torch.ones(1, 3, 7, 7)
    checkerboard = ((-1) ** (y + x)).expand(1, 3, 7, 7)
    middle = torch.cos(2 * math.pi * 3 / 16 * x).expand(1, 3, 7, 7)
    assert compare_arch.band_shares(constant)["low"] > 0.75  # a 7-pixel box still leaks past 1/8 cycles/px
    assert compare_arch.band_shares(checkerboard)["high"] > 0.99
    shares = compare_arch.band_shares(middle)
    assert shares["middle"] > 0.7 and sum(shares.values()) == pytest.approx(1)


def test_grid_contrast_finds_a_pattern_that_repeats_at_the_stride():
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((y - 16) ** 2 + (x - 16) ** 2) / 50).expand(1, 3, 32, 32)
    dots = blob * ((y % 4 == 0) & (x % 4 == 0))  # the blob sampled every 4 pixels: a stride-4 grid
    smooth = compare_arch.power_spectra(blob, 64)[0]
    gridded = compare_arch.power_spectra(dots, 64)[0]
    # The blob's own spectrum (power sigma about 1.4 bins) still reaches into the 2-4 bin ring,
    # so a perfect grid scores about 8, not infinity; a smooth patch stays below 1.
    assert compare_arch.grid_contrast(gridded, 4, 2) > 5
    assert compare_arch.grid_contrast(smooth, 4, 2) < 1
    assert compare_arch.grid_contrast(gridded, 4, 2) > 10 * compare_arch.grid_contrast(gridded, 3, 2)


def test_verdicts_need_a_clear_difference():
    assert compare_arch.verdict(5, 1, "more") == "in line with the paper's claim"
    assert compare_arch.verdict(0.10, 0.20, "more") == "unlike the paper's claim"
    assert compare_arch.verdict(0.143, 0.150, "fewer").startswith("too close to call")
    assert compare_arch.band_areas()["middle"] == pytest.approx(math.pi * (1 / 16 - 1 / 64), abs=0.01)


def kill_two_filters(conv):
    conv.weight[0] = 0  # faded and, with a zero bias, never active
    conv.bias[1] = -1e4  # normal weights, but its output never rises above 0


def test_report_measures_both_networks_and_states_the_claims(colour_split, tmp_path):
    alexnet = checkpoint(tmp_path / "alexnet.pth", "alexnet", change_layer1=kill_two_filters)
    zfnet = checkpoint(tmp_path / "zfnet.pth", "zfnet")
    out = tmp_path / "compare"
    compare_arch.main([alexnet, zfnet, "--data", str(colour_split), "--out", str(out), "--images", "6",
                       "--workers", "0", "--device", "cpu"])

    with open(out / "compare.csv", newline="") as file:
        rows = {row["measure"]: list(row.values())[1:] for row in csv.DictReader(file)}
    assert rows["layer 1"] == ["48 filters 11x11, stride 4", "48 filters 7x7, stride 2"]
    assert rows["dead: weights under 0.1 x median norm"][0] == "1"
    assert rows["dead: never active on val"][0] == "2" and rows["dead layer-1 filters"][0] == "2"
    bands = [key for key in rows if key.startswith("layer-1 energy")]
    assert len(bands) == 3
    for column in (0, 1):
        assert sum(float(rows[key][column]) for key in bands) == pytest.approx(1, abs=1e-3)
        assert 0 <= float(rows["validation accuracy"][column]) <= 1
        assert float(rows["layer-2 projections: stride-grid contrast"][column]) > 0
    markdown = (out / "compare.md").read_text()
    assert "## What these two networks show" in markdown
    assert "- Dead filters: the 11x11/4 network (alexnet) has 2 of 48, the 7x7/2 network (zfnet) 0 of 48: in line with the paper's claim" in markdown
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_a_checkpoint_for_other_classes_is_refused(colour_split, tmp_path):
    other = checkpoint(tmp_path / "cats.pth", "zfnet", classes=("cats", "dogs"))
    zfnet = checkpoint(tmp_path / "zfnet.pth", "zfnet")
    with pytest.raises(UserError, match=r"cats.pth was trained on the classes \['cats', 'dogs'\]"):
        compare_arch.main([zfnet, other, "--data", str(colour_split), "--out", str(tmp_path / "out"), "--workers", "0"])


def test_a_missing_checkpoint_exits_2_with_one_line(colour_split, tmp_path):
    zfnet = checkpoint(tmp_path / "zfnet.pth", "zfnet")
    result = subprocess.run([sys.executable, "compare_arch.py", zfnet, str(tmp_path / "nowhere.pth"),
                             "--data", str(colour_split), "--out", str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("compare_arch.py: error: checkpoint not found")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
