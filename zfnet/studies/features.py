"""The paper's figures 2 and 6: what each map of a layer responds to most, and the layer-1
filters.

- `top9`: for one layer's chosen maps, the 9 strongest activations over the photos (found by
  zfnet.top9.strongest_activations), each projected alone to pixel space by the deconvnet
  (or another rule of zfnet.projections), beside the image patch it sees; `plot_top9`
  draws them, `summary` is top9.json.
- `plot_filters`: the layer-1 filters of one checkpoint or two side by side, as learned and
  with each filter's mean colour removed, with their smoothness against white noise's.

visualize.py top9 and filters are the command lines over them.
"""

import math
import os
import sys

import torch
from tqdm import tqdm

from zfnet.deconv import crop, project
from zfnet.figures import caption, filter_pictures, plt, robust_scale, save_figure, stretched
from zfnet.images import load_input, make_grid, unnormalize
from zfnet.spectra import faded_filters, noise_smoothness, smoothness
from zfnet.top9 import pil_box

OUTPUTS = ("top9_layer*.png", "top9.json", "filters.png")

TOP9_COMMAND = """Figure 2: for each chosen layer's most active maps (or the maps named), the 9 strongest
activations over the photos (one running top 9 per map, so memory does not grow with the
photos), each projected alone to pixel space beside the image patch it sees.

Writes top9_layerN.png and top9.json: every patch's image, position in the feature map, box
([left, top, right, bottom] in the photo resized to the input size) and value."""
FILTERS_COMMAND = """Figure 6: the layer-1 filters of one checkpoint, or of two side by side.

Writes filters.png."""


def top9_outputs(layers):
    """The files visualize.py top9 writes for `layers`."""
    return ["top9.json", *(f"top9_layer{layer}.png" for layer in layers)]


def strongest_requests(best, layer, maps, per_map=None):
    """Projection requests `(image, layer, map, y, x)` of the strongest activations of `maps`
    of `layer` (`best` is that layer's entry of strongest_activations; all of them, or each
    map's `per_map` strongest), a map's strongest first; image indexes the photos searched."""
    _, images, ys, xs = best
    return [
        (images[m, r].item(), layer, m, ys[m, r].item(), xs[m, r].item())
        for m in maps
        for r in range(per_map or images.shape[1])
    ]


def needed_inputs(paths, preprocess, requests, desc):
    """`(inputs, requests, photos)`: the network inputs of only the photos `requests` name,
    the requests with their image indices into those inputs, and those photos' paths."""
    needed = sorted({request[0] for request in requests})
    place = {image: i for i, image in enumerate(needed)}
    inputs = torch.stack([load_input(paths[i], preprocess) for i in tqdm(needed, desc=desc)])
    return inputs, [(place[image], *rest) for image, *rest in requests], [paths[i] for i in needed]


def top9(model, preprocess, paths, layer, best, field, maps, rule="deconvnet"):
    """Project by `rule` the strongest activations of `maps` of `layer` (`best` is that
    layer's entry of strongest_activations over the photos `paths`). Returns `(shown,
    index)`: for each map, `(projections, patches, values)`, the first two (9, 3, size, size),
    the activations (9,); and the index entries of every patch (image, position, box in the
    input, value)."""
    values, images, _, _ = best
    ranked = strongest_requests(best, layer, maps)
    inputs, requests, _ = needed_inputs(paths, preprocess, ranked, f"layer {layer} images")
    projections = [patch.cpu() for patch in project(model, inputs, requests, rule=rule)]
    pictures = unnormalize(inputs, preprocess["mean"], preprocess["std"])
    shown, index = [], []
    per_map = images.shape[1]
    for k, m in enumerate(maps):
        mine = range(k * per_map, (k + 1) * per_map)
        boxes = [field.box(*requests[i][3:]) for i in mine]
        shown.append(
            (
                torch.stack([projections[i] for i in mine]),
                torch.stack([crop(pictures[requests[i][0]], box) for i, box in zip(mine, boxes)]),
                values[m].cpu(),
            )
        )
        for rank, (i, box) in enumerate(zip(mine, boxes)):
            index.append(
                {
                    "layer": layer,
                    "map": m,
                    "rank": rank + 1,
                    "image": paths[ranked[i][0]],
                    "y": requests[i][3],
                    "x": requests[i][4],
                    "box": pil_box(box),
                    "value": round(values[m, rank].item(), 6),
                }
            )
    return shown, index


def block(projections, patches, shared_scale=False):
    """One map's panel: its projections (contrast-stretched one by one, or all by one scale)
    beside the image patches."""
    rows = math.ceil(math.sqrt(len(projections)))
    scale = robust_scale(projections) if shared_scale else None
    left = make_grid(torch.stack([stretched(p, scale) for p in projections]), nrow=rows, padding=2, pad_value=1)
    right = make_grid(patches, nrow=rows, padding=2, pad_value=1)
    gap = torch.ones(3, left.shape[1], max(4, left.shape[2] // 12))
    return torch.cat([left, gap, right], 2)


RULE_NAMES = {"deconvnet": "deconvnet", "guided": "guided backpropagation", "gradient": "gradient"}
# Tiles are drawn at least this many pixels wide (the patch's own size when larger), so that
# a 7-pixel layer-1 patch is not a dot and a 139-pixel layer-5 patch keeps its every pixel.
SMALLEST_TILE = 64
DPI = 120


def panel_title(m, values):
    """A map's panel title, saying on how many of its photos it is silent: among few photos a
    map's top holds some where its strongest activation is 0, drawn blank at a place of no
    meaning."""
    silent = int((values <= 0).sum())
    return f"map {m}" + (f": silent on {silent} of {len(values)} photos (blank)" if silent else "")


def plot_top9(shown, maps, layer, field, first_layer, shared_scale, path, rule="deconvnet"):
    """Figure 2 for one layer: a panel per map of `top9`'s `shown`, three panels a row, every
    tile at least as many pixels as the patch it shows."""
    panels = [block(projections, patches, shared_scale) for projections, patches, _ in shown]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    zoom = max(1.0, SMALLEST_TILE / field.size)
    height, width = (side * zoom / DPI for side in panels[0].shape[1:])
    figure, axes = plt.subplots(
        rows, columns, figsize=(width * columns * 1.04, (height + 0.3) * rows + 0.9), squeeze=False
    )
    figure.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.9 / ((height + 0.3) * rows + 0.9), wspace=0.04)
    for axis in axes.flat:
        axis.axis("off")
    for axis, panel, m, (_, _, values) in zip(axes.flat, panels, maps, shown):
        axis.imshow(panel.permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title(panel_title(m, values), fontsize=9)
    stretch = (
        "each map's projections stretched by one scale, their 99th-percentile magnitude around grey"
        if shared_scale
        else "each projection stretched by its own 99th-percentile magnitude around grey"
    )
    alike = "; layer 1's projections are the map's filter times each activation, so they look alike"
    figure.suptitle(
        f"layer {layer}: strongest activations, projected by the {RULE_NAMES[rule]} (left) and their "
        f"{field.size}x{field.size} image patches (right)\n{stretch}{alike if first_layer else ''}"
    )
    save_figure(figure, path, dpi=DPI)


def summary(checkpoint, images, preprocess, fields, layers, index, rule="deconvnet"):
    """top9.json: every patch's image, position in the feature map, box and value."""
    return {
        "checkpoint": checkpoint,
        "rule": rule,
        "images": images,
        "input_size": preprocess["input_size"],
        "box": "left, top, right, bottom in the image resized to input_size x input_size",
        "receptive_fields": {str(n): vars(fields[n]) for n in layers},
        "patches": index,
    }


# Layer 1 counts as near noise level while its smoothness stays under this many times white
# noise's (53.7%): 10 epochs from its usual start (18.5% against noise's 17.9%) is, and so is
# make run's 20 steps of the small start on the 60 bundled photos (38%, speckle to the eye);
# layer 1 started small (55%, edges and colour blobs), the fast recipe's 10 epochs on
# flower_photos (78-81%) and the features recipe's (74-86%) are not.
NEAR_NOISE = 3


def layer1_note(model):
    """One line when `model`'s layer 1 is still near noise level, with its smoothness against
    white noise's and the command that trains a readable one; None otherwise."""
    weights = model.stage(model.conv_layers[0]).conv.weight.detach().cpu()
    own, noise = smoothness(weights), noise_smoothness(weights.shape[-1])
    if own >= NEAR_NOISE * noise:
        return None
    return (
        f"layer 1 is still near noise level (smoothness {own:.1%}, white noise {noise:.1%}): its filters "
        "and every layer's projections show noise more than what it learned; on the whole of "
        "flower_photos python train.py trains a readable one in its 10 epochs (smoothness 78-81%), python "
        "train.py --recipe features --epochs 160 a smoother one (86%): the README's Recipes"
    )


def warn_if_noise(model):
    """Print `layer1_note` on stderr when there is one."""
    note = layer1_note(model)
    if note:
        print(f"note: {note}", file=sys.stderr)


def plot_filters(networks, path):
    """Figure 6: the layer-1 filters of `networks` ([(checkpoint path, model)], one or two),
    a row each. Returns a line per network with its smoothness against white noise's, and
    `layer1_note`'s where it has one."""
    # A learned filter is mostly one flat colour; with that removed its edges and its
    # colour-opponent parts, the pattern the smoothness measures, show.
    figure, axes = plt.subplots(len(networks), 2, figsize=(11, 5.0 * len(networks)), squeeze=False)
    lines = []
    for row, (checkpoint, model) in zip(axes, networks):
        weights = model.layer1.conv.weight.detach()
        kernel, stride = model.layer1.conv.kernel_size[0], model.layer1.conv.stride[0]
        smooth = f"smoothness {smoothness(weights):.0%} (white noise {noise_smoothness(kernel):.0%})"
        faded = faded_filters(weights)
        name = os.path.relpath(checkpoint)
        titles = (
            f"{name}: as learned\n{len(weights)} filters, {kernel}x{kernel}, stride {stride}; "
            f"{int(faded.sum())} faded away (grey)",
            f"{name}: each filter's mean colour removed\n{smooth}",
        )
        for axis, shown, title in zip(row, (weights, weights - weights.mean(dim=(2, 3), keepdim=True)), titles):
            grid = make_grid(
                filter_pictures(shown, faded), nrow=math.ceil(math.sqrt(len(shown))), padding=1, pad_value=1
            )
            axis.imshow(grid.permute(1, 2, 0).numpy())
            axis.set_title(title, fontsize=9)
            axis.axis("off")
        lines.append(f"{name}: layer-1 {smooth}")
        note = layer1_note(model)
        if note:
            lines.append(f"note: {note}")
    caption(
        figure,
        "Each filter stretched to its own range; grey: weights under a tenth of the median filter's. Smooth "
        "filters show edges and colour-opponent blobs once their flat colour is removed; filters still at "
        "their random start show speckle.",
    )
    save_figure(figure, path)
    return lines
