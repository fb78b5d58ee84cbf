import json
import subprocess
import sys

import pytest
import torch

import predict
from model import ZFNet
from tests.helpers import ROOT
from zfnet.checkpoint import model_payload, save_checkpoint
from zfnet.images import load_input

PREPROCESS = {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
CLASSES = ["blue", "green", "red"]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ZFNet(num_classes=3, fc_features=(64, 64))
    path = tmp_path / "best.pth"
    save_checkpoint(model_payload(model, CLASSES, PREPROCESS, epoch=1), path)
    return model.eval(), path


def reference_probabilities(model, path):
    with torch.no_grad():
        return torch.softmax(model(load_input(path, PREPROCESS)[None]), dim=1)[0]


def run_predict(*args):
    return subprocess.run([sys.executable, "predict.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_prints_the_class_and_probability_of_each_photo(checkpoint, colour_split, capsys):
    model, path = checkpoint
    photos = [colour_split / "val" / "red" / "000.jpg", colour_split / "val" / "blue" / "001.jpg"]
    predict.main([*map(str, photos), "--checkpoint", str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, photo in zip(lines, photos):
        probabilities = reference_probabilities(model, photo)
        best = int(probabilities.argmax())
        assert line == f"{photo}: {CLASSES[best]} {probabilities[best]:.3f}"


def test_json_lists_the_top_k_classes_of_every_photo_in_folders(checkpoint, colour_split, capsys):
    model, path = checkpoint
    predict.main([str(colour_split / "val"), "--checkpoint", str(path), "--json", "--topk", "2", "--batch-size", "5"])
    results = json.loads(capsys.readouterr().out)
    expected_paths = sorted(str(p) for p in (colour_split / "val").rglob("*.jpg"))
    assert [r["path"] for r in results] == expected_paths  # folders searched recursively, in order
    for result in results:
        probabilities = reference_probabilities(model, result["path"])
        top = probabilities.topk(2)
        assert [t["class"] for t in result["top"]] == [CLASSES[i] for i in top.indices]
        assert [t["probability"] for t in result["top"]] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert result["class"] == result["top"][0]["class"]
        assert result["probability"] == result["top"][0]["probability"]


def test_one_bad_photo_is_reported_and_the_others_still_classified(checkpoint, colour_split, tmp_path):
    _, path = checkpoint
    (tmp_path / "notes.jpg").write_text("not a photo")
    good = colour_split / "val" / "green" / "002.jpg"
    result = run_predict(good, tmp_path / "notes.jpg", tmp_path / "gone.jpg", "--checkpoint", path)
    assert result.returncode == 2
    assert result.stdout.startswith(f"{good}: ") and len(result.stdout.splitlines()) == 1
    assert result.stderr.splitlines() == [f"predict.py: error: {tmp_path / 'notes.jpg'}: not an image",
                                          f"predict.py: error: {tmp_path / 'gone.jpg'}: no such file"]
    as_json = run_predict(good, tmp_path / "notes.jpg", "--checkpoint", path, "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)[1] == {"path": str(tmp_path / "notes.jpg"),
                                             "error": f"{tmp_path / 'notes.jpg'}: not an image"}


def test_bad_checkpoints_and_arguments_fail_with_one_line(checkpoint, colour_split, tmp_path):
    model, path = checkpoint
    photo = colour_split / "val" / "red" / "000.jpg"
    (tmp_path / "corrupt.pth").write_bytes(path.read_bytes()[:1000])
    other = {**model_payload(model, CLASSES, PREPROCESS, 1)}
    other["model_config"] = {**other["model_config"], "fc_features": [128, 128]}
    save_checkpoint(other, tmp_path / "other.pth")
    (tmp_path / "empty").mkdir()
    cases = [((photo, "--checkpoint", tmp_path / "none.pth"), "checkpoint not found"),
             ((photo, "--checkpoint", tmp_path / "corrupt.pth"), "corrupt or not a checkpoint"),
             ((photo, "--checkpoint", tmp_path / "other.pth"), "weights do not fit"),
             ((tmp_path / "empty", "--checkpoint", path), "no photos in"),
             ((photo, "--checkpoint", path, "--topk", "0"), "--topk and --batch-size must be at least 1")]
    for args, message in cases:
        result = run_predict(*args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
        assert result.stdout == ""


def test_plot_saves_each_photo_beside_its_top_classes(checkpoint, colour_split, tmp_path, capsys):
    _, path = checkpoint
    figure = tmp_path / "prediction.png"
    predict.main([str(colour_split / "val" / "red"), "--checkpoint", str(path), "--plot", str(figure)])
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_prediction_does_not_import_torchvision_or_matplotlib(checkpoint, colour_split):
    _, path = checkpoint
    code = ("import sys, predict; predict.main([sys.argv[1], '--checkpoint', sys.argv[2]]); "
            "print(sorted(m for m in ('torchvision', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(colour_split / "val" / "red" / "000.jpg"), str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "[]", result.stderr



def test_the_pipeline_end_to_end_on_the_bundled_sample(tmp_path):
    """split_data.py, train.py and predict.py as the README runs them, on the shipped photos."""
    data, run = tmp_path / "flower_data", tmp_path / "run"
    for script, *args in (("split_data.py", "--source", "samples/flower_photos", "--dest", data),
                          ("train.py", "--data", data, "--out", run, "--epochs", "1", "--workers", "0")):
        step = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert step.returncode == 0, step.stderr[-2000:]
    result = run_predict("sunflower.jpg", "--checkpoint", run / "best.pth", "--json", "--topk", "5")
    assert result.returncode == 0, result.stderr
    (prediction,) = json.loads(result.stdout)
    assert prediction["path"] == "sunflower.jpg"
    assert sorted(t["class"] for t in prediction["top"]) == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert sum(t["probability"] for t in prediction["top"]) == pytest.approx(1, abs=1e-4)
