"""Figures, drawn with matplotlib's headless backend and written atomically, and what every
figure shares so that it reads without the report: a caption saying what to look for, runs
named by their names, plain numbers on log axes."""

import os

import matplotlib

matplotlib.use("Agg")  # figures are always saved, never shown: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker, transforms  # noqa: E402

from zfnet.files import atomic_write  # noqa: E402
from zfnet.images import unnormalize  # noqa: E402


def save_figure(figure, path, dpi=120):
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(figure)


def caption(figure, text):
    """`text` under the whole figure, below its lowest labels: one line (wrapped when longer
    than the figure is wide) saying what to look for. Saving with a tight box takes it in.
    Legends outside the axes belong above or beside them: saving with a tight box would draw
    one at the figure's bottom over the caption."""
    below = transforms.offset_copy(figure.transFigure, fig=figure, y=-8, units="points")
    figure.text(0.5, 0, text, transform=below, ha="center", va="top", wrap=True, fontsize=10, style="italic")


def run_name(path):
    """How a figure names the run a checkpoint comes from: train.py's folder for its best.pth
    (the folder is the run: runs/zfnet/best.pth is "zfnet"), else the path relative to here."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.basename(folder) if name == "best.pth" else os.path.relpath(path)


def run_names(paths):
    """`run_name` of each path, or the paths relative to here when two runs would share a name."""
    names = [run_name(path) for path in paths]
    return names if len(set(names)) == len(names) else [os.path.relpath(path) for path in paths]


def plain_log_ticks(axis):
    """Label a log-scale y axis with plain numbers (0.01, 0.1, 1, 10) at 1, 2 and 5 times each
    power of ten, rather than matplotlib's 10^k and 4x10^0."""
    axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(ticker.NullFormatter())


def show_input(axis, x, preprocess):
    """Draw a network input (3, H, W) as the picture the network sees."""
    axis.imshow(unnormalize(x.cpu(), preprocess["mean"], preprocess["std"]).permute(1, 2, 0).numpy())
    axis.set_axis_off()


def robust_scale(projections):
    """The 99th percentile of the non-zero magnitudes of one or more projections (1.0 if all
    are zero)."""
    magnitudes = projections.detach().cpu().float().abs().flatten()
    magnitudes = magnitudes[magnitudes > 0]
    return magnitudes.quantile(0.99).item() if len(magnitudes) else 1.0


def stretched(projection, scale=None):
    """A deconvnet projection (3, H, W) as a picture in [0, 1]: grey where it is zero,
    contrast stretched the same way up and down so that `scale` (by default the projection's
    own robust_scale) reaches black or white (a few strong pixels would otherwise leave the
    rest invisible, as a plain min-max stretch does). One scale for several projections keeps
    their strengths comparable."""
    projection = projection.detach().cpu().float()
    return (0.5 + 0.5 * projection / (robust_scale(projection) if scale is None else scale)).clamp(0, 1)


def filter_pictures(weights, faded):
    """Filters (N, C, h, w) as pictures in [0, 1], each stretched to its own range (small
    filters would be invisible on a shared one), and the `faded` ones (a boolean mask) plain
    grey: stretched too, they would look as alive as the rest."""
    weights = weights.detach().cpu().float()
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    high = weights.amax(dim=(1, 2, 3), keepdim=True)
    pictures = (weights - low) / (high - low).clamp_min(1e-12)
    pictures[faded.cpu()] = 0.5
    return pictures


def show_projection(axis, projection):
    """Draw a deconvnet projection (3, H, W), stretched as `stretched` does."""
    axis.imshow(stretched(projection).permute(1, 2, 0).numpy())
    axis.set_axis_off()


def plot_curves(history, path):
    """Loss and accuracy of training and validation against epoch."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for side, label, style in (("train", "training photos", "-o"), ("val", "validation photos", "-s")):
        loss_axis.plot(epochs, [row[f"{side}_loss"] for row in history], style, markersize=4, label=label)
        accuracy_axis.plot(epochs, [row[f"{side}_acc"] for row in history], style, markersize=4, label=label)
    if "val_top5" in history[0]:  # more than 5 classes
        accuracy_axis.plot(epochs, [row["val_top5"] for row in history], "--s", markersize=3, label="validation, top-5")
    if "training_weights_val_acc" in history[0]:  # a run that keeps a moving average: its curves are the average's
        accuracy_axis.plot(
            epochs,
            [row["training_weights_val_acc"] for row in history],
            ":",
            color="grey",
            label="validation photos, unaveraged weights",
        )
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss (mean per photo)", title="loss")
    measure = "accuracy, top-1 unless marked" if "val_top5" in history[0] else "top-1 accuracy"
    accuracy_axis.set(xlabel="epoch", ylabel=f"{measure} (share of photos right)", title="accuracy", ylim=(0, 1))
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right" if axis is accuracy_axis else "best")
    caption(
        figure,
        "What to look for: validation loss flattening or rising while training loss keeps falling: overfitting.",
    )
    save_figure(figure, path)


LABELLED_CLASSES = 20  # beyond this a cell is too small for its count and name


def plot_confusion(matrix, classes, path, title="validation confusion matrix"):
    """A confusion matrix (rows: true class, columns: predicted) with its counts; beyond
    LABELLED_CLASSES classes (ImageNet's 1000) a picture of the counts alone, of fixed size."""
    labelled = len(classes) <= LABELLED_CLASSES
    size = max(5, 0.9 * len(classes) + 1.5) if labelled else 10
    figure, axis = plt.subplots(figsize=(size + 1, size), layout="constrained")
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, shrink=0.8, label="photos", ticks=ticker.MaxNLocator(integer=True))
    axis.set(xlabel="predicted class", ylabel="true class", title=title)
    if labelled:
        axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        axis.set_yticks(range(len(classes)), classes)
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axis.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
        look_for = "What to look for: large counts off the diagonal: classes mixed up."
    else:
        axis.set(xlabel="predicted class (index in class_indices.json)", ylabel="true class (index)")
        look_for = (
            f"{len(classes)} classes, too many to label: the axes count them in class_indices.json's order. "
            "What to look for: dark cells or blocks off the diagonal: classes mixed up."
        )
    caption(figure, look_for)
    save_figure(figure, path)
