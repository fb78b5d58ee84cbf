import os

import pytest
import torch
from PIL import Image

from tests.helpers import assert_picture, record_figure_panels, record_figure_texts
from zfnet.figures import (
    caption,
    filter_pictures,
    plain_log_ticks,
    plot_confusion,
    plot_curves,
    plt,
    robust_scale,
    run_name,
    run_names,
    save_figure,
    stretched,
)


def test_projections_are_stretched_symmetrically_around_grey():
    projection = torch.zeros(3, 20, 20)
    projection[0, :10, :10] = torch.linspace(0.01, 1, 100).view(10, 10)  # 100 positive values
    projection[1, 10:, 10:] = -torch.linspace(0.01, 1, 100).view(10, 10)  # their mirror image
    projection[2, 0, 19] = 50.0  # one outlier that a min-max stretch would let wash out the rest
    picture = stretched(projection)
    assert picture.shape == (3, 20, 20) and picture.min() >= 0 and picture.max() <= 1
    assert picture[2, 5, 5] == 0.5  # zero stays grey
    scale = projection.abs().flatten()[projection.abs().flatten() > 0].quantile(0.99)
    torch.testing.assert_close(picture[0, :10, :10], (0.5 + 0.5 * projection[0, :10, :10] / scale).clamp(0, 1))
    torch.testing.assert_close(picture[1, 10:, 10:], 1 - picture[0, :10, :10])  # the same stretch downwards
    assert picture[2, 0, 19] == 1.0  # the outlier is clipped, not the scale
    assert picture[0, 9, 9] == 1.0 and picture[0, 0, 0] < 0.51


def test_one_scale_keeps_projections_strengths_comparable():
    strong = torch.randn(3, 8, 8)
    weak = 0.2 * strong
    assert torch.allclose(stretched(strong), stretched(weak))  # each by its own scale: alike
    scale = robust_scale(torch.stack([strong, weak]))
    bright, faint = stretched(strong, scale) - 0.5, stretched(weak, scale) - 0.5
    unclipped = bright.abs() < 0.5
    assert unclipped.float().mean() > 0.9
    assert torch.allclose(faint[unclipped], 0.2 * bright[unclipped], atol=1e-6)


def test_filters_are_stretched_one_by_one_and_faded_ones_drawn_grey():
    torch.manual_seed(0)
    weights = torch.randn(4, 3, 5, 5)
    weights[1] *= 1e-3
    pictures = filter_pictures(weights, torch.tensor([False, True, False, False]))
    assert torch.equal(pictures[1], torch.full((3, 5, 5), 0.5))
    for live in (0, 2, 3):
        assert pictures[live].min() == 0 and pictures[live].max() == 1


def test_an_all_zero_projection_is_plain_grey():
    assert torch.equal(stretched(torch.zeros(3, 4, 4)), torch.full((3, 4, 4), 0.5))


def test_curves_and_confusion_show_their_panels(tmp_path, monkeypatch):
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "val_loss": 1.2 / e, "val_acc": 0.4} for e in (1, 2, 3)
    ]
    panels = record_figure_panels(monkeypatch)
    plot_curves(history, str(tmp_path / "curves.png"))
    plot_confusion([[3, 1], [0, 4]], ["a", "b"], str(tmp_path / "confusion.png"))
    assert panels == [2, 2]  # loss and accuracy; the matrix and its colour bar
    for name in ("curves.png", "confusion.png"):
        assert_picture(tmp_path / name, min_size=(500, 400))


def saved_texts(monkeypatch, draw):
    """The texts of the figure(s) that `draw()` saves."""
    texts = record_figure_texts(monkeypatch)
    draw()
    return texts


def test_curves_label_their_axes_and_say_what_to_look_for(tmp_path, monkeypatch):
    history = [{"epoch": e, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4} for e in (1, 2)]
    texts = saved_texts(monkeypatch, lambda: plot_curves(history, str(tmp_path / "curves.png")))
    for text in ("epoch", "cross-entropy loss (mean per photo)", "top-1 accuracy (share of photos right)"):
        assert text in texts
    assert {"training photos", "validation photos"} <= set(texts)  # the legend names both curves
    assert any(text.startswith("What to look for:") for text in texts), texts


def test_curves_of_a_run_with_a_moving_average_show_its_training_weights_too(tmp_path, monkeypatch):
    history = [
        {
            "epoch": e,
            "train_loss": 1.0,
            "train_acc": 0.5,
            "val_loss": 1.1,
            "val_acc": 0.4,
            "training_weights_val_acc": 0.3,
        }
        for e in (1, 2)
    ]
    texts = saved_texts(monkeypatch, lambda: plot_curves(history, str(tmp_path / "curves.png")))
    assert "validation photos, unaveraged weights" in texts


def test_curves_of_more_than_five_classes_show_top5_accuracy(tmp_path, monkeypatch):
    history = [
        {"epoch": e, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4, "val_top5": 0.7}
        for e in (1, 2)
    ]
    texts = saved_texts(monkeypatch, lambda: plot_curves(history, str(tmp_path / "curves.png")))
    assert "validation, top-5" in texts


def test_a_confusion_matrix_of_many_classes_keeps_a_readable_size_without_cell_labels(tmp_path, monkeypatch):
    classes = [f"n{index:08d}" for index in range(300)]
    matrix = [[int(i == j) * 5 + (i + j) % 2 for j in range(300)] for i in range(300)]
    texts = saved_texts(monkeypatch, lambda: plot_confusion(matrix, classes, str(tmp_path / "confusion.png")))
    assert not set(classes) & set(texts) and "6" not in texts  # no class names, no cell counts
    assert any(text.startswith("300 classes, too many to label") for text in texts), texts
    assert_picture(tmp_path / "confusion.png", min_size=(500, 400))
    with Image.open(tmp_path / "confusion.png") as image:
        assert image.width <= 1500 and image.height <= 1500, image.size


def test_confusion_explains_its_colour_and_says_what_to_look_for(tmp_path, monkeypatch):
    texts = saved_texts(
        monkeypatch, lambda: plot_confusion([[3, 1], [0, 4]], ["a", "b"], str(tmp_path / "confusion.png"))
    )
    assert {"predicted class", "true class", "photos"} <= set(texts)  # "photos": the colour bar's label
    assert any(text.startswith("What to look for:") for text in texts), texts


def test_the_caption_lies_under_everything_else_and_is_saved_with_it(tmp_path):
    figure, axis = plt.subplots(layout="constrained")
    axis.set(xlabel="x label", title="title")
    caption(figure, "What to look for: this.")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    below = figure.texts[0].get_window_extent(renderer)
    assert below.y1 < axis.get_tightbbox(renderer).y0  # under the x label, not on it
    save_figure(figure, str(tmp_path / "captioned.png"))
    with Image.open(tmp_path / "captioned.png") as saved:
        height = saved.size[1]
    assert height > figure.get_size_inches()[1] * 120  # the tight box grew to take the caption in


def test_runs_are_named_by_their_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_name(str(tmp_path / "runs" / "zfnet" / "best.pth")) == "zfnet"
    assert run_name(os.path.join("runs", "zfnet", "best.pth")) == "zfnet"
    # Any other checkpoint: its path, relative to here.
    assert run_name(str(tmp_path / "runs" / "zfnet" / "last.pth")) == os.path.join("runs", "zfnet", "last.pth")
    paths = [str(tmp_path / "a" / "zfnet" / "best.pth"), str(tmp_path / "b" / "zfnet" / "best.pth")]
    # Two runs of the same name: the paths tell them apart.
    assert run_names(paths) == [os.path.join("a", "zfnet", "best.pth"), os.path.join("b", "zfnet", "best.pth")]
    assert run_names([paths[0], str(tmp_path / "alexnet" / "best.pth")]) == ["zfnet", "alexnet"]


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.01, 4, 20], {"0.01", "0.1", "1", "10"}),  # several powers of ten
        ([2, 4, 9], {"2", "5"}),  # within one, where matplotlib would write 2x10^0, 3x10^0...
    ],
)
def test_log_axes_show_plain_numbers(values, expected):
    figure, axis = plt.subplots()
    axis.semilogy(range(len(values)), values)
    plain_log_ticks(axis)
    figure.canvas.draw()
    low, high = axis.get_ylim()
    shown = [
        label.get_text()
        for axis_labels in (axis.get_yticklabels(), axis.get_yticklabels(minor=True))
        for label in axis_labels
        if label.get_text() and low <= label.get_position()[1] <= high
    ]
    assert expected <= set(shown) and all("$" not in text for text in shown), shown  # "$": matplotlib's 10^k
    plt.close(figure)
