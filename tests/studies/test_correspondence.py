"""zfnet/studies/correspondence.py: Delta, the boxes in the network's input, masking, the boxes a
parts file may hold, the random draws, and the shipped parts file."""

import os

import pytest
import torch
from matplotlib.container import BarContainer
from PIL import Image

from tests.helpers import ROOT, record_figure_texts, tiny_network
from zfnet.figures import save_figure
from zfnet.studies import correspondence
from zfnet.studies.correspondence import LAYERS, box_problem, delta, input_box, masked, measure, plot, read_parts, table


def keeping(save, kept):
    """`save` (figure, ...), keeping each figure in the list `kept` to look into."""

    def saving(figure, *args, **kwargs):
        kept.append(figure)
        save(figure, *args, **kwargs)

    return saving


def test_delta_counts_sign_disagreements_over_pairs():
    changes = torch.tensor([[0.5, -2.0, 0.0], [3.0, 1.0, 0.0], [-1.0, -0.1, 7.0]])
    # signs (+ - 0), (+ + 0), (- - +): pairs differ in 1, 2 and 3 places.
    assert delta(changes) == 1 + 2 + 3


def test_delta_is_zero_for_identical_changes():
    change = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert delta(change.expand(5, -1)) == 0
    # Only the signs count: scaling a change does not make it different.
    assert delta(torch.stack([change, 3 * change, 0.1 * change])) == 0


def test_input_box_follows_the_stretch_to_the_input():
    assert input_box((0, 0, 240, 120), (240, 120), 224) == (0, 0, 224, 224)
    # Rows are stretched 224/120, columns 224/240; rounded outwards.
    assert input_box((60, 30, 120, 90), (240, 120), 224) == (56, 56, 112, 168)
    assert input_box((1, 1, 2, 2), (240, 120), 224) == (0, 1, 2, 4)
    with pytest.raises(ValueError, match="outside the 240 x 120 photo"):
        input_box((200, 0, 241, 10), (240, 120), 224)


def test_masked_paints_only_the_box_grey():
    x = torch.ones(3, 8, 8)
    painted = masked(x, (3, 2, 5, 6))
    assert painted[:, 2:6, 3:5].eq(0).all() and painted.sum() == 3 * (64 - 8) and x.eq(1).all()


def test_the_shipped_example_has_five_sunflowers_with_both_parts():
    path = os.path.join(ROOT, "samples", "correspondence.json")
    entries = read_parts(path)
    assert len(entries) == 5
    for photo, parts in entries:
        assert "/sunflowers/" in photo and sorted(parts) == ["disc", "petals"]
        size = Image.open(photo).size
        boxes = {name: input_box(box, size, 224) for name, box in parts.items()}
        # The petal patch sits left of the disc, not on it (rounding outwards may touch it).
        petals_right, disc_left = boxes["petals"][2], boxes["disc"][0]
        assert petals_right <= disc_left + 1


@pytest.mark.parametrize(
    "box, problem",
    [
        ([10, 5, 40, 25], None),
        ([0, 0, 1, 1], None),
        ([True, 5, 40, 25], "whole pixels, not [true, 5, 40, 25]"),
        ([10, 5, 40, 25.0], "whole pixels, not [10, 5, 40, 25.0]"),
        (["10", 5, 40, 25], "whole pixels"),
        ([10, 5, 40], "whole pixels"),
        ((10, 5, 40, 25), "whole pixels"),  # not from JSON: a box there is a list
        (None, "whole pixels, not null"),
        ([-1, 5, 40, 25], "negative coordinate"),
        ([40, 5, 10, 25], "reversed box [40, 5, 10, 25]"),
        ([10, 25, 40, 5], "reversed box"),
        ([10, 5, 10, 25], "empty box"),
        ([10, 5, 40, 5], "empty box"),
    ],
)
def test_box_problem_names_what_is_wrong_with_a_box(box, problem):
    found = box_problem(box)
    assert found is None if problem is None else problem in found


def test_the_random_draws_do_not_depend_on_how_many_go_through_the_network_at_once():
    # In double precision, so that no sign of a change could flip with the batch's arithmetic.
    model = tiny_network(64).double()
    inputs = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    boxes = [{"a": (4, 4, 20, 30), "b": (30, 10, 60, 20)}] * 3
    # A batch of 64 takes all five draws of three photos at once; a batch of 1, one draw at a time.
    whole = measure(model, inputs, boxes, 5, torch.Generator().manual_seed(1), batch_size=64)
    drawn_one_by_one = measure(model, inputs, boxes, 5, torch.Generator().manual_seed(1), batch_size=1)
    assert whole == drawn_one_by_one
    assert all(len(values) == (1 if masks == "part" else 5) for (_, masks, _), values in whole[0].items())


def test_the_figure_gives_each_part_one_colour_and_explains_the_bars(tmp_path, monkeypatch):
    inputs = torch.zeros(2, 3, 32, 32)
    boxes = [{"disc": (2, 2, 12, 12), "petals": (16, 16, 30, 28)}] * 2
    # Made-up Deltas: the part's own boxes once, the random ones over three draws.
    results = {
        (part, masks, layer): [10.0] if masks == "part" else [20.0, 24.0, 28.0]
        for part in boxes[0]
        for masks in ("part", "random")
        for layer in LAYERS
    }
    rows, _ = table(results, list(boxes[0]), {layer: 100 for layer in LAYERS}, 2, 3)
    texts = record_figure_texts(monkeypatch)
    figures = []
    monkeypatch.setattr(correspondence, "save_figure", keeping(save_figure, figures))
    preprocess = {"mean": [0.5] * 3, "std": [0.5] * 3}
    plot(inputs, boxes, ["p0.jpg", "p1.jpg"], rows, preprocess, str(tmp_path / "correspondence.png"))
    legend = {
        "disc (boxes in the photos)",
        "petals (boxes in the photos)",
        "each photo's own box of the part",
        "random boxes of the same size (mean ± 1 std over 3 draws)",  # what the error bars are
    }
    assert legend <= set(texts), texts
    assert {"layer 5 (lower = changed more alike)", "layer 7 (lower = changed more alike)"} <= set(texts), texts
    assert texts.count("share of features changed\nin opposite directions") == 2, texts
    assert any(text.startswith("What to look for:") for text in texts), texts

    # A colour per part: its boxes in the photos, its solid bar and the lines of its hatched one.
    photos, charts = figures[0].subfigs
    box_colours = [[patch.get_edgecolor() for patch in axis.patches] for axis in photos.axes]
    assert box_colours[0] == box_colours[1] and box_colours[0][0] != box_colours[0][1]
    for axis in charts.axes:
        own, random = (bars.patches for bars in axis.containers if isinstance(bars, BarContainer))
        assert [bar.get_facecolor() for bar in own] == box_colours[0]
        assert [bar.get_edgecolor() for bar in random] == box_colours[0]
        assert all(bar.get_hatch() == "//" and bar.get_facecolor() == (1, 1, 1, 1) for bar in random)
