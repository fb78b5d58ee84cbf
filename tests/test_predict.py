import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    CLASSES,
    PREPROCESS,
    ROOT,
    assert_one_line_error,
    assert_picture,
    call_script,
    disk_full,
    folder_contents,
    run_script,
    save_network,
    tiny_network,
    write_bomb,
    write_photo,
)
from zfnet import predicting
from zfnet.checkpoint import model_payload, save_checkpoint
from zfnet.images import load_input


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_network()
    return model, save_network(tmp_path / "best.pth", model)


def reference_probabilities(model, path):
    with torch.no_grad():
        return torch.softmax(model(load_input(path, PREPROCESS)[None]), dim=1)[0]


def test_prints_the_class_and_probability_of_each_photo(checkpoint, colour_split):
    model, path = checkpoint
    photos = [colour_split / "val" / "red" / "000.jpg", colour_split / "val" / "blue" / "001.jpg"]
    result = call_script("predict.py", *photos, "--checkpoint", path)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line, photo in zip(lines, photos):
        probabilities = reference_probabilities(model, photo)
        best = int(probabilities.argmax())
        assert line == f"{photo}: {CLASSES[best]} {probabilities[best]:.3f}"


def test_json_lists_the_top_k_classes_of_every_photo_in_folders(checkpoint, colour_split):
    model, path = checkpoint
    result = call_script(
        "predict.py", colour_split / "val", "--checkpoint", path, "--json", "--topk", "2", "--batch-size", "5"
    )
    results = json.loads(result.stdout)
    expected_paths = sorted(str(p) for p in (colour_split / "val").rglob("*.jpg"))
    assert [r["path"] for r in results] == expected_paths  # folders searched recursively, in order
    for result in results:
        probabilities = reference_probabilities(model, result["path"])
        top = probabilities.topk(2)
        assert [t["class"] for t in result["top"]] == [CLASSES[i] for i in top.indices]
        assert [t["probability"] for t in result["top"]] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert result["class"] == result["top"][0]["class"]
        assert result["probability"] == result["top"][0]["probability"]


def test_a_topk_above_the_number_of_classes_shows_them_all_and_says_so(checkpoint, colour_split):
    _, path = checkpoint
    photo = colour_split / "val" / "red" / "000.jpg"
    result = call_script("predict.py", photo, "--checkpoint", path, "--topk", "10")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [f"note: --topk 10 cut to the 3 classes that {path} knows"]
    (line,) = result.stdout.splitlines()
    assert sorted(part.split()[0] for part in line.split(": ", 1)[1].split(" | ")) == CLASSES


def test_one_bad_photo_is_reported_and_the_others_still_classified(checkpoint, colour_split, tmp_path):
    _, path = checkpoint
    (tmp_path / "notes.jpg").write_text("not a photo")
    good = colour_split / "val" / "green" / "002.jpg"
    result = run_script("predict.py", good, tmp_path / "notes.jpg", tmp_path / "gone.jpg", "--checkpoint", path)
    assert result.returncode == 1  # some photos classified: not the one-line failure of status 2
    assert result.stdout.startswith(f"{good}: ") and len(result.stdout.splitlines()) == 1
    assert result.stderr.splitlines() == [
        f"predict.py: error: {tmp_path / 'notes.jpg'}: not an image",
        f"predict.py: error: {tmp_path / 'gone.jpg'}: no such file",
    ]
    as_json = run_script("predict.py", good, tmp_path / "notes.jpg", "--checkpoint", path, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)[1] == {
        "path": str(tmp_path / "notes.jpg"),
        "error": f"{tmp_path / 'notes.jpg'}: not an image",
    }


def test_bad_checkpoints_and_arguments_fail_with_one_line(checkpoint, colour_split, tmp_path):
    model, path = checkpoint
    photo = colour_split / "val" / "red" / "000.jpg"
    (tmp_path / "corrupt.pth").write_bytes(Path(path).read_bytes()[:1000])
    other = {**model_payload(model, CLASSES, PREPROCESS, 1)}
    other["model_config"] = {**other["model_config"], "fc_features": [128, 128]}
    save_checkpoint(other, tmp_path / "other.pth")
    (tmp_path / "empty").mkdir()
    cases = [
        ((photo, "--checkpoint", tmp_path / "none.pth"), "checkpoint not found"),
        ((photo, "--checkpoint", tmp_path / "corrupt.pth"), "corrupt or not a checkpoint"),
        ((photo, "--checkpoint", tmp_path / "other.pth"), "weights do not fit"),
        ((tmp_path / "empty", "--checkpoint", path), "no photos in"),
        ((photo, "--checkpoint", path, "--topk", "0"), "--topk"),
        ((photo, "--checkpoint", path, "--batch-size", "0"), "--batch-size"),
        ((photo, "--checkpoint", path, "--topk", "-2"), "--topk"),
        ((photo, "--checkpoint", path, "--batch-size", "many"), "--batch-size"),
    ]
    for args, message in cases:
        result = call_script("predict.py", *args)
        assert_one_line_error(result, message)
        assert result.stderr.strip().splitlines()[-1].startswith("predict.py: error: ")
        assert result.stdout == ""


def test_plot_saves_each_photo_beside_its_top_k_classes_and_says_where(checkpoint, colour_split, tmp_path, monkeypatch):
    _, path = checkpoint
    figure = tmp_path / "prediction.png"
    plotted = []

    def plot_and_keep(results, where):
        plotted.extend(results)
        draw(results, where)

    draw = predicting.plot_predictions
    monkeypatch.setattr(predicting, "plot_predictions", plot_and_keep)
    result = call_script(
        "predict.py", colour_split / "val" / "red", "--checkpoint", path, "--plot", figure, "--topk", "2"
    )
    assert_picture(figure)
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and lines[-1] == f"figure saved to {figure}"
    assert len(plotted) == 4 and all(len(entry["top"]) == 2 for entry in plotted)
    as_json = call_script("predict.py", colour_split / "val" / "red", "--checkpoint", path, "--plot", figure, "--json")
    assert len(json.loads(as_json.stdout)) == 4  # the figure's line goes to stderr, the JSON stays whole
    assert as_json.stderr == f"figure saved to {figure}\n"


def test_prediction_does_not_import_torchvision_or_matplotlib(checkpoint, colour_split):
    _, path = checkpoint
    code = (
        "import runpy, sys; sys.argv = ['predict.py', *sys.argv[1:]]; "
        "runpy.run_path('predict.py', run_name='__main__'); "
        "print(sorted(m for m in ('torchvision', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(colour_split / "val" / "red" / "000.jpg"), "--checkpoint", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.splitlines()[-1] == "[]", result.stderr


def test_the_pipeline_end_to_end_on_the_bundled_sample(tmp_path, monkeypatch):
    """split_data.py, train.py and predict.py as the README runs them, on the shipped photos."""
    monkeypatch.chdir(ROOT)
    data, run = tmp_path / "flower_data", tmp_path / "run"
    for script, *args in (
        ("split_data.py", "--source", "samples/flower_photos", "--dest", data),
        ("train.py", "--data", data, "--out", run, "--epochs", "1", "--workers", "0"),
    ):
        step = call_script(script, *args)
        assert step.returncode == 0, step.stderr[-2000:]
    result = call_script("predict.py", "sunflower.jpg", "--checkpoint", run / "best.pth", "--json", "--topk", "5")
    assert result.returncode == 0, result.stderr
    (prediction,) = json.loads(result.stdout)
    assert prediction["path"] == "sunflower.jpg"
    assert sorted(t["class"] for t in prediction["top"]) == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert sum(t["probability"] for t in prediction["top"]) == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("side", [30000, 11000])  # above PIL's limit, and between its warning and its limit
def test_a_photo_too_large_to_decode_is_reported_and_the_rest_of_its_batch_classified(checkpoint, colour_split, side):
    _, path = checkpoint
    folder = colour_split / "val" / "red"
    bomb = write_bomb(folder / "001-huge.png", side)
    result = call_script("predict.py", folder, "--checkpoint", path, "--json", "--batch-size", "8")
    assert result.returncode == 1
    results = json.loads(result.stdout)
    assert [entry["path"] for entry in results] == sorted(str(photo) for photo in folder.iterdir())
    (failed,) = [entry for entry in results if "error" in entry]
    assert failed["path"] == bomb and failed["error"].startswith(f"{bomb}: image too large to decode safely (")
    assert sum("class" in entry for entry in results) == 4  # the rest of the same batch
    assert result.stderr.splitlines() == [f"predict.py: error: {failed['error']}"]

    lines = call_script("predict.py", folder, "--checkpoint", path)
    assert lines.returncode == 1 and len(lines.stdout.splitlines()) == 4 and bomb not in lines.stdout


def test_links_to_nowhere_in_a_folder_are_reported_each_and_the_photos_classified(checkpoint, colour_split):
    _, path = checkpoint
    folder = colour_split / "val" / "blue"
    os.symlink("loop.jpg", folder / "loop.jpg")
    os.symlink("gone.jpg", folder / "dangling.jpg")
    result = call_script("predict.py", folder, "--checkpoint", path)
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 4
    assert result.stderr.splitlines() == [
        f"predict.py: error: {folder / 'dangling.jpg'}: no such file",
        f"predict.py: error: {folder / 'loop.jpg'}: a symbolic link that loops back and never reaches a file",
    ]


def test_a_pipe_named_like_a_photo_is_reported_not_waited_for(checkpoint, colour_split):
    _, path = checkpoint
    folder = colour_split / "val" / "blue"
    os.mkfifo(folder / "fifo.jpg")
    refused = f"{folder / 'fifo.jpg'}: not a regular file (a pipe, socket or device), so it is not read"
    alone = run_script("predict.py", folder / "fifo.jpg", "--checkpoint", path, timeout=120)
    assert alone.returncode == 1 and alone.stdout == ""
    assert alone.stderr.splitlines() == [f"predict.py: error: {refused}"]
    among = run_script("predict.py", folder, "--checkpoint", path, timeout=120)
    assert among.returncode == 1 and len(among.stdout.splitlines()) == 4  # the 4 photos beside it
    assert among.stderr.splitlines() == [f"predict.py: error: {refused}"]


def test_topk_above_the_classes_is_cut_in_json_too_and_said_on_stderr(checkpoint, colour_split):
    _, path = checkpoint
    result = call_script("predict.py", colour_split / "val" / "green", "--checkpoint", path, "--topk", "4", "--json")
    assert result.returncode == 0
    assert result.stderr == f"note: --topk 4 cut to the 3 classes that {path} knows\n"
    assert all(len(entry["top"]) == 3 for entry in json.loads(result.stdout))


PLOTS_THAT_WOULD_HARM_A_FILE = {  # --plot, and what the one line says
    "a photo given": (lambda tmp: tmp / "single" / "photo.jpg", "is one of the inputs"),
    "a PNG photo given": (lambda tmp: tmp / "single" / "photo.png", "is one of the inputs"),
    "the checkpoint": (lambda tmp: tmp / "best.pth", "is one of the inputs"),
    "the user's file": (lambda tmp: tmp / "notes.txt", "exists and is not a PNG, so it is not replaced"),
    "a folder": (lambda tmp: tmp / "single", "is a folder"),
    "inside the photo folder": (lambda tmp: tmp / "photos" / "figure.png", "is within the photo folder"),
}


@pytest.mark.parametrize("case", PLOTS_THAT_WOULD_HARM_A_FILE)
def test_a_plot_that_would_harm_a_file_is_refused_before_any_work(checkpoint, tmp_path, case):
    _, path = checkpoint
    write_photo(tmp_path / "single" / "photo.jpg", seed=1)
    shutil.copy(write_photo(tmp_path / "photos" / "a.jpg", seed=2), tmp_path / "single" / "photo.png")
    (tmp_path / "notes.txt").write_text("my notes")
    before = folder_contents(tmp_path)
    plot, message = PLOTS_THAT_WOULD_HARM_A_FILE[case]
    result = call_script(
        "predict.py",
        tmp_path / "single" / "photo.jpg",
        tmp_path / "single" / "photo.png",
        tmp_path / "photos",
        "--checkpoint",
        path,
        "--plot",
        plot(tmp_path),
    )
    assert_one_line_error(result, f"--plot {plot(tmp_path)} {message}")
    assert result.stdout == ""  # refused before any photo was classified
    assert folder_contents(tmp_path) == before


def test_a_full_disk_while_saving_the_figure_is_one_line_and_keeps_the_earlier_one(
    checkpoint, colour_split, tmp_path, monkeypatch
):
    _, path = checkpoint
    figure = tmp_path / "prediction.png"
    arguments = [colour_split / "val" / "red" / "000.jpg", "--checkpoint", path, "--plot", figure]
    assert call_script("predict.py", *arguments).returncode == 0
    before = folder_contents(tmp_path)

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", disk_full)
    result = call_script("predict.py", *arguments)
    assert_one_line_error(result, f"cannot write {figure}: No space left on device; what was there before is unchanged")
    assert folder_contents(tmp_path) == before


def test_without_checkpoint_the_newest_run_is_taken_and_named(tmp_path, monkeypatch):
    photo = write_photo(tmp_path / "photo.jpg", seed=1)
    monkeypatch.chdir(tmp_path)
    missing = call_script("predict.py", photo)
    assert_one_line_error(missing, "checkpoint not found: runs/zfnet/best.pth")
    runs = {name: save_network(tmp_path / "runs" / name / "best.pth", tiny_network(64)) for name in ("zfnet", "real")}
    for age, name in enumerate(("real", "zfnet")):  # runs/zfnet the newest
        os.utime(runs[name], (1_000_000 + age, 1_000_000 + age))
    quiet = call_script("predict.py", photo)
    assert quiet.returncode == 0 and quiet.stderr == "" and "photo.jpg: " in quiet.stdout
    os.utime(runs["real"], (2_000_000, 2_000_000))  # now runs/real
    noted = call_script("predict.py", photo)
    assert noted.returncode == 0 and "photo.jpg: " in noted.stdout
    expected = os.path.join("runs", "real", "best.pth")
    assert noted.stderr == f"note: --checkpoint {expected}, the newest run's (give --checkpoint to choose another)\n"
    given = call_script("predict.py", photo, "--checkpoint", runs["zfnet"])
    assert given.returncode == 0 and given.stderr == ""
