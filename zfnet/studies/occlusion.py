"""Occlusion sensitivity (the paper's section 4.2), exact and fast.

A grey square over the input (grey = the normalisation mean, 0 in the network's input
space) changes a convolution's or a pooling's output only where that output's window meets
the square: its reach. Through the layers the reach grows, but for a 50-pixel square it
stays a small part of layers 1 and 2. So for every square position we carry, layer after
layer, only the window of each map that the square can change, computed from the window
below it with the unoccluded activations around it; everything outside the window is the
unoccluded photo's, computed once. Positions run in batches of equal-sized windows. The
result equals occluding one position at a time and running the whole network (the tests
check this), at a fraction of the arithmetic.

Square positions: the square starts at the top-left corner and moves by the stride until
it has covered the whole input, as Captum's Occlusion places it. When (input - size) is not
a multiple of the stride, the last row and column of positions hang over the edge and the
square is cut off there: with the default 50-pixel square and stride 8 on a 224-pixel
input, 23 x 23 positions from 0 to 176, the last ones covering 48 pixels.

occlusion.py is the command line over `photo_result` (the maps of one photo and what they
were measured against) and `plot` (the paper's figure 7 from them), written where
`output_paths` says in a folder claimed with `outputs`; and, over a folder of photos, over
`damage` (how far the most damaging square and a random square of the same size bring down
the probability of each photo's class), `summarise` (mean and spread per size) and
`plot_summary`, written as SUMMARY_OUTPUTS.
"""

import glob
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colors
from matplotlib.patches import Rectangle
from torch import nn
from tqdm import tqdm

from zfnet.deconv import paste, project, receptive_fields
from zfnet.errors import UserError
from zfnet.figures import caption, plt, save_figure, show_input, show_projection
from zfnet.studies.common import judged_class

FEATURE_LAYER = 5  # the paper's figure 7 follows the strongest feature map of layer 5
SUMMARY_OUTPUTS = ("occlusion_summary.csv", "occlusion_photos.csv", "occlusion_summary.png")


def square_positions(input_size, size, stride):
    """The square's top (or left) offsets along one side of the input."""
    if size < 1 or stride < 1:
        raise UserError(f"the square's size ({size}) and stride ({stride}) must be at least 1 pixel")
    if size > input_size:
        raise UserError(f"a {size}-pixel square is larger than the {input_size}-pixel input")
    if stride > size and size < input_size:
        raise UserError(f"a stride of {stride} pixels would leave gaps between {size}-pixel squares")
    return [index * stride for index in range(math.ceil((input_size - size) / stride) + 1)]


def strongest_activation(model, x, layer):
    """`(channel, y, x)` of the largest activation of `layer` (rectified, before pooling) on
    input `x` (3, H, W): the feature map that responds most strongly, and where."""
    with torch.inference_mode():
        maps = model.activations(x[None], [layer])[layer][0]
    channel, row, column = torch.unravel_index(maps.argmax(), maps.shape)
    return int(channel), int(row), int(column)


def occlusion_maps(model, x, size, stride, target, layer, channel, batch_size=64, progress=False):
    """Slide a grey `size` square with `stride` over input `x` (3, H, W) and return, one
    cell per position, (a) `feature`: the total activation of `channel` of `layer` (its
    rectified maps, before pooling), (b) `probability`: the probability of class `target`,
    (c) `prediction`: the most probable class."""
    tops = square_positions(x.shape[1], size, stride)
    lefts = square_positions(x.shape[2], size, stride)
    grid = torch.tensor([(top, left) for top in tops for left in lefts], device=x.device)
    results = {"feature": [], "probability": [], "prediction": []}
    with torch.inference_mode():
        steps, feature_map, pooled = _unoccluded(model, x, layer, channel)
        for rows in tqdm(
            grid.split(batch_size), desc="occluder positions", unit="batch", disable=not progress, leave=False
        ):
            patch, top, left = x.new_zeros(len(rows), size, size, x.shape[0]), rows[:, 0], rows[:, 1]
            for n, op, clean in steps:
                patch, top, left = _window_through(op, clean, patch, top, left)
                if isinstance(op, nn.Conv2d):
                    patch = F.relu(patch)
                    if n == layer:
                        feature = _whole(feature_map, patch[..., channel : channel + 1], top, left).sum((1, 2, 3))
            features = _whole(pooled, patch, top, left).permute(0, 3, 1, 2).flatten(1)
            for n in model.fc_layers:
                features = model.stage(n)(features)
            probabilities = model.classifier(features).softmax(1)
            results["feature"].append(feature)
            results["probability"].append(probabilities[:, target])
            results["prediction"].append(probabilities.argmax(1))
    return {name: torch.cat(parts).view(len(tops), len(lefts)).cpu() for name, parts in results.items()}


def photo_result(model, x, path, classes, class_name, size, stride, batch_size):
    """Everything occlusion.py saves for the photo at `path`, input `x` (3, S, S) on the
    model's device, as numpy arrays and numbers: the maps `feature`, `probability` and
    `prediction` (see `occlusion_maps`) of layer 5's strongest feature map `channel` and of
    class `target` (`class_name`, else as `judged_class` finds it), the square's `tops` and
    `lefts`, `size` and `stride`, the `layer`, the `classes`, the unoccluded probabilities;
    and the (row, column) of the strongest activation, for `draw`."""
    with torch.inference_mode():
        probabilities = model(x[None]).softmax(1)[0].cpu()
    target = judged_class(path, classes, class_name, probabilities)
    channel, row, column = strongest_activation(model, x, FEATURE_LAYER)
    maps = occlusion_maps(model, x, size, stride, target, FEATURE_LAYER, channel, batch_size, progress=True)
    # The input is square, so the square takes the same offsets down as across.
    offsets = np.array(square_positions(x.shape[-1], size, stride))
    result = {
        **{name: values.numpy() for name, values in maps.items()},
        "tops": offsets,
        "lefts": offsets,
        "size": size,
        "stride": stride,
        "layer": FEATURE_LAYER,
        "channel": channel,
        "target": target,
        "classes": np.array(classes),
        "unoccluded_probability": probabilities.numpy(),
    }
    return result, (row, column)


def damage(model, x, target, size, stride, batch_size, generator):
    """For input `x` (3, S, S) and class `target`: the probability of the class with nothing
    covered, with the most damaging `size` square covered (the lowest over every position of
    the slide) and with a square at a random position of the same slide (drawn from
    `generator`), and the most probable class in each case, as a dict."""
    with torch.inference_mode():
        probabilities = model(x[None]).softmax(1)[0].cpu()
    channel, _, _ = strongest_activation(model, x, FEATURE_LAYER)
    maps = occlusion_maps(model, x, size, stride, target, FEATURE_LAYER, channel, batch_size)
    probability, prediction = maps["probability"].flatten(), maps["prediction"].flatten()
    lowest = int(probability.argmin())
    chance = int(torch.randint(len(probability), (1,), generator=generator))
    offsets = square_positions(x.shape[-1], size, stride)
    return {
        "size": size,
        "unoccluded": probabilities[target].item(),
        "unoccluded_prediction": int(probabilities.argmax()),
        "most_damaging": probability[lowest].item(),
        "most_damaging_prediction": int(prediction[lowest]),
        "most_damaging_top": offsets[lowest // len(offsets)],
        "most_damaging_left": offsets[lowest % len(offsets)],
        "random": probability[chance].item(),
        "random_prediction": int(prediction[chance]),
    }


def summarise(rows):
    """Per square size, over the photos' `damage` rows (with their `target`): the mean and
    spread of the class's probability with nothing, a random square and the most damaging
    square covered, and how often the most probable class is then not the photo's."""
    table = []
    for size in sorted({row["size"] for row in rows}):
        mine = [row for row in rows if row["size"] == size]
        entry = {"size": size, "photos": len(mine)}
        for case in ("unoccluded", "random", "most_damaging"):
            values = torch.tensor([row[case] for row in mine], dtype=torch.float64)
            wrong = sum(row[f"{case}_prediction"] != row["target"] for row in mine)
            entry[f"{case}_mean"] = round(values.mean().item(), 4)
            entry[f"{case}_sd"] = round(values.std().item(), 4) if len(values) > 1 else 0.0
            entry[f"{case}_wrong"] = round(wrong / len(mine), 4)
        table.append(entry)
    return table


CASES = {"unoccluded": "nothing covered", "random": "a random square", "most_damaging": "the most damaging square"}


def plot_summary(table, path, stride, folder):
    """occlusion_summary.png: per square size, the mean probability of the photos' class (with
    its spread) with nothing, a random square and the most damaging square covered, and how
    often the class is then lost."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    width = 0.8 / len(CASES)
    colours = plt.get_cmap("viridis")([0.85, 0.5, 0.1])
    for k, (case, label) in enumerate(CASES.items()):
        places = [i + (k - 1) * width for i in range(len(table))]
        means = [entry[f"{case}_mean"] for entry in table]
        axes[0].bar(places, means, width, yerr=[entry[f"{case}_sd"] for entry in table], color=colours[k], label=label)
        axes[1].bar(places, [100 * entry[f"{case}_wrong"] for entry in table], width, color=colours[k], label=label)
        for x, mean in zip(places, means):
            axes[0].text(
                x, 0.02, f"{mean:.2f}", ha="center", va="bottom", fontsize=8, bbox={"facecolor": "white", "lw": 0}
            )
    for axis in axes:
        axis.set_xticks(range(len(table)), [f"{entry['size']}-pixel square" for entry in table])
    axes[0].set(ylim=(0, 1.05), ylabel="probability of the photo's class (mean, bar: spread)")
    axes[1].set(ylabel="photos whose most probable class is another (%)")
    axes[1].legend(fontsize=8)
    photos = table[0]["photos"]
    figure.suptitle(f"Occlusion over {photos} photos of {folder} (stride {stride} pixels)")
    largest = table[-1]
    caption(
        figure,
        f"The {largest['size']}-pixel square: the class's probability falls from {largest['unoccluded_mean']:.2f} "
        f"to {largest['random_mean']:.2f} with a random square and {largest['most_damaging_mean']:.2f} with the "
        f"most damaging one; the class is lost on {largest['most_damaging_wrong']:.0%} of the photos "
        f"(a random square: {largest['random_wrong']:.0%}).",
    )
    save_figure(figure, path, dpi=100)


def outputs(folder):
    """The patterns of the names occlusion.py writes, as found in `folder` (see
    zfnet.outputs): NAME.npz, NAME.png only beside its NAME.npz, since a PNG alone may well
    be one of the user's photos, and the summary's files."""
    maps = glob.glob(os.path.join(glob.escape(folder), "*.npz"))
    return ("*.npz", *(glob.escape(os.path.basename(path)[: -len(".npz")]) + ".png" for path in maps), *SUMMARY_OUTPUTS)


def output_paths(out, names, suffix=""):
    """`{photo: (figure path, maps path)}` in the claimed folder `out` for photos named as in
    `names` ({path: file name}): NAME`suffix`.png and NAME`suffix`.npz for a photo NAME.EXT.
    UserError, before any work, when two photos would write the same files or one would
    replace an input."""
    photos = {}
    for path, name in names.items():
        stem = os.path.splitext(name)[0]
        if stem in photos:
            raise UserError(
                f"{photos[stem]} and {path} would both write {stem}.png and {stem}.npz; "
                f"rename one or run them separately"
            )
        photos[stem] = path
    return {path: (out.path(stem + suffix + ".png"), out.path(stem + suffix + ".npz")) for stem, path in photos.items()}


def lowest_position(result):
    """(row, column) of the square position where the class's probability is lowest."""
    return np.unravel_index(result["probability"].argmin(), result["probability"].shape)


def strongest_projection(model, x, channel, row, column):
    """The deconvnet projection of activation (row, column) of `channel` of layer 5 on input
    `x`, in pixel space (3, H, W), and the box of its receptive field."""
    box = receptive_fields(model)[FEATURE_LAYER].box(row, column)
    return paste(project(model, x[None], [(0, FEATURE_LAYER, channel, row, column)])[0], box, x.shape[-1]), box


def note_under(axis, text):
    """`text` where the x-label of `axis` would be: show_input and show_projection hide the
    axis, and the x-label with it."""
    axis.text(0.5, -0.04, text, transform=axis.transAxes, ha="center", va="top")


def plot(path, title, model, x, preprocess, result, strongest):
    """The paper's figure 7 for one photo from its `result` and the (row, column) of its
    strongest activation, as `photo_result` gives them: the photo titled `title`, with the
    square where the class's probability is lowest; map (a); the projection of the strongest
    activation inside its receptive field; maps (b) and (c), over the photo's coordinates."""
    offsets, size, stride = result["tops"], result["size"], result["stride"]
    classes, target, channel = result["classes"], result["target"], result["channel"]
    # Each cell is drawn centred on the middle of its square, one stride wide.
    low, high = offsets[0] + size / 2 - stride / 2, offsets[-1] + size / 2 + stride / 2
    extent = (low, high, high, low)
    side = x.shape[-1]
    figure, axes = plt.subplots(1, 5, figsize=(21, 4.2), layout="constrained")

    lowest = lowest_position(result)
    show_input(axes[0], x, preprocess)
    axes[0].add_patch(
        Rectangle(
            (offsets[lowest[1]] - 0.5, offsets[lowest[0]] - 0.5),
            size,
            size,
            facecolor=(0.5, 0.5, 0.5, 0.8),
            edgecolor="black",
        )
    )
    axes[0].set_title(f"{title}\nsquare where P({classes[target]}) is lowest")
    note_under(axes[0], f"grey: the {size}-pixel square there")

    pixels, (top, left, bottom, right) = strongest_projection(model, x, channel, *strongest)
    show_projection(axes[2], pixels)
    axes[2].add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="black"))
    axes[2].set_title(f"feature map {channel}'s strongest activation,\nprojected by the deconvnet")
    note_under(axes[2], "black frame: its receptive field; grey: 0")

    panels = [
        (
            axes[1],
            result["feature"],
            f"(a) layer {FEATURE_LAYER}, feature map {channel}:\ntotal activation",
            "viridis",
            {},
            f"activation of map {channel}, summed over it",
        ),
        (
            axes[3],
            result["probability"],
            f"(b) probability of {classes[target]}",
            "magma",
            {"vmin": 0, "vmax": 1},
            f"P({classes[target]})",
        ),
    ]
    for axis, values, panel_title, colormap, limits, meaning in panels:
        image = axis.imshow(values, extent=extent, cmap=colormap, **limits)
        figure.colorbar(image, ax=axis, shrink=0.8, label=meaning)
        axis.set_title(panel_title)

    palette = colors.ListedColormap(plt.get_cmap("tab10").colors[: len(classes)])
    image = axes[4].imshow(
        result["prediction"], extent=extent, cmap=palette, vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest"
    )
    legend = figure.colorbar(image, ax=axes[4], shrink=0.8, ticks=range(len(classes)), label="most probable class")
    legend.ax.set_yticklabels(classes)
    axes[4].set_title("(c) most probable class")
    for axis in (axes[1], axes[3], axes[4]):
        axis.set(
            xlim=(-0.5, side - 0.5),
            ylim=(side - 0.5, -0.5),
            xlabel="square centre x (pixels)",
            ylabel="square centre y (pixels)",
        )
    caption(
        figure,
        f"What to look for: P({classes[target]}) in (b) drops, and the class in (c) changes, where the square "
        f"hides what the classifier relies on; if it barely drops anywhere, its evidence is spread over the photo.",
    )
    save_figure(figure, path, dpi=100)


# Maps are kept channels-last, (H, W, C) or (B, H, W, C), from here on: a window is then
# gathered as whole rows of C values, and the convolutions get the memory layout they
# run fastest in.


def _unoccluded(model, x, layer, channel):
    """For the unoccluded input: each convolution and pooling of layers 1-5 with its input
    map, as `(layer, op, map)`; `channel` of `layer`'s rectified maps; the last pooled maps."""
    steps = []
    x = x[None].contiguous(memory_format=torch.channels_last)
    for n in model.conv_layers:
        stage = model.stage(n)
        steps.append((n, stage.conv, x[0].permute(1, 2, 0)))
        x = F.relu(stage.conv(x))
        if n == layer:
            feature_map = x[0, channel : channel + 1].permute(1, 2, 0)
        if hasattr(stage, "pool"):
            steps.append((n, stage.pool, x[0].permute(1, 2, 0)))
            x = stage.pool(x)
    return steps, feature_map, x[0].permute(1, 2, 0)


def _window_through(op, clean, patch, top, left):
    """Apply `op` (a Conv2d or a MaxPool2d, without its ReLU) to the map `clean` (H, W, C)
    overlaid with `patch` (B, h, w, C) at (top, left) per batch row; return the window of
    the output that can differ from `op(clean)`, with its offsets."""
    kernel, stride, padding = (_pair(op.kernel_size), _pair(op.stride), _pair(op.padding))
    if _pair(op.dilation) != (1, 1) or getattr(op, "ceil_mode", False):
        raise ValueError(f"{op} is not supported: dilation and ceil_mode change the reach")
    rows, out_top = _reach(top, patch.shape[1], clean.shape[0], kernel[0], stride[0], padding[0])
    cols, out_left = _reach(left, patch.shape[2], clean.shape[1], kernel[1], stride[1], padding[1])
    # Max-pooling pads with -inf so that padding never wins; convolutions pad with zeros.
    fill = float("-inf") if isinstance(op, nn.MaxPool2d) else 0.0
    window = _compose(clean, rows, cols, patch, top, left, fill).permute(0, 3, 1, 2)
    if isinstance(op, nn.MaxPool2d):
        out = F.max_pool2d(window, kernel, stride)
    else:
        out = F.conv2d(window, op.weight, op.bias, stride, 0, 1, op.groups)
    return out.permute(0, 2, 3, 1), out_top, out_left


def _reach(start, length, size, kernel, stride, padding):
    """Along one axis: an input span [start, start + length) per batch row, of a map `size`
    long, reaches the outputs whose windows meet it. Return the input rows (those in the
    padding outside 0..size-1 included) that an equal-length run of outputs covering every
    row's reach needs, and where each run starts. Rows near the edge shift their run
    inwards to keep the length."""
    count = (size + 2 * padding - kernel) // stride + 1
    first = torch.div(start + padding - kernel, stride, rounding_mode="floor") + 1
    last = torch.div(start + length - 1 + padding, stride, rounding_mode="floor")
    first, last = first.clamp(min=0), last.clamp(max=count - 1)
    span = max(int((last - first).max()) + 1, 1)
    first = first.clamp(max=count - span)
    inputs = torch.arange((span - 1) * stride + kernel, device=start.device)
    return first[:, None] * stride - padding + inputs, first


def _whole(base, patch, top, left):
    """The whole map `base` (H, W, C) with each batch row's `patch` laid over it."""
    rows = torch.arange(base.shape[0], device=patch.device).expand(len(patch), -1)
    cols = torch.arange(base.shape[1], device=patch.device).expand(len(patch), -1)
    return _compose(base, rows, cols, patch, top, left, fill=0.0)


def _compose(base, rows, cols, patch, top, left, fill):
    """Windows `rows` (B, h') x `cols` (B, w') of the map `base` (H, W, C), with each batch
    row's `patch` (B, h, w, C) laid over `base` at (top, left): (B, h', w', C). Cells outside
    `base` are padding and hold `fill`, even where a patch hangs over the edge.

    Base, patches and the fill are stacked into one table of C-vectors, and every cell of
    the windows picks its vector from the table: a single gather does the cutting, the
    padding and the pasting."""
    height, width, channels = base.shape
    count, patch_height, patch_width, _ = patch.shape
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    patch_rows, patch_cols = rows - top[:, None], cols - left[:, None]
    covered = ((patch_rows >= 0) & (patch_rows < patch_height))[:, :, None] & (
        (patch_cols >= 0) & (patch_cols < patch_width)
    )[:, None, :]
    from_base = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
    batch = torch.arange(count, device=patch.device)[:, None, None]
    from_patch = height * width + (batch * patch_height + patch_rows[:, :, None]) * patch_width + patch_cols[:, None, :]
    from_fill = height * width + count * patch_height * patch_width
    index = torch.where(inside, torch.where(covered, from_patch, from_base), from_fill)
    table = torch.cat([base.reshape(-1, channels), patch.reshape(-1, channels), base.new_full((1, channels), fill)])
    return table.index_select(0, index.view(-1)).view(count, rows.shape[1], cols.shape[1], channels)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
