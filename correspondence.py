"""Part correspondence, the paper's section 5.2 and table 7: does masking the same part of
different photos change the network's features in the same way?

    python correspondence.py                            # the shipped example, samples/correspondence.json
    python correspondence.py parts.json --draws 50 --seed 1 --out runs/my-parts

For each part, its box is painted grey (the normalisation mean) in every photo as the network
sees it (224 x 224), and for photo i, eps_i = x_i - x~_i is the change of its feature vector
at layer l (layer 5: rectified maps before pooling; layer 7: the second fully connected
layer). Delta_l = sum over pairs i < j of H(sign(eps_i), sign(eps_j)), H the Hamming
distance: the number of features whose change goes in different directions in two photos.
Lower means more consistent. The baseline masks a random box of the same size in each photo
(each photo's own box size, at a uniformly random position), averaged over --draws draws.

The parts file (JSON), paths relative to it, boxes in each photo's own pixels as
[left, top, right, bottom] with right and bottom excluded, the same parts in every photo:

    {"photos": [{"photo": "flower_photos/sunflowers/a.jpg",
                 "parts": {"disc": [75, 85, 162, 175], "petals": [22, 105, 68, 145]}}, ...]}

Prints the table and writes OUT/correspondence.csv and OUT/correspondence.png (the photos
with their boxes, and Delta per part against random boxes).
"""
import argparse
import csv
import io
import json
import math
import os
from itertools import combinations

import numpy as np
import torch
from matplotlib.patches import Rectangle
from tqdm import tqdm

from zfnet.errors import UserError, run_main
from zfnet.experiments import add_network_arguments, layer_features, load_network, require_layers, short_names
from zfnet.figures import plt, save_figure, show_input
from zfnet.files import atomic_write_text
from zfnet.images import normalize, open_rgb, resize_uint8

LAYERS = (5, 7)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="?", default="samples/correspondence.json",
                        help="JSON file of photos and part boxes (default: %(default)s)")
    add_network_arguments(parser)
    parser.add_argument("--draws", type=int, default=10, help="random-box draws to average (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random boxes (default: %(default)s)")
    parser.add_argument("--out", default="runs/correspondence",
                        help="folder for the CSV and figure (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="masked photos per forward pass (default: %(default)s)")
    return parser


def read_parts(path):
    """`[(photo path, {part: (left, top, right, bottom)})]` from the parts file, checked."""
    try:
        with open(path) as file:
            photos = json.load(file)["photos"]
        entries = [(entry["photo"], entry["parts"]) for entry in photos]
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a parts file ({type(error).__name__}: {error}); see --help") from None
    if len(entries) < 2:
        raise UserError(f"{path}: needs at least two photos to compare, has {len(entries)}")
    names = sorted(entries[0][1])
    folder = os.path.dirname(os.path.abspath(path))
    checked = []
    for photo, parts in entries:
        if not isinstance(parts, dict) or sorted(parts) != names or not names:
            raise UserError(f"{path}: {photo} has parts {sorted(parts) if isinstance(parts, dict) else parts}, "
                            f"the first photo {names}; every photo needs the same parts")
        for name, box in parts.items():
            if (not isinstance(box, list) or len(box) != 4 or not all(isinstance(value, int) for value in box)):
                raise UserError(f"{path}: {photo}, part {name}: a box is [left, top, right, bottom] in pixels, "
                                f"not {box}")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise UserError(f"{path}: {photo}, part {name}: empty box {box} (right and bottom must exceed "
                                f"left and top)")
        checked.append((os.path.join(folder, photo), {name: tuple(box) for name, box in parts.items()}))
    return checked


def input_box(box, photo_size, side):
    """A box in the photo's own pixels as a box `(top, left, height, width)` of the
    network's `side` x `side` input, which stretches the photo; rounded outwards."""
    width, height = photo_size
    left, top, right, bottom = box
    if left < 0 or top < 0 or right > width or bottom > height:
        raise ValueError(f"box {list(box)} reaches outside the {width} x {height} photo")
    top_in, left_in = math.floor(top * side / height), math.floor(left * side / width)
    return top_in, left_in, math.ceil(bottom * side / height) - top_in, math.ceil(right * side / width) - left_in


def masked(x, box):
    """Input `x` with `box` (top, left, height, width) painted with the normalisation mean (0)."""
    top, left, height, width = box
    copy = x.clone()
    copy[:, top:top + height, left:left + width] = 0
    return copy


def delta(changes):
    """Sum over pairs of photos of the Hamming distance between the signs of their feature changes."""
    signs = torch.sign(changes)
    return sum(int((signs[i] != signs[j]).sum()) for i, j in combinations(range(len(signs)), 2))


def random_place(box, side, generator):
    """A box the size of `box` (top, left, height, width) at a uniformly random place in the input."""
    _, _, height, width = box
    top = int(torch.randint(0, side - height + 1, (), generator=generator))
    left = int(torch.randint(0, side - width + 1, (), generator=generator))
    return top, left, height, width


def measure(model, inputs, boxes, draws, generator, batch_size):
    """`{(part, masks, layer): [Delta per draw]}` for masks "part" (each photo's own box of
    the part) and "random" (boxes of the same sizes at random places, `draws` times), and
    the number of features of each layer."""
    side = inputs.shape[-1]
    mask_sets = {}
    for part in boxes[0]:
        mask_sets[part, "part"] = [[photo[part] for photo in boxes]]
        mask_sets[part, "random"] = [[random_place(photo[part], side, generator) for photo in boxes]
                                     for _ in range(draws)]
    original = layer_features(model, inputs, LAYERS, batch_size, "photos")
    results = {}
    for (part, masks), drawn in tqdm(mask_sets.items(), desc="masks", unit="set"):
        grey = torch.stack([masked(x, box) for chosen in drawn for x, box in zip(inputs, chosen)])
        features = layer_features(model, grey, LAYERS, batch_size, f"{part} ({masks})")
        for layer in LAYERS:
            results[part, masks, layer] = [delta(original[layer] - changed)
                                           for changed in features[layer].split(len(inputs))]
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
    lines = [f"Delta = sum over the {pairs} pairs of {count} photos of the Hamming distance between the signs of "
             f"their feature changes (lower = more consistent); random: mean +- std over {draws} draws.",
             f"Features: {', '.join(f'layer {layer} {sizes[layer]}' for layer in LAYERS)}.", header]
    for row in rows:
        label = row["part"] if row["masks"] == "part" else f"random ({row['part']} size)"
        cells = []
        for layer in LAYERS:
            spread = f" +- {row[f'layer{layer}_delta_std']:.0f}" if row["masks"] == "random" else ""
            cells.append(f"{row[f'layer{layer}_delta']:.0f}{spread} ({row[f'layer{layer}_share']:.3f})")
        lines.append(f"{label:<22}" + "".join(f"{cell:>38}" for cell in cells))
    return rows, "\n".join(lines)


def write_csv(rows, path):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{key: f"{value:.6g}" if isinstance(value, float) else value for key, value in row.items()}
                      for row in rows])
    atomic_write_text(path, text.getvalue())


def plot(inputs, boxes, labels, rows, preprocess, path):
    parts = list(boxes[0])
    figure = plt.figure(figsize=(2.4 * len(inputs), 6), layout="constrained")
    photo_axes, chart_axes = figure.subfigures(2, 1, height_ratios=[1, 1.1])
    part_colours = dict(zip(parts, plt.get_cmap("tab10").colors))
    for axis, x, photo_boxes, label in zip(photo_axes.subplots(1, len(inputs)), inputs, boxes, labels):
        show_input(axis, x, preprocess)
        for part, (top, left, height, width) in photo_boxes.items():
            axis.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, lw=2,
                                     edgecolor=part_colours[part], label=part))
        axis.set_title(label, fontsize=8)
    photo_axes.axes[0].legend(loc="lower left", fontsize=8)
    for axis, layer in zip(chart_axes.subplots(1, len(LAYERS)), LAYERS):
        positions = np.arange(len(parts))
        for offset, masks, label in ((-0.2, "part", "the part"), (0.2, "random", "random boxes of the same size")):
            chosen = [row for part in parts for row in rows if row["part"] == part and row["masks"] == masks]
            # Only the random boxes vary from draw to draw: they alone get error bars (one std).
            spread = [row[f"layer{layer}_share_std"] for row in chosen] if masks == "random" else None
            axis.bar(positions + offset, [row[f"layer{layer}_share"] for row in chosen], width=0.4, yerr=spread,
                     capsize=4, label=label)
        axis.set_xticks(positions, parts)
        axis.set(title=f"layer {layer}", ylabel="Delta / (pairs x features)")
        axis.legend(fontsize=8)
    save_figure(figure, path, dpi=80)


def main(argv=None):
    arguments = get_parser().parse_args(argv)
    if arguments.draws < 1 or arguments.batch_size < 1:
        raise UserError("--draws and --batch-size must be at least 1")
    entries = read_parts(arguments.parts)
    model, checkpoint = load_network(arguments)
    require_layers(model, LAYERS, arguments.checkpoint)
    preprocess = checkpoint["preprocess"]
    side = preprocess["input_size"]

    labels = short_names([photo for photo, _ in entries])
    inputs, boxes = [], []
    for photo, parts in entries:
        image = open_rgb(photo)
        try:
            boxes.append({name: input_box(box, image.size, side) for name, box in parts.items()})
        except ValueError as error:
            raise UserError(f"{arguments.parts}: {photo}: {error}") from None
        inputs.append(normalize(resize_uint8(image, side), preprocess["mean"], preprocess["std"]))
    inputs = torch.stack(inputs)

    generator = torch.Generator().manual_seed(arguments.seed)
    results, sizes = measure(model, inputs, boxes, arguments.draws, generator, arguments.batch_size)
    rows, text = table(results, list(boxes[0]), sizes, len(inputs), arguments.draws)
    write_csv(rows, os.path.join(arguments.out, "correspondence.csv"))
    plot(inputs, boxes, [labels[photo] for photo, _ in entries], rows, preprocess,
         os.path.join(arguments.out, "correspondence.png"))
    print(text)
    print(f"table and figure in {arguments.out}/")


if __name__ == "__main__":
    run_main(main)
