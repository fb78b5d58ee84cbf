import torch

from zfnet.figures import plot_confusion, plot_curves, stretched


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


def test_an_all_zero_projection_is_plain_grey():
    assert torch.equal(stretched(torch.zeros(3, 4, 4)), torch.full((3, 4, 4), 0.5))


def test_curves_and_confusion_are_written_as_png(tmp_path):
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "val_loss": 1.2 / e, "val_acc": 0.4} for e in (1, 2, 3)
    ]
    plot_curves(history, str(tmp_path / "curves.png"))
    plot_confusion([[3, 1], [0, 4]], ["a", "b"], str(tmp_path / "confusion.png"))
    for name in ("curves.png", "confusion.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
