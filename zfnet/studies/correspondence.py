"""Part correspondence (the paper's section 5.2 and table 7): masking the same part of
different photos, and how consistently that changes their features.

Boxes are [left, top, right, bottom] (PIL's order), right and bottom excluded: in the parts
file in each photo's own pixels, everywhere else in pixels of the network's input.

correspondence.py is the command line over `read_parts`, `load_photos`, `measure`, `table`
and `plot`.
"""

import json
import math
import os
from itertools import chain, combinations

import numpy as np
import torch
from matplotlib.patches import Patch, Rectangle
from tqdm import tqdm

from zfnet.errors import UserError
from zfnet.figures import caption, plt, save_figure, show_input
from zfnet.images import load_input, open_rgb
from zfnet.studies.common import layer_features

LAYERS = (5, 7)
OUTPUTS = ("correspondence.csv", "correspondence.png")


def read_parts(path):
    """`[(photo path, {part: (left, top, right, bottom)})]` from the parts file, checked;
    photo paths are relative to the file's folder. UserError naming the file and the entry
    for anything that is not as --help describes it."""
    try:
        with open(path) as file:
            content = json.load(file)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        raise UserError(f"{path}: not a parts file ({type(error).__name__}: {error}); see --help") from None
    photos = content.get("photos") if isinstance(content, dict) else None
    if not isinstance(photos, list):
        raise UserError(f'{path}: not a parts file (it needs a list "photos"); see --help')
    if len(photos) < 2:
        raise UserError(f"{path}: needs at least two photos to compare, has {len(photos)}")
    entries = [_checked_entry(path, number, entry) for number, entry in enumerate(photos, 1)]
    names = sorted(entries[0][1])
    for number, (photo, parts) in enumerate(entries, 1):
        if sorted(parts) != names:
            raise UserError(
                f"{_entry_name(path, number, photo)} has parts {sorted(parts)}, the first photo "
                f"{names}; every photo needs the same parts"
            )
    return [(os.path.join(os.path.dirname(path), photo), parts) for photo, parts in entries]


def _entry_name(path, number, photo):
    return f"{path}: photo {number} ({photo})"


def _checked_entry(path, number, entry):
    """The photo and parts of the parts file's `number`th entry, each box checked (see `box_problem`)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("photo"), str) or not entry["photo"]:
        raise UserError(
            f'{path}: photo {number}: an entry is {{"photo": PATH, "parts": {{...}}}}, not {json.dumps(entry)}'
        )
    photo, parts = entry["photo"], entry.get("parts")
    if not isinstance(parts, dict) or not parts:
        raise UserError(
            f'{_entry_name(path, number, photo)}: "parts" must name at least one part and its box, '
            f"not {json.dumps(parts)}"
        )
    for name, box in parts.items():
        problem = box_problem(box)
        if problem:
            raise UserError(f"{_entry_name(path, number, photo)}, part {name}: {problem}")
    return photo, {name: tuple(box) for name, box in parts.items()}


def box_problem(box):
    """What makes `box`, as read from a parts file, no box in a photo's pixels, or None."""
    if not (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(value, int) and not isinstance(value, bool) for value in box)
    ):
        return f"a box is [left, top, right, bottom] in whole pixels, not {json.dumps(box)}"
    left, top, right, bottom = box
    if min(box) < 0:
        return f"box {box} has a negative coordinate; pixels count from 0"
    if right < left or bottom < top:
        return f"reversed box {box} (right and bottom must exceed left and top)"
    if right == left or bottom == top:
        return f"empty box {box} (right and bottom must exceed left and top)"
    return None


def input_box(box, photo_size, side):
    """A box in the photo's own pixels as the box of the network's `side` x `side` input,
    which stretches the photo; rounded outwards."""
    width, height = photo_size
    left, top, right, bottom = box
    if left < 0 or top < 0 or right > width or bottom > height:
        raise ValueError(f"box {list(box)} reaches outside the {width} x {height} photo")
    return (
        math.floor(left * side / width),
        math.floor(top * side / height),
        math.ceil(right * side / width),
        math.ceil(bottom * side / height),
    )


def load_photos(entries, preprocess, parts_path):
    """The photos of `entries` (as `read_parts` gives them) as network inputs (N, 3, S, S),
    and each photo's part boxes in input pixels; UserError for a box outside its photo."""
    inputs, boxes = [], []
    for number, (photo, parts) in enumerate(entries, 1):
        # The boxes are in the upright photo's pixels: its size is known once it is decoded.
        size = open_rgb(photo).size
        photo_boxes = {}
        for name, box in parts.items():
            try:
                photo_boxes[name] = input_box(box, size, preprocess["input_size"])
            except ValueError as error:
                written = os.path.relpath(photo, os.path.dirname(parts_path) or os.curdir)  # as in the file
                raise UserError(f"{_entry_name(parts_path, number, written)}, part {name}: {error}") from None
        boxes.append(photo_boxes)
        inputs.append(load_input(photo, preprocess))
    return torch.stack(inputs), boxes


def masked(x, box):
    """Input `x` with `box` (left, top, right, bottom) painted with the normalisation mean (0)."""
    left, top, right, bottom = box
    copy = x.clone()
    copy[:, top:bottom, left:right] = 0
    return copy


def delta(changes):
    """Sum over pairs of photos of the Hamming distance between the signs of their feature changes."""
    signs = torch.sign(changes)
    return sum(int((signs[i] != signs[j]).sum()) for i, j in combinations(range(len(signs)), 2))


def random_place(box, side, generator):
    """A box the size of `box` at a uniformly random place in the `side` x `side` input."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    top = int(torch.randint(0, side - height + 1, (), generator=generator))
    left = int(torch.randint(0, side - width + 1, (), generator=generator))
    return left, top, left + width, top + height


def random_draws(own, side, draws, per_pass, generator):
    """`draws` sets of boxes the sizes of `own` (one per photo) at random places, as lists of
    at most `per_pass` sets."""
    for start in range(0, draws, per_pass):
        yield [[random_place(box, side, generator) for box in own] for _ in range(min(per_pass, draws - start))]


def deltas(model, inputs, original, mask_sets, batch_size, description):
    """`{layer: [Delta per set]}` for sets of boxes (one per photo) painted grey on `inputs`,
    against the features `original` of the unmasked inputs."""
    grey = torch.stack([masked(x, box) for chosen in mask_sets for x, box in zip(inputs, chosen)])
    features = layer_features(model, grey, LAYERS, batch_size, description)
    return {
        layer: [delta(original[layer] - changed) for changed in features[layer].split(len(inputs))] for layer in LAYERS
    }


def measure(model, inputs, boxes, draws, generator, batch_size):
    """`{(part, masks, layer): [Delta per draw]}` for masks "part" (each photo's own box of
    the part) and "random" (boxes of the same sizes at random places, `draws` times), and
    the number of features of each layer."""
    side = inputs.shape[-1]
    # The random draws go through the network about a batch at a time, so that many draws
    # never hold all their masked photos and features in memory at once.
    per_pass = max(1, batch_size // len(inputs))
    original = layer_features(model, inputs, LAYERS, batch_size, "photos")
    results = {}
    for part in tqdm(boxes[0], desc="parts", unit="part"):
        own = [photo[part] for photo in boxes]
        passes = chain(
            [("part", [own])], (("random", drawn) for drawn in random_draws(own, side, draws, per_pass, generator))
        )
        for masks, mask_sets in passes:
            for layer, values in deltas(model, inputs, original, mask_sets, batch_size, f"{part} ({masks})").items():
                results.setdefault((part, masks, layer), []).extend(values)
    return results, {layer: original[layer].shape[1] for layer in LAYERS}


def table(results, parts, sizes, count, draws):
    """The measurements as rows of the paper's table 7, and as text."""
    pairs = count * (count - 1) // 2
    rows = []
    for part in parts:
        for masks in ("part", "random"):
            row = {"part": part, "masks": masks, "draws": 1 if masks == "part" else draws}
            for layer in LAYERS:
                values = np.array(results[part, masks, layer], dtype=float)
                row[f"layer{layer}_delta"] = values.mean()
                row[f"layer{layer}_delta_std"] = values.std()
                # The share of features whose changes differ in sign, averaged over pairs: comparable across layers.
                row[f"layer{layer}_share"] = values.mean() / (pairs * sizes[layer])
                row[f"layer{layer}_share_std"] = values.std() / (pairs * sizes[layer])
            rows.append(row)
    header = f"{'masked':<22}" + "".join(f"{f'layer {layer}: Delta (share of signs)':>38}" for layer in LAYERS)
    lines = [
        f"Delta = sum over the {pairs} pairs of {count} photos of the Hamming distance between the signs of "
        f"their feature changes (lower = more consistent); random: mean +- std over {draws} draws.",
        f"Features: {', '.join(f'layer {layer} {sizes[layer]}' for layer in LAYERS)}.",
        header,
    ]
    for row in rows:
        label = row["part"] if row["masks"] == "part" else f"random ({row['part']} size)"
        cells = []
        for layer in LAYERS:
            spread = f" +- {row[f'layer{layer}_delta_std']:.0f}" if row["masks"] == "random" else ""
            cells.append(f"{row[f'layer{layer}_delta']:.0f}{spread} ({row[f'layer{layer}_share']:.3f})")
        lines.append(f"{label:<22}" + "".join(f"{cell:>38}" for cell in cells))
    return rows, "\n".join(lines)


def csv_rows(rows):
    """`table`'s rows with their measurements to six significant digits, for the CSV."""
    return [{key: f"{value:.6g}" if isinstance(value, float) else value for key, value in row.items()} for row in rows]


def plot(inputs, boxes, labels, rows, preprocess, path):
    """The photos with their part boxes above, Delta per part against random boxes below.
    A colour per part, in the photos and in the bars; the fill tells the part's own boxes
    (solid) from random ones (hatched)."""
    parts = list(boxes[0])
    draws = next(row["draws"] for row in rows if row["masks"] == "random")
    figure = plt.figure(figsize=(max(10, 2.4 * len(inputs)), 6.5), layout="constrained")
    photo_axes, chart_axes = figure.subfigures(2, 1, height_ratios=[1, 1.2])
    part_colours = dict(zip(parts, plt.get_cmap("tab10").colors))
    for axis, x, photo_boxes, label in zip(photo_axes.subplots(1, len(inputs)), inputs, boxes, labels):
        show_input(axis, x, preprocess)
        for part, (left, top, right, bottom) in photo_boxes.items():
            axis.add_patch(
                Rectangle(
                    (left - 0.5, top - 0.5), right - left, bottom - top, fill=False, lw=2, edgecolor=part_colours[part]
                )
            )
        axis.set_title(label, fontsize=8)
    fills = {
        "part": ({}, "each photo's own box of the part"),
        "random": ({"hatch": "//"}, f"random boxes of the same size (mean ± 1 std over {draws} draws)"),
    }
    legend = [Patch(facecolor=part_colours[part], label=f"{part} (boxes in the photos)") for part in parts]
    legend += [Patch(facecolor="white", edgecolor="dimgrey", label=text, **fill) for fill, text in fills.values()]
    # Above the photos: a legend below them would meet the caption when the figure is saved.
    photo_axes.legend(handles=legend, loc="outside upper center", ncol=2, fontsize=9, title="colour: part; fill: masks")
    positions, colours = np.arange(len(parts)), [part_colours[part] for part in parts]
    for axis, layer in zip(chart_axes.subplots(1, len(LAYERS)), LAYERS):
        for offset, (masks, (fill, _)) in zip((-0.2, 0.2), fills.items()):
            chosen = [row for part in parts for row in rows if row["part"] == part and row["masks"] == masks]
            # Only the random boxes vary from draw to draw: they alone get error bars (one std).
            spread = [row[f"layer{layer}_share_std"] for row in chosen] if masks == "random" else None
            axis.bar(
                positions + offset,
                [row[f"layer{layer}_share"] for row in chosen],
                width=0.4,
                yerr=spread,
                capsize=4,
                # Hatched bars: white with lines in the part's colour.
                color=colours if masks == "part" else "white",
                edgecolor=colours,
                **fill,
            )
        axis.set_xticks(positions, parts)
        axis.set(
            title=f"layer {layer} (lower = changed more alike)",
            xlabel="masked part",
            ylabel="share of features changed\nin opposite directions",
        )
        axis.grid(axis="y", alpha=0.3)
    caption(
        figure,
        "What to look for: solid bars below hatched ones: masking the same part changes the photos' features "
        "more alike than random boxes do.",
    )
    save_figure(figure, path, dpi=80)
