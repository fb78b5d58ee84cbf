"""Figures, drawn with matplotlib's headless backend and written atomically."""

import matplotlib

matplotlib.use("Agg")  # figures are always saved, never shown: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from zfnet.files import atomic_write  # noqa: E402
from zfnet.images import unnormalize  # noqa: E402


def save_figure(figure, path, dpi=120):
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(figure)


def show_input(axis, x, preprocess):
    """Draw a network input (3, H, W) as the picture the network sees."""
    axis.imshow(unnormalize(x.cpu(), preprocess["mean"], preprocess["std"]).permute(1, 2, 0).numpy())
    axis.set_axis_off()


def stretched(projection):
    """A deconvnet projection (3, H, W) as a picture in [0, 1]: grey where it is zero,
    contrast stretched the same way up and down so that the 99th percentile of its non-zero
    magnitudes reaches black or white (a few strong pixels would otherwise leave the rest
    invisible, as a plain min-max stretch does)."""
    projection = projection.detach().cpu().float()
    magnitudes = projection.abs().flatten()
    magnitudes = magnitudes[magnitudes > 0]
    scale = magnitudes.quantile(0.99).item() if len(magnitudes) else 1.0
    return (0.5 + 0.5 * projection / scale).clamp(0, 1)


def show_projection(axis, projection):
    """Draw a deconvnet projection (3, H, W), stretched as `stretched` does."""
    axis.imshow(stretched(projection).permute(1, 2, 0).numpy())
    axis.set_axis_off()


def plot_curves(history, path):
    """Loss and accuracy of training and validation against epoch."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for side, style in (("train", "-o"), ("val", "-s")):
        loss_axis.plot(epochs, [row[f"{side}_loss"] for row in history], style, label=side)
        accuracy_axis.plot(epochs, [row[f"{side}_acc"] for row in history], style, label=side)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    save_figure(figure, path)


def plot_confusion(matrix, classes, path, title="validation confusion matrix"):
    """A confusion matrix (rows: true class, columns: predicted) with its counts."""
    size = max(4, 0.9 * len(classes) + 1.5)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set(xlabel="predicted class", ylabel="true class", title=title)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axis.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    save_figure(figure, path)
