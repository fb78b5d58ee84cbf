"""compare_arch.py on two small networks and a split of colour photos."""

import csv
import errno
import os

import matplotlib.figure
import pytest
import torch

from model import ZFNet
from tests.helpers import (
    ON_CPU,
    assert_one_line_error,
    assert_picture,
    call_script,
    flags_without_defaults,
    hide_progress_bars,
    record_figure_texts,
    run_script,
    save_network,
    write_bomb,
    write_photo,
)
from zfnet.outputs import OutputFolder
from zfnet.spectra import noise_smoothness


def checkpoint(path, arch, classes=("blue", "green", "red"), change_layer1=None):
    torch.manual_seed(0)
    model = ZFNet(num_classes=len(classes), arch=arch, fc_features=(64, 64))
    if change_layer1:
        with torch.no_grad():
            change_layer1(model.layer1.conv)
    return save_network(path, model, classes)


def kill_two_filters(conv):
    conv.weight[0] = 0  # faded and, with a zero bias, never active
    conv.bias[1] = -1e4  # normal weights, but its output never rises above 0


def test_report_measures_both_networks_and_states_the_claims(colour_split, tmp_path, monkeypatch):
    alexnet = checkpoint(tmp_path / "alexnet" / "best.pth", "alexnet", change_layer1=kill_two_filters)
    zfnet = checkpoint(tmp_path / "zfnet" / "best.pth", "zfnet")
    os.symlink("gone.jpg", colour_split / "val" / "red" / "dangling.jpg")  # a broken link is no photo: left out
    monkeypatch.chdir(tmp_path)
    texts = record_figure_texts(monkeypatch)
    result = call_script(
        "compare_arch.py", "--checkpoint", alexnet, zfnet, "--data", colour_split, "--max-images", "6", *ON_CPU
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "alexnet" / "compare_arch"  # beside the first checkpoint

    with open(out / "compare.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert list(table[0]) == [
        "measure",
        f"alexnet ({os.path.join('alexnet', 'best.pth')})",
        f"zfnet ({os.path.join('zfnet', 'best.pth')})",
    ]  # relative to where it ran
    rows = {row["measure"]: list(row.values())[1:] for row in table}
    assert rows["layer 1"] == ["48 filters 11x11, stride 4", "48 filters 7x7, stride 2"]
    assert rows["dead: weights under 0.1 x median norm"][0] == "1"
    assert rows["dead: never active on val"][0] == "2" and rows["dead layer-1 filters"][0] == "2"
    bands = [key for key in rows if key.startswith("layer-1 energy")]
    assert len(bands) == 3
    for column in (0, 1):
        assert sum(float(rows[key][column]) for key in bands) == pytest.approx(1, abs=1e-3)
        assert 0 <= float(rows["validation accuracy"][column]) <= 1
        assert float(rows["layer-2 projections: stride-grid contrast"][column]) > 0
        assert 0.1 < float(rows["layer-1 smoothness: energy below 1/4 cycle/px, means removed"][column]) < 0.3
    assert [float(value) for value in rows["the same for white-noise filters of this size"]] == pytest.approx(
        [noise_smoothness(11), noise_smoothness(7)], abs=1e-4
    )
    markdown = (out / "compare.md").read_text()
    assert markdown.startswith(f"# First layers compared on {os.path.join('data', 'val')} (12 photos)")
    assert "## What these two networks show" in markdown
    assert (
        "- Dead filters: the 11x11/4 network (alexnet) has 2 of 48, the 7x7/2 network (zfnet) 0 of 48: "
        "in line with the paper's claim"
    ) in markdown
    assert_picture(out / "compare.png", min_size=(1000, 800))
    # The figure names each run by its folder (the run's name), never by a path.
    assert "alexnet (alexnet, 11x11 stride 4)\nlayer-1 filters: 2 of 48 dead (framed red)" in texts, texts
    assert "zfnet (zfnet, 7x7 stride 2)\nlayer-2 projections of the 16 strongest maps" in texts, texts
    assert not any(str(tmp_path) in text or "best.pth" in text for text in texts), texts
    for label in (
        "spatial frequency (cycles per pixel)",
        "share of layer-1 filter energy",
        "horizontal frequency (cycles per pixel)",
        "power relative to the mean (log scale)",
        "middle band (0.125-0.25)",  # the legends explain the shading and the dotted lines
        "high band (over 0.25)",
        "k / first-layer stride (where aliasing shows)",
    ):
        assert label in texts, (label, texts)
    assert any(text.startswith("What to look for:") for text in texts), texts


def test_a_checkpoint_for_other_classes_is_refused(colour_split, tmp_path):
    other = checkpoint(tmp_path / "cats.pth", "zfnet", classes=("cats", "dogs"))
    zfnet = checkpoint(tmp_path / "zfnet.pth", "zfnet")
    result = compare((zfnet, other), colour_split, tmp_path / "out")
    assert_one_line_error(result, "cats.pth was trained on the classes ['cats', 'dogs']")


def test_a_network_without_layer_2_is_refused(colour_split, tmp_path):
    torch.manual_seed(0)
    removed = save_network(
        tmp_path / "removed.pth", ZFNet(num_classes=3, conv_channels=(48, 0, 0, 0, 64)), ("blue", "green", "red")
    )
    zfnet = checkpoint(tmp_path / "zfnet.pth", "zfnet")
    result = compare((zfnet, removed), colour_split, tmp_path / "out")
    assert_one_line_error(result, "removed.pth: this network has no layer 2")


def test_a_missing_checkpoint_exits_2_with_one_line(colour_split, tmp_path):
    zfnet = checkpoint(tmp_path / "zfnet.pth", "zfnet")
    result = run_script(
        "compare_arch.py",
        "--checkpoint",
        zfnet,
        tmp_path / "nowhere.pth",
        "--data",
        colour_split,
        "--out",
        tmp_path / "out",
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("compare_arch.py: error: checkpoint not found")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--checkpoint", "one.pth"], "expected 2 arguments"),
        (["--max-images", "0"], "at least 1"),
        (["--images", "4"], "unrecognized arguments: --images"),
    ],
)
def test_bad_flags_exit_2_with_one_line(arguments, message):
    assert_one_line_error(call_script("compare_arch.py", *arguments), message)


def test_help_shows_every_default():
    result = call_script("compare_arch.py", "--help")
    assert result.returncode == 0
    assert flags_without_defaults(result.stdout) == []
    shown = " ".join(result.stdout.split())
    assert "AlexNet's and ZFNet's (default: runs/alexnet/best.pth runs/zfnet/best.pth)" in shown


# Hardening: outputs never over inputs or the user's files, photos the decoder refuses,
# filesystem trouble, and numbers checked while parsing.


def folder_contents(folder):
    """Every file under `folder` with its bytes, to show that a refused run left it as it was."""
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.fixture
def pair(tmp_path):
    return checkpoint(tmp_path / "alexnet.pth", "alexnet"), checkpoint(tmp_path / "zfnet.pth", "zfnet")


def compare(pair, data, out, *arguments):
    return call_script(
        "compare_arch.py", "--checkpoint", *pair, "--data", data, "--out", out, "--max-images", "3", *arguments, *ON_CPU
    )


def truncated_photo(path):
    write_photo(path, seed=5)
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize(
    "make, name, message",
    [
        (write_bomb, "bomb.png", "image too large to decode safely"),
        (truncated_photo, "cut.jpg", "truncated or corrupt image"),
    ],
)
def test_a_photo_the_decoder_refuses_is_a_one_line_error(
    make, name, message, pair, colour_split, tmp_path, monkeypatch
):
    hide_progress_bars(monkeypatch)  # their text would stand beside the one line in captured stderr
    make(str(colour_split / "val" / "blue" / name))
    assert_one_line_error(compare(pair, colour_split, tmp_path / "out"), f"{name}: {message}")


@pytest.mark.parametrize("where", [os.path.join("val", "blue"), "val", ".", "report"])
def test_out_within_the_split_is_refused_and_every_photo_kept(where, pair, colour_split):
    before = folder_contents(colour_split)
    out = os.path.normpath(colour_split / where)
    assert_one_line_error(
        compare(pair, colour_split, out), f"--out {out} is within --data {colour_split}, whose files are read as inputs"
    )
    assert folder_contents(colour_split) == before


def test_a_folder_of_the_users_files_or_a_file_is_refused_and_left_alone(pair, colour_split, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("three years of work")
    (mine / "compare.md").write_text("my notes")
    assert_one_line_error(compare(pair, colour_split, mine), "already holds files that zfnet did not write")
    assert folder_contents(mine) == {"thesis.txt": b"three years of work", "compare.md": b"my notes"}
    assert_one_line_error(compare(pair, colour_split, mine / "thesis.txt"), "is a file, not a folder")
    assert (mine / "thesis.txt").read_text() == "three years of work"


def test_an_output_that_is_one_of_the_inputs_is_refused_before_the_work(pair, colour_split, tmp_path):
    out = tmp_path / "out"
    OutputFolder.claim(str(out))  # an earlier run's folder
    disguised = checkpoint(out / "compare.png", "zfnet")  # a checkpoint under an output's name
    before = (out / "compare.png").read_bytes()
    assert_one_line_error(
        compare((pair[0], disguised), colour_split, out), f"writing {disguised} would replace one of the inputs"
    )
    assert (out / "compare.png").read_bytes() == before
    assert sorted(os.listdir(out)) == [".zfnet-outputs", "compare.png"]


def test_a_full_disk_is_one_line_and_keeps_the_earlier_figure(pair, colour_split, tmp_path, monkeypatch):
    hide_progress_bars(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "compare.png").write_bytes(b"\x89PNG an earlier run's figure")  # from before folders were marked

    def disk_full(figure, file, **kwargs):
        file.write(b"\x89PNG half a figure")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    assert_one_line_error(compare(pair, colour_split, out), "compare.png: No space left on device")
    assert (out / "compare.png").read_bytes() == b"\x89PNG an earlier run's figure"
    assert sorted(os.listdir(out)) == [".zfnet-outputs", "compare.csv", "compare.md", "compare.png"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--workers", "-1"], "must not be negative, got -1"),
        (["--workers", "two"], "expected a whole number, got 'two'"),
        (["--batch-size", "0"], "at least 1"),
        (["--max-images", "-5"], "at least 1"),
    ],
)
def test_counts_that_make_no_sense_are_refused_while_parsing(arguments, message):
    assert_one_line_error(call_script("compare_arch.py", *arguments), message)
