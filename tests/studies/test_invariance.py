"""zfnet/studies/invariance.py: the ranges, the transformations, the measurements and the findings
drawn from them."""

import argparse

import numpy as np
import pytest
import torch

from tests.helpers import CLASSES, record_figure_texts, tiny_network, write_photo
from zfnet.errors import UserError
from zfnet.studies import invariance


def test_steps_include_both_ends():
    assert invariance.steps("-60:60:10") == list(range(-60, 61, 10))
    assert invariance.steps("0.6:1.4:0.1") == [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
    assert invariance.steps("0:360:90") == [0, 90, 180, 270, 360]
    for bad in ("1:2", "a:b:c", "0:10:0", "10:0:1"):
        with pytest.raises(argparse.ArgumentTypeError):
            invariance.steps(bad)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected START:STOP:STEP"),
        ("1:2:3:4", "expected START:STOP:STEP"),
        ("0:10:-1", "STEP must be above 0"),
        ("5:-5:1", "STOP is below START"),
        ("-inf:0:1", "finite"),
        ("0:1:nan", "finite"),
        ("-1e308:1e308:1", "more than 1000 steps"),  # the span overflows to inf
        ("0:1000:1", "more than 1000 steps"),
    ],
)
def test_steps_refuse_ranges_that_make_no_sense(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        invariance.steps(text)


def test_steps_allow_up_to_the_limit():
    assert len(invariance.steps("0:999:1")) == invariance.MAX_STEPS
    assert invariance.steps("-3:-1:1") == [-3, -2, -1] and invariance.steps("2:2:1") == [2]


def test_scale_factors_must_be_above_zero():
    assert invariance.scale_steps("0.5:1.5:0.5") == [0.5, 1.0, 1.5]
    for bad in ("0:1:0.5", "-1:1:0.5", "-0.0001:2:0.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be above 0"):
            invariance.scale_steps(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="STOP is below START"):
        invariance.scale_steps("1.5:0.5:0.1")


def test_shifts_must_leave_part_of_the_photo_in_the_input():
    invariance.check_translation([-223, 0, 223], 224)
    for amounts in ([-224, 0, 224], [0, 300], [-500]):
        with pytest.raises(UserError, match=f"reaches {max(map(abs, amounts))} pixels"):
            invariance.check_translation(amounts, 224)


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
        (kind, amount) for kind in invariance.TRANSFORMATIONS for amount in ranges[kind]
    ]
    for row in rows:
        still = invariance.closeness(row["transformation"], row["amount"]) == 0
        assert (row["layer1_distance"] < 1e-3) == still and (row["layer7_distance"] < 1e-4) == still
    with torch.inference_mode():
        expected = model(x[None]).softmax(1)[0, 0].item()
    assert rows[1]["true_class_probability"] == pytest.approx(expected, abs=1e-5)


def made_up(layer1, layer7, predicted, amounts):
    """Rows as `measure` gives them, from functions of (transformation, amount)."""
    return [
        {
            "transformation": kind,
            "amount": amount,
            "layer1_distance": layer1(kind, amount),
            "layer7_distance": layer7(kind, amount),
            "true_class_probability": 0.5,
            "predicted_class": predicted(kind, amount),
        }
        for kind in invariance.TRANSFORMATIONS
        for amount in amounts[kind]
    ]


AMOUNTS = {"translation": [-20, -10, 0, 10, 20], "scale": [0.8, 0.9, 1.0, 1.1, 1.2], "rotation": [0, 90, 180, 270, 360]}


def test_findings_recognise_the_papers_behaviour():
    def jump(kind, amount):  # layer 1: full change at the smallest step
        return 0.0 if invariance.closeness(kind, amount) == 0 else 10.0

    def linear(kind, amount):  # layer 7: grows in proportion
        return invariance.closeness(kind, amount)

    results = {
        "a.jpg": made_up(jump, linear, lambda kind, amount: 0, AMOUNTS),
        "b.jpg": made_up(jump, linear, lambda kind, amount: 1 if amount == 180 else 0, AMOUNTS),
    }
    originals = {"a.jpg": torch.tensor([0.9, 0.05, 0.05]), "b.jpg": torch.tensor([0.6, 0.3, 0.1])}
    lines = invariance.findings(results, {"a.jpg": 0, "b.jpg": 0}, originals, CLASSES)
    assert "translation 100% vs 50%" in lines[0] and "layer 1 a lot and layer 7 much less" in lines[0]
    assert "translation R2 = 1.00" in lines[1] and "roughly linear in both" in lines[1]
    assert lines[2] == (
        "Rotation, a.jpg: P(daisy) 0.90 unrotated, 0.50 to 0.50 turned; daisy is the most probable "
        "class at 3 of 3 angles."
    )
    assert "b.jpg: P(daisy) 0.60 unrotated" in lines[3] and "at 2 of 3 angles" in lines[3]
    assert lines[4].endswith("invariant: a.jpg; not invariant: b.jpg; misclassified even unrotated: none.")


def test_findings_say_when_the_paper_does_not_hold():
    def linear(kind, amount):
        return invariance.closeness(kind, amount)

    def wobbly(kind, amount):  # the full change at the smallest step, then back down: not linear
        distance = invariance.closeness(kind, amount)
        smallest = {"translation": 10, "scale": 0.1, "rotation": 90}[kind]
        return 0.0 if distance == 0 else 10.0 if distance == smallest else 1.0

    results = {
        "a.jpg": made_up(linear, wobbly, lambda kind, amount: 2, AMOUNTS),
        "b.jpg": made_up(linear, wobbly, lambda kind, amount: 2, AMOUNTS),
    }
    originals = {"a.jpg": torch.tensor([0.2, 0.1, 0.7]), "b.jpg": torch.tensor([0.5, 0.1, 0.4])}
    lines = invariance.findings(results, {"a.jpg": 0, "b.jpg": 0}, originals, CLASSES)
    assert "as in the paper only for none" in lines[0]
    assert "not roughly linear in either" in lines[1]
    assert lines[-1] == (
        "Rotation invariance (the true class stays the most probable at >= 90% of the angles): "
        "invariant: none; not invariant: b.jpg; misclassified even unrotated: a.jpg."
    )


def test_identical_curves_have_no_spread():
    rows = made_up(
        lambda kind, amount: invariance.closeness(kind, amount),
        lambda kind, amount: invariance.closeness(kind, amount),
        lambda kind, amount: 0,
        AMOUNTS,
    )
    translation = [row for row in rows if row["transformation"] == "translation"]
    assert invariance.line_fit(translation, "layer7_distance") == pytest.approx(1.0)
    assert invariance.small_step_share(translation, "layer7_distance") == pytest.approx(0.5)
    assert np.isnan(invariance.line_fit(translation[:2], "layer7_distance"))


def test_default_photos_are_the_first_of_each_class(tmp_path):
    for name in CLASSES:
        for index in (1, 0):
            write_photo(tmp_path / "images" / name / f"{name}{index}.jpg", seed=index)
    assert invariance.default_photos(str(tmp_path / "images"), CLASSES) == [
        str(tmp_path / "images" / name / f"{name}0.jpg") for name in CLASSES
    ]
    with pytest.raises(UserError, match="no photos in .*tulips"):
        invariance.default_photos(str(tmp_path / "images"), [*CLASSES, "tulips"])


def test_the_figure_labels_every_axis_and_names_each_photo_once(tmp_path, monkeypatch):
    def linear(kind, amount):
        return invariance.closeness(kind, amount)

    results = {name: made_up(linear, linear, lambda kind, amount: 0, AMOUNTS) for name in ("a.jpg", "b.jpg")}
    texts = record_figure_texts(monkeypatch)
    invariance.plot(results, {"a.jpg": 0, "b.jpg": 2}, CLASSES, str(tmp_path / "invariance.png"))
    for label in (
        "distance from the original's\nlayer-1 features (Euclidean)",
        "distance from the original's\nlayer-7 features (Euclidean)",
        "P(true class)",
        *invariance.UNITS.values(),
    ):
        assert texts.count(label) == 3, (label, texts)  # on each of the three plots of its row or column
    # One legend for the whole figure: each photo's colour is explained once.
    assert texts.count("a.jpg (daisy)") == 1 and texts.count("b.jpg (sunflowers)") == 1, texts
    assert any(text.startswith("What to look for:") for text in texts), texts
