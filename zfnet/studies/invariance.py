"""Invariance to translation, scale and rotation (the paper's figure 5): transformed copies of
each photo, the distances of their features from the original's, the probability of the
true class, and what these say about each of the paper's findings.

invariance.py is the command line over `default_photos`, `measure_photos`, `plot`,
`table_rows` and `findings`.
"""

import argparse
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from zfnet.data import scan_classes
from zfnet.errors import UserError
from zfnet.figures import caption, plt, save_figure
from zfnet.studies.common import judged_class, layer_features

LAYERS = (1, 7)
TRANSFORMATIONS = ("translation", "scale", "rotation")
IDENTITY = {"translation": 0.0, "scale": 1.0, "rotation": 0.0}
UNITS = {"translation": "vertical shift (pixels)", "scale": "scale factor", "rotation": "rotation (degrees)"}
# A line explaining this share of a curve's variance counts as "roughly linear".
LINEAR_R2 = 0.9
# A photo counts as rotation invariant when its class stays the most probable at this share of angles.
INVARIANT_SHARE = 0.9


# Every step is a transformed copy of each photo, and a photo's copies are held in memory at once.
MAX_STEPS = 1000
OUTPUTS = ("invariance.png", "invariance.csv", "summary.txt")


def steps(text):
    """'START:STOP:STEP' as the list of values from START to STOP (included). An argparse type:
    it refuses numbers that are not finite, a STEP that does not advance, a reversed range
    (STOP below START: an empty one) and more than MAX_STEPS values."""
    try:
        start, stop, step = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP:STEP, got {text!r}") from None
    if not all(math.isfinite(value) for value in (start, stop, step)):
        raise argparse.ArgumentTypeError(f"{text!r}: START, STOP and STEP must be finite numbers")
    if step <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: STEP must be above 0")
    if stop < start:
        raise argparse.ArgumentTypeError(
            f"{text!r}: STOP is below START, which leaves no steps; write the range from low to high"
        )
    # Steps after START; the tolerance keeps STOP despite rounding. It may overflow to inf,
    # which the limit refuses too.
    span = (stop - start) / step + 1e-9
    if not span < MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{text!r}: more than {MAX_STEPS} steps; take a larger STEP")
    count = math.floor(span) + 1
    return [round(start + index * step, 10) for index in range(count)]


def scale_steps(text):
    """`steps` of scale factors, all above 0: a factor of 0 shrinks the photo to nothing, and
    a negative one would mirror it."""
    amounts = steps(text)
    if amounts[0] <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: scale factors must be above 0, this range starts at {amounts[0]:g}"
        )
    return amounts


def check_translation(amounts, input_size):
    """UserError when a shift of `amounts` moves the photo wholly out of the `input_size`-pixel
    input, leaving nothing but grey."""
    farthest = max(abs(amount) for amount in amounts)
    if farthest >= input_size:
        raise UserError(
            f"--translate reaches {farthest:g} pixels: the photo would leave this network's "
            f"{input_size}-pixel input entirely"
        )


def default_photos(images, classes):
    """The first photo (by name) of each of `classes` in `images`, a folder with one
    sub-folder per class."""
    found = scan_classes(images)
    missing = [name for name in classes if name not in found]
    if missing:
        raise UserError(
            f"no photos in {os.path.join(images, missing[0])}; give photos or point --images at a "
            f"folder with one sub-folder per class ({', '.join(classes)})"
        )
    return [found[name][0] for name in classes]


def transform(x, kind, amounts):
    """Copies of input `x` (3, S, S), one per amount, translated, scaled or rotated; the area
    they uncover is 0 (the normalisation mean)."""
    amounts = torch.tensor(amounts, dtype=x.dtype)
    theta = torch.zeros(len(amounts), 2, 3, dtype=x.dtype)
    # theta maps each output position to the input position it samples, in [-1, 1] coordinates.
    if kind == "translation":
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 1, 2] = -2 * amounts / x.shape[1]
    elif kind == "scale":
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / amounts
    else:
        # Image rows grow downwards, so an anticlockwise turn on screen samples
        # input (cos a * u - sin a * v, sin a * u + cos a * v) for output (u, v).
        radians = torch.deg2rad(amounts % 360)  # whole turns exactly: sin(2 pi) is not 0 in floats
        theta[:, 0, 0] = theta[:, 1, 1] = torch.cos(radians)
        theta[:, 0, 1] = -torch.sin(radians)
        theta[:, 1, 0] = torch.sin(radians)
    grid = F.affine_grid(theta, (len(amounts), *x.shape), align_corners=False)
    return F.grid_sample(
        x.expand(len(amounts), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def measure(model, x, ranges, target, batch_size):
    """One row per transformed copy of input `x`: the transformation and its amount, the
    distances of its layer-1 and layer-7 features from the original's, the probability of
    class `target` and the predicted class."""
    inputs = torch.cat([x[None]] + [transform(x, kind, ranges[kind]) for kind in TRANSFORMATIONS])
    features = layer_features(model, inputs, LAYERS, batch_size, "transformed copies")
    with torch.inference_mode():
        # Layer 7 is the last layer before the classifier: its features give the probabilities.
        probabilities = model.classifier(features[7].to(next(model.parameters()).device)).softmax(1).cpu()
    distances = {layer: (features[layer][1:] - features[layer][0]).norm(dim=1) for layer in LAYERS}
    settings = [(kind, amount) for kind in TRANSFORMATIONS for amount in ranges[kind]]
    return [
        {
            "transformation": kind,
            "amount": amount,
            "layer1_distance": float(distances[1][index]),
            "layer7_distance": float(distances[7][index]),
            "true_class_probability": float(probabilities[index + 1, target]),
            "predicted_class": int(probabilities[index + 1].argmax()),
        }
        for index, (kind, amount) in enumerate(settings)
    ]


def measure_photos(model, inputs, labels, classes, class_name, ranges, batch_size):
    """`measure` for every photo of `inputs` ({path: input}), keyed by its label in `labels`;
    returns the rows, each photo's true class (`class_name`, else as `judged_class` finds
    it) and its class probabilities before any transformation."""
    device = next(model.parameters()).device
    results, targets, originals = {}, {}, {}
    for path, x in tqdm(inputs.items(), desc="photos", unit="photo"):
        with torch.inference_mode():
            probabilities = model(x[None].to(device)).softmax(1)[0].cpu()
        label = labels[path]
        originals[label] = probabilities
        targets[label] = judged_class(path, classes, class_name, probabilities)
        results[label] = measure(model, x, ranges, targets[label], batch_size)
    return results, targets, originals


def plot(results, targets, classes, path):
    """Figure 5: a row per transformation; columns layer-1 distance, layer-7 distance and
    probability of the true class; a curve (and colour) per photo."""
    figure, axes = plt.subplots(3, 3, figsize=(13, 10.5), layout="constrained")
    columns = [
        ("layer1_distance", "layer-1 distance", "distance from the original's\nlayer-1 features (Euclidean)"),
        ("layer7_distance", "layer-7 distance", "distance from the original's\nlayer-7 features (Euclidean)"),
        ("true_class_probability", "probability of the true class", "P(true class)"),
    ]
    for row, kind in enumerate(TRANSFORMATIONS):
        for column, (field, title, ylabel) in enumerate(columns):
            axis = axes[row, column]
            for label, rows in results.items():
                rows = [values for values in rows if values["transformation"] == kind]
                axis.plot(
                    [values["amount"] for values in rows],
                    [values[field] for values in rows],
                    "-o",
                    markersize=3,
                    label=f"{label} ({classes[targets[label]]})",
                )
            axis.set(xlabel=UNITS[kind], ylabel=ylabel, title=f"{kind}: {title}")
            axis.grid(alpha=0.3)
        axes[row, 2].set_ylim(0, 1)
    # One legend for every plot, above them: in a plot it would hide curves.
    figure.legend(
        *axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=3, title="photo (true class)"
    )
    caption(
        figure,
        "What to look for: layer 1 jumps at the smallest change while layer 7 moves more gently; "
        "P(true class) stays high under shifts and scaling, less so under rotation.",
    )
    save_figure(figure, path, dpi=100)


def table_rows(results, targets, classes):
    """Every measurement as a row of invariance.csv, classes by name."""
    return [
        {
            "photo": label,
            "true_class": classes[targets[label]],
            "transformation": values["transformation"],
            "amount": values["amount"],
            "layer1_distance": values["layer1_distance"],
            "layer7_distance": values["layer7_distance"],
            "true_class_probability": values["true_class_probability"],
            "predicted_class": classes[values["predicted_class"]],
        }
        for label, rows in results.items()
        for values in rows
    ]


def closeness(kind, amount):
    """How far a transformation is from leaving the photo as it is (0 for the identity),
    rounded so that steps the same distance away on either side compare equal."""
    if kind == "rotation":
        turn = abs(amount) % 360
        return round(min(turn, 360 - turn), 9)
    return round(abs(amount - IDENTITY[kind]), 9)


def small_step_share(rows, field):
    """The change at the step nearest the original, as a share of the largest change over
    the range: near 1 when a small transformation already changes the features fully."""
    moved = [values for values in rows if closeness(values["transformation"], values["amount"]) > 0]
    nearest = min(closeness(values["transformation"], values["amount"]) for values in moved)
    small = [values[field] for values in moved if closeness(values["transformation"], values["amount"]) == nearest]
    largest = max(values[field] for values in moved)
    return np.mean(small) / largest if largest > 0 else float("nan")


def line_fit(rows, field):
    """R2 of a straight line through the distance against the amount, on each side of the
    original (the original included), averaged over the two sides."""
    fits = []
    for side in (-1, 1):
        part = [values for values in rows if side * (values["amount"] - IDENTITY[values["transformation"]]) >= 0]
        if len(part) < 3:  # two points always lie on a line
            continue
        amounts = np.array([values["amount"] for values in part])
        distances = np.array([values[field] for values in part])
        total = ((distances - distances.mean()) ** 2).sum()
        if total > 0:
            slope, intercept = np.polyfit(amounts, distances, 1)
            fits.append(1 - ((distances - (slope * amounts + intercept)) ** 2).sum() / total)
    return np.mean(fits) if fits else float("nan")


def findings(results, targets, originals, classes):
    """Lines that say, from the measurements, whether each of the paper's findings holds;
    `originals` holds each photo's class probabilities before any transformation."""

    def mean_over_photos(measure_rows, kind, field):
        measured = [
            measure_rows([values for values in rows if values["transformation"] == kind], field)
            for rows in results.values()
        ]
        measured = [value for value in measured if not np.isnan(value)]
        # Too few amounts on a side leave nothing to fit: nan, printed as such.
        return np.mean(measured) if measured else float("nan")

    shares = {
        (kind, layer): mean_over_photos(small_step_share, kind, f"layer{layer}_distance")
        for kind in TRANSFORMATIONS
        for layer in LAYERS
    }
    holds = [kind for kind in TRANSFORMATIONS if shares[kind, 1] > shares[kind, 7]]
    detail = "; ".join(f"{kind} {shares[kind, 1]:.0%} vs {shares[kind, 7]:.0%}" for kind in TRANSFORMATIONS)
    verdict = (
        "as in the paper, small transformations change layer 1 a lot and layer 7 much less"
        if len(holds) == len(TRANSFORMATIONS)
        else f"as in the paper only for {', '.join(holds) or 'none'}"
    )
    lines = [
        f"Small transformations: the step nearest the original gives layer 1 this share of its largest "
        f"change over the range, layer 7 that share ({detail}; mean over photos): {verdict}."
    ]

    fits = {
        (kind, layer): mean_over_photos(line_fit, kind, f"layer{layer}_distance")
        for kind in ("translation", "scale")
        for layer in LAYERS
    }
    linear = [kind for kind in ("translation", "scale") if fits[kind, 7] >= LINEAR_R2]
    detail = "; ".join(
        f"{kind} R2 = {fits[kind, 7]:.2f} (layer 1: {fits[kind, 1]:.2f})" for kind in ("translation", "scale")
    )
    verdict = {
        2: "roughly linear in both, as in the paper",
        1: f"roughly linear only in {''.join(linear)}",
        0: "not roughly linear in either, unlike the paper",
    }[len(linear)]
    lines.append(
        f"Linearity: a straight line through each side of the layer-7 distance curve explains {detail}, "
        f"mean over photos: layer 7 is {verdict} (R2 >= {LINEAR_R2} counts as roughly linear)."
    )

    judged = {"invariant": [], "not invariant": [], "misclassified even unrotated": []}
    for label, rows in results.items():
        name, target = classes[targets[label]], targets[label]
        turned = [
            values
            for values in rows
            if values["transformation"] == "rotation" and closeness("rotation", values["amount"]) > 0
        ]
        probabilities = [values["true_class_probability"] for values in turned]
        kept = sum(values["predicted_class"] == target for values in turned)
        lines.append(
            f"Rotation, {label}: P({name}) {originals[label][target]:.2f} unrotated, "
            f"{min(probabilities):.2f} to {max(probabilities):.2f} turned; {name} is the most probable "
            f"class at {kept} of {len(turned)} angles."
        )
        if int(originals[label].argmax()) != target:
            judged["misclassified even unrotated"].append(label)
        elif kept >= INVARIANT_SHARE * len(turned):
            judged["invariant"].append(label)
        else:
            judged["not invariant"].append(label)
    lines.append(
        f"Rotation invariance (the true class stays the most probable at >= {INVARIANT_SHARE:.0%} of the "
        f"angles): "
        + "; ".join(f"{verdict}: {', '.join(labels) or 'none'}" for verdict, labels in judged.items())
        + "."
    )
    return lines
