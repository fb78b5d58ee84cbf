import argparse
import csv

import numpy as np
import pytest
import torch
from tests.helpers import CLASSES, assert_one_line_error, run_script, tiny_network, write_checkpoint, write_photo

import invariance
from zfnet.errors import UserError


def test_steps_include_both_ends():
    assert invariance.steps("-60:60:10") == list(range(-60, 61, 10))
    assert invariance.steps("0.6:1.4:0.1") == [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
    assert invariance.steps("0:360:90") == [0, 90, 180, 270, 360]
    for bad in ("1:2", "a:b:c", "0:10:0", "10:0:1"):
        with pytest.raises(argparse.ArgumentTypeError):
            invariance.steps(bad)


@pytest.fixture
def x():
    return torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind, amount", [("translation", 0), ("scale", 1), ("rotation", 0), ("rotation", 360)])
def test_the_identity_leaves_the_input_alone(x, kind, amount):
    torch.testing.assert_close(invariance.transform(x, kind, [amount])[0], x, atol=1e-5, rtol=0)


def test_translation_moves_down_and_fills_with_the_mean(x):
    moved = invariance.transform(x, "translation", [5, -3])
    torch.testing.assert_close(moved[0, :, 5:], x[:, :-5], atol=1e-5, rtol=0)
    assert (moved[0, :, :5] == 0).all()
    torch.testing.assert_close(moved[1, :, :-3], x[:, 3:], atol=1e-5, rtol=0)
    assert (moved[1, :, -3:] == 0).all()


def test_scaling_shrinks_about_the_centre_with_a_grey_border(x):
    shrunk = invariance.transform(torch.ones(3, 32, 32), "scale", [0.5])[0]
    assert (shrunk[:, :7] == 0).all() and (shrunk[:, :, -7:] == 0).all()
    assert (shrunk[:, 9:23, 9:23] == 1).all()


def test_rotation_turns_anticlockwise():
    marked = torch.zeros(3, 32, 32)
    marked[:, 2:6, 14:18] = 1  # a spot at the top middle
    turned = invariance.transform(marked, "rotation", [90])[0]
    # A quarter turn anticlockwise takes the top middle to the left middle.
    torch.testing.assert_close(turned[:, 14:18, 2:6], torch.ones(3, 4, 4), atol=1e-4, rtol=0)
    assert turned[:, :, 16:].abs().max() < 1e-4


def test_measure_reports_zero_distance_for_the_identity():
    model = tiny_network(64)
    x = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(1))
    ranges = {"translation": [-8, 0, 8], "scale": [0.8, 1.0, 1.25], "rotation": [0, 90, 360]}
    rows = invariance.measure(model, x, ranges, 0, batch_size=4)
    assert [(row["transformation"], row["amount"]) for row in rows] == [
        (kind, amount) for kind in invariance.TRANSFORMATIONS for amount in ranges[kind]]
    for row in rows:
        still = invariance.closeness(row["transformation"], row["amount"]) == 0
        assert (row["layer1_distance"] < 1e-3) == still and (row["layer7_distance"] < 1e-4) == still
    with torch.inference_mode():
        expected = model(x[None]).softmax(1)[0, 0].item()
    assert rows[1]["true_class_probability"] == pytest.approx(expected, abs=1e-5)


def made_up(layer1, layer7, predicted, amounts):
    """Rows as `measure` gives them, from functions of (transformation, amount)."""
    return [{"transformation": kind, "amount": amount, "layer1_distance": layer1(kind, amount),
             "layer7_distance": layer7(kind, amount), "true_class_probability": 0.5,
             "predicted_class": predicted(kind, amount)}
            for kind in invariance.TRANSFORMATIONS for amount in amounts[kind]]


AMOUNTS = {"translation": [-20, -10, 0, 10, 20], "scale": [0.8, 0.9, 1.0, 1.1, 1.2], "rotation": [0, 90, 180, 270, 360]}


def test_findings_recognise_the_papers_behaviour():
    def jump(kind, amount):  # layer 1: full change at the smallest step
        return 0.0 if invariance.closeness(kind, amount) == 0 else 10.0

    def linear(kind, amount):  # layer 7: grows in proportion
        return invariance.closeness(kind, amount)

    results = {"a.jpg": made_up(jump, linear, lambda kind, amount: 0, AMOUNTS),
               "b.jpg": made_up(jump, linear, lambda kind, amount: 1 if amount == 180 else 0, AMOUNTS)}
    originals = {"a.jpg": torch.tensor([0.9, 0.05, 0.05]), "b.jpg": torch.tensor([0.6, 0.3, 0.1])}
    lines = invariance.findings(results, {"a.jpg": 0, "b.jpg": 0}, originals, CLASSES)
    assert "translation 100% vs 50%" in lines[0] and "layer 1 a lot and layer 7 much less" in lines[0]
    assert "translation R2 = 1.00" in lines[1] and "roughly linear in both" in lines[1]
    assert lines[2] == ("Rotation, a.jpg: P(daisy) 0.90 unrotated, 0.50 to 0.50 turned; daisy is the most probable "
                        "class at 3 of 3 angles.")
    assert "b.jpg: P(daisy) 0.60 unrotated" in lines[3] and "at 2 of 3 angles" in lines[3]
    assert lines[4].endswith("invariant: a.jpg; not invariant: b.jpg; misclassified even unrotated: none.")


def test_findings_say_when_the_paper_does_not_hold():
    def linear(kind, amount):
        return invariance.closeness(kind, amount)

    def wobbly(kind, amount):  # the full change at the smallest step, then back down: not linear
        distance = invariance.closeness(kind, amount)
        smallest = {"translation": 10, "scale": 0.1, "rotation": 90}[kind]
        return 0.0 if distance == 0 else 10.0 if distance == smallest else 1.0

    results = {"a.jpg": made_up(linear, wobbly, lambda kind, amount: 2, AMOUNTS),
               "b.jpg": made_up(linear, wobbly, lambda kind, amount: 2, AMOUNTS)}
    originals = {"a.jpg": torch.tensor([0.2, 0.1, 0.7]), "b.jpg": torch.tensor([0.5, 0.1, 0.4])}
    lines = invariance.findings(results, {"a.jpg": 0, "b.jpg": 0}, originals, CLASSES)
    assert "as in the paper only for none" in lines[0]
    assert "not roughly linear in either" in lines[1]
    assert lines[-1] == ("Rotation invariance (the true class stays the most probable at >= 90% of the angles): "
                         "invariant: none; not invariant: b.jpg; misclassified even unrotated: a.jpg.")


@pytest.fixture
def setup(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "tiny.pth", input_size=64)
    val = tmp_path / "val"
    for seed, name in enumerate(CLASSES):
        for index in range(2):
            write_photo(val / name / f"{name}{index}.jpg", seed=10 * seed + index)
    return checkpoint, val


RANGES = ["--translate=-8:8:4", "--scale", "0.8:1.2:0.2", "--rotate", "0:360:90"]


def test_script_writes_figure_csv_and_summary(setup, tmp_path, capsys):
    checkpoint, val = setup
    out = tmp_path / "out"
    invariance.main(["--checkpoint", checkpoint, "--val", str(val), "--out", str(out), *RANGES])
    with open(out / "invariance.csv") as file:
        rows = list(csv.DictReader(file))
    # The default photos: the first of each class, judged against their folders' classes.
    assert sorted({row["photo"] for row in rows}) == [f"{name}0.jpg" for name in CLASSES]
    assert all(row["true_class"] == row["photo"][:-5] for row in rows)
    assert len(rows) == len(CLASSES) * (5 + 3 + 5)
    assert list(rows[0]) == ["photo", "true_class", "transformation", "amount", "layer1_distance", "layer7_distance",
                             "true_class_probability", "predicted_class"]
    identity = [row for row in rows if row["transformation"] == "translation" and float(row["amount"]) == 0]
    assert all(float(row["layer1_distance"]) < 1e-3 for row in identity)
    assert all(0 <= float(row["true_class_probability"]) <= 1 and row["predicted_class"] in CLASSES for row in rows)
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("Small transformations") and summary in capsys.readouterr().out
    assert len(summary.splitlines()) == 2 + len(CLASSES) + 1
    assert (out / "invariance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_photos_given_use_class_option(setup, tmp_path):
    checkpoint, val = setup
    loose = write_photo(tmp_path / "loose.jpg", seed=99)
    out = tmp_path / "out"
    invariance.main([loose, "--checkpoint", checkpoint, "--class", "roses", "--out", str(out), *RANGES])
    with open(out / "invariance.csv") as file:
        assert {row["true_class"] for row in csv.DictReader(file)} == {"roses"}


@pytest.mark.parametrize("arguments, message", [
    (["--class", "tulips"], "unknown class 'tulips'"),
    (["--val", "nowhere"], "no photos in nowhere"),
    (["--batch-size", "0"], "--batch-size"),
    (["--rotate", "0:360:360"], "--rotate needs at least one step that changes the photo"),
])
def test_bad_input_is_a_user_error(setup, arguments, message):
    checkpoint, val = setup
    with pytest.raises(UserError, match=message):
        invariance.main(["--checkpoint", checkpoint, "--val", str(val), *arguments])


def test_a_network_without_layer_7_is_a_user_error(setup, tmp_path):
    _, val = setup
    checkpoint = write_checkpoint(tmp_path / "no7.pth", input_size=64, fc_features=(32, 0))
    with pytest.raises(UserError, match="has no layer 7"):
        invariance.main(["--checkpoint", checkpoint, "--val", str(val)])


def test_bad_range_exits_2_with_one_line(setup):
    checkpoint, val = setup
    process = run_script("invariance.py", "--checkpoint", checkpoint, "--val", val, "--rotate", "0:360")
    assert_one_line_error(process, "expected START:STOP:STEP")


def test_missing_photo_exits_2_with_one_line(setup, tmp_path):
    checkpoint, _ = setup
    process = run_script("invariance.py", tmp_path / "gone.jpg", "--checkpoint", checkpoint)
    assert_one_line_error(process, "gone.jpg: no such file")


def test_identical_curves_have_no_spread():
    rows = made_up(lambda kind, amount: invariance.closeness(kind, amount),
                   lambda kind, amount: invariance.closeness(kind, amount), lambda kind, amount: 0, AMOUNTS)
    translation = [row for row in rows if row["transformation"] == "translation"]
    assert invariance.line_fit(translation, "layer7_distance") == pytest.approx(1.0)
    assert invariance.small_step_share(translation, "layer7_distance") == pytest.approx(0.5)
    assert np.isnan(invariance.line_fit(translation[:2], "layer7_distance"))
