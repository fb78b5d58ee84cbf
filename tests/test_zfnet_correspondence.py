"""zfnet/correspondence.py: Delta, the boxes in the network's input, masking, the boxes a
parts file may hold, the random draws, and the shipped parts file."""

import os

import pytest
import torch
from PIL import Image

from tests.helpers import ROOT, tiny_network
from zfnet.correspondence import box_problem, delta, input_box, masked, measure, read_parts


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
