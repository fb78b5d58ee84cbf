"""Occlusion sensitivity, the paper's figure 7: which parts of a photo the network relies on.

    python occlusion.py sunflower.jpg
    python occlusion.py samples/flower_photos/daisy/*.jpg --size 40 --stride 4
    python occlusion.py photo.jpg --class roses --checkpoint runs/long/best.pth --out figures/

A grey square (the normalisation mean, so it carries no signal) slides over each photo as
the network sees it (224 x 224 pixels). For every position of the square the network
gives (a) the total activation of the layer-5 feature map that responds most strongly to
the unoccluded photo, (b) the probability of the photo's class and (c) its most probable
class. The class is --class when given, else the photo's folder when that is named after
a class, else the class the network predicts for the unoccluded photo.

The square starts at the top-left corner and moves by --stride until it has covered the
whole input, as in Captum's Occlusion; where (224 - size) is not a multiple of the stride,
the last row and column of positions hang over the edge and the square is cut off there
(23 x 23 positions with the defaults, the last ones 48 pixels wide). Every position is
exact, as if the square were painted on the photo and the whole network run, but only what
the square can change is computed (zfnet/occlusion.py), in batches of --batch-size positions.

Writes, per photo, OUT/<name>.png (the photo; map (a); that feature map's strongest
activation on the unoccluded photo projected to pixels by the deconvnet, inside its
receptive field; map (b); map (c)) and OUT/<name>.npz
(the maps as arrays `feature`, `probability`, `prediction`, one cell per position, with
the positions `tops` and `lefts` of the square and what was measured).
"""
import argparse
import os

import numpy as np
import torch
from matplotlib import colors
from matplotlib.patches import Rectangle
from tqdm import tqdm

from zfnet.errors import UserError, run_main
from zfnet.deconv import paste, project, receptive_fields
from zfnet.experiments import add_network_arguments, class_index, judged_class, load_network, short_names
from zfnet.figures import plt, save_figure, show_input, show_projection
from zfnet.files import atomic_write
from zfnet.images import load_input
from zfnet.occlusion import FEATURE_LAYER, occlusion_maps, square_positions, strongest_activation


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", help="photo files")
    add_network_arguments(parser)
    parser.add_argument("--size", type=int, default=50,
                        help="side of the grey square, in pixels of the 224-pixel input (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=8,
                        help="step between square positions, in pixels (default: %(default)s)")
    parser.add_argument("--class", dest="class_name", metavar="NAME",
                        help="class whose probability map (b) shows (default: the photo's folder "
                             "when it is a class name, else the predicted class)")
    parser.add_argument("--out", default="runs/occlusion",
                        help="folder for the figures and arrays (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="square positions per forward pass (default: %(default)s)")
    return parser


def strongest_projection(model, x, channel, row, column):
    """The deconvnet projection of activation (row, column) of `channel` of layer 5 on input
    `x`, in pixel space (3, H, W), and the box of its receptive field."""
    box = receptive_fields(model)[FEATURE_LAYER].box(row, column)
    return paste(project(model, x[None], [(0, FEATURE_LAYER, channel, row, column)])[0], box, x.shape[-1]), box


def draw(path, photo, x, preprocess, result, projection, lowest):
    """The paper's figure 7 for one photo from its `result` (what the .npz holds): the photo
    with the square at `lowest`, where the class's probability is lowest; map (a); the
    projection inside its receptive field; maps (b) and (c), over the photo's coordinates."""
    offsets, size, stride = result["tops"], result["size"], result["stride"]
    classes, target, channel = result["classes"], result["target"], result["channel"]
    # Each cell is drawn centred on the middle of its square, one stride wide.
    low, high = offsets[0] + size / 2 - stride / 2, offsets[-1] + size / 2 + stride / 2
    extent = (low, high, high, low)
    side = x.shape[-1]
    figure, axes = plt.subplots(1, 5, figsize=(21, 4.2), layout="constrained")

    show_input(axes[0], x, preprocess)
    axes[0].add_patch(Rectangle((offsets[lowest[1]] - 0.5, offsets[lowest[0]] - 0.5), size, size,
                                facecolor=(0.5, 0.5, 0.5, 0.8), edgecolor="black"))
    axes[0].set_title(f"{os.path.basename(photo)}\nsquare where P({classes[target]}) is lowest")

    pixels, (top, left, bottom, right) = projection
    show_projection(axes[2], pixels)
    axes[2].add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="black"))
    axes[2].set_title(f"feature map {channel}'s strongest activation,\nprojected by the deconvnet")

    panels = [
        (axes[1], result["feature"], f"(a) layer {FEATURE_LAYER}, feature map {channel}:\ntotal activation",
         "viridis", {}),
        (axes[3], result["probability"], f"(b) probability of {classes[target]}", "magma", {"vmin": 0, "vmax": 1}),
    ]
    for axis, values, title, colormap, limits in panels:
        image = axis.imshow(values, extent=extent, cmap=colormap, **limits)
        figure.colorbar(image, ax=axis, shrink=0.8)
        axis.set_title(title)

    palette = colors.ListedColormap(plt.get_cmap("tab10").colors[:len(classes)])
    image = axes[4].imshow(result["prediction"], extent=extent, cmap=palette, vmin=-0.5,
                           vmax=len(classes) - 0.5, interpolation="nearest")
    legend = figure.colorbar(image, ax=axes[4], shrink=0.8, ticks=range(len(classes)))
    legend.ax.set_yticklabels(classes)
    axes[4].set_title("(c) most probable class")
    for axis in (axes[1], axes[3], axes[4]):
        axis.set(xlim=(-0.5, side - 0.5), ylim=(side - 0.5, -0.5), xlabel="square centre x (pixels)")
    axes[1].set_ylabel("square centre y (pixels)")
    save_figure(figure, path, dpi=100)


def main(argv=None):
    arguments = get_parser().parse_args(argv)
    if arguments.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    model, checkpoint = load_network(arguments)
    classes, preprocess = checkpoint["classes"], checkpoint["preprocess"]
    if arguments.class_name is not None:
        class_index(arguments.class_name, classes)
    # The input is square, so the square takes the same offsets down as across.
    offsets = square_positions(preprocess["input_size"], arguments.size, arguments.stride)
    names = short_names(arguments.photos)
    device = next(model.parameters()).device
    # Every photo is read before the long passes start, so a bad one fails at once.
    inputs = {path: load_input(path, preprocess) for path in arguments.photos}

    for path, x in tqdm(inputs.items(), desc="photos", unit="photo", disable=len(inputs) == 1):
        x = x.to(device)
        with torch.inference_mode():
            probabilities = model(x[None]).softmax(1)[0].cpu()
        target = judged_class(path, classes, arguments.class_name, probabilities)
        channel, row, column = strongest_activation(model, x, FEATURE_LAYER)
        maps = occlusion_maps(model, x, arguments.size, arguments.stride, target, FEATURE_LAYER, channel,
                              arguments.batch_size, progress=True)
        result = {**{name: values.numpy() for name, values in maps.items()},
                  "tops": np.array(offsets), "lefts": np.array(offsets), "size": arguments.size,
                  "stride": arguments.stride, "layer": FEATURE_LAYER, "channel": channel, "target": target,
                  "classes": np.array(classes), "unoccluded_probability": probabilities.numpy()}
        stem = os.path.join(arguments.out, os.path.splitext(names[path])[0])
        atomic_write(stem + ".npz", lambda file: np.savez(file, **result))
        lowest = np.unravel_index(result["probability"].argmin(), result["probability"].shape)
        draw(stem + ".png", path, x, preprocess, result, strongest_projection(model, x, channel, row, column), lowest)
        print(f"{path}: P({classes[target]}) {probabilities[target]:.3f} unoccluded, "
              f"{result['probability'][lowest]:.3f} at its lowest (square at y={offsets[lowest[0]]}, "
              f"x={offsets[lowest[1]]}); {stem}.png, {stem}.npz")


if __name__ == "__main__":
    run_main(main)
