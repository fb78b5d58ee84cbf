import re

import pytest
import torch

from tests.helpers import (
    assert_one_line_error,
    call_script,
    flags_without_defaults,
    save_network,
    tiny_network,
    write_photos,
)
from zfnet.evaluation import evaluate_folder, labelled_photos

CLASSES = [f"class{index}" for index in range(7)]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "val"
    for index, name in enumerate(CLASSES[:6]):  # a subset of the checkpoint's classes
        write_photos(folder / name, (35 * index, 200 - 30 * index, 90), 2, seed=index)
    return folder


def test_prints_top1_and_top5_error_of_each_view(photos, tmp_path):
    model = tiny_network(classes=CLASSES)
    checkpoint = save_network(tmp_path / "best.pth", model, classes=CLASSES)
    result = call_script("evaluate.py", "--images", photos, "--checkpoint", checkpoint, "--workers", "0")
    assert result.returncode == 0, result.stderr
    right, counted, _ = evaluate_folder(model, labelled_photos(photos, CLASSES), _preprocess(checkpoint), "cpu", 32, 0)
    assert f"on {counted} photos of {photos} (7 classes)" in result.stdout
    for view, (top1, top5) in right.items():
        row = f"| {view} | {1 - top1 / counted:.2%} | {1 - top5 / counted:.2%} |"
        assert row in result.stdout, result.stdout


def _preprocess(checkpoint):
    return torch.load(checkpoint, weights_only=True)["preprocess"]


def test_five_classes_or_fewer_show_no_top5_column(photos, tmp_path):
    checkpoint = save_network(tmp_path / "best.pth", tiny_network(classes=CLASSES[:5]), classes=CLASSES[:5])
    for photo in (photos / "class5").iterdir():
        photo.unlink()
    (photos / "class5").rmdir()
    result = call_script("evaluate.py", "--images", photos, "--checkpoint", checkpoint, "--workers", "0")
    assert result.returncode == 0 and "| view | top-1 error |\n" in result.stdout
    assert "top-5" not in result.stdout


def test_unknown_class_folders_and_bad_photos(photos, tmp_path):
    checkpoint = save_network(tmp_path / "best.pth", tiny_network(classes=CLASSES[:3]), classes=CLASSES[:3])
    result = call_script("evaluate.py", "--images", photos, "--checkpoint", checkpoint, "--workers", "0")
    assert_one_line_error(result, "class folder(s) class3, class4, class5 are not among the checkpoint's 3 classes")

    checkpoint = save_network(tmp_path / "all.pth", tiny_network(classes=CLASSES), classes=CLASSES)
    (photos / "class2" / "000.jpg").write_text("oops")
    result = call_script("evaluate.py", "--images", photos, "--checkpoint", checkpoint, "--workers", "0")
    assert result.returncode == 1 and "on 11 photos" in result.stdout
    assert re.search(r"note: skipped .*000\.jpg: not an image", result.stderr)


def test_help_states_every_default():
    result = call_script("evaluate.py", "--help")
    assert result.returncode == 0 and flags_without_defaults(result.stdout) == []
