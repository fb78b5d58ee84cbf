"""What the layers of a trained ZFNet respond to: the paper's feature visualisations
(Zeiler & Fergus 2014, figures 2, 4 and 6), made with the deconvnet in zfnet/deconv.py.

    python visualize.py top9                       # figure 2: layers 1-5, their 9 most active maps
    python visualize.py top9 --layers 5 --maps 3,17,40 --images my_photos/
    python visualize.py filters                    # figure 6: the layer-1 filters
    python visualize.py filters --checkpoint runs/alexnet/best.pth runs/zfnet/best.pth
    python visualize.py evolution                  # figure 4, from train.py --snapshot-epochs

Writes into --out (default: visualize/ beside the checkpoint, or beside the snapshots folder):
top9_layerN.png and top9.json (every patch's image, position, box and value); filters.png;
evolution_layerN.png, evolution_change.png, evolution_change.csv and evolution_weights.csv. --out must be a new or
empty folder, or one these commands wrote, outside --images. A photo that cannot be used
(truncated, not an image, too large to decode safely, a broken link) is skipped with a note.
"""

import argparse
import glob
import json
import math
import os

import torch
from torchvision.utils import make_grid
from tqdm import tqdm

from zfnet.arguments import (
    DEFAULT_RUN,
    add_batch_size,
    add_checkpoint,
    add_device,
    add_images,
    add_maps_per_layer,
    add_max_images,
    add_out,
    int_list,
    out_folder,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint
from zfnet.deconv import crop, project, receptive_fields
from zfnet.errors import UserError, run_main
from zfnet.figures import caption, filter_pictures, plt, robust_scale, save_figure, stretched
from zfnet.files import atomic_write_text
from zfnet.images import find_images, load_input, unnormalize
from zfnet.outputs import OutputFolder, require_outside
from zfnet.runtime import pick_device
from zfnet.spectra import faded_filters, noise_smoothness, smoothness
from zfnet.tables import csv_text
from zfnet.top9 import (
    chosen_layers,
    chosen_maps,
    pil_box,
    require_maps,
    require_usable,
    spread_evenly,
    strongest_activations,
    tensor_batches,
    usable_batches,
    usable_inputs,
)

# What the three commands write; they share one folder by default, and each takes back a
# folder that holds only these (written before folders were marked as zfnet's).
OWN_NAMES = (
    "top9_layer*.png",
    "top9.json",
    "filters.png",
    "evolution_layer*.png",
    "evolution_change.png",
    "evolution_change.csv",
    "evolution_weights.csv",
)

TOP9 = """Figure 2: for each chosen layer's most active maps (or the maps named), the 9 strongest
activations over the photos (one running top 9 per map, so memory does not grow with the
photos), each projected alone to pixel space beside the image patch it sees.

Writes top9_layerN.png and top9.json: every patch's image, position in the feature map, box
([left, top, right, bottom] in the photo resized to the input size) and value."""
FILTERS = """Figure 6: the layer-1 filters of one checkpoint, or of two side by side.

Writes filters.png."""
EVOLUTION = """Figure 4: how features develop during training, from the snapshots train.py
--snapshot-epochs saved. For each chosen layer's maps (by default the most active at the last
snapshot), the projection of its strongest activation at every snapshot; and how much each
layer's projections still change from one snapshot to the next, measured at the place of the
last snapshot's strongest activation (1 - cosine similarity).

Writes evolution_layerN.png, evolution_change.png, evolution_change.csv and evolution_weights.csv."""


def load_model(path, device):
    model, checkpoint = load_checkpoint(path, device)
    return model, checkpoint["preprocess"]


def claim_out(args, beside, inputs, images=None):
    """The output folder (--out, or visualize/ beside `beside`), claimed before the long
    work starts; outside the folder of photos `images`, whose search would find the figures."""
    folder = out_folder(args, "visualize", beside=beside)
    if images is not None:
        require_outside(folder, images, "--images")
    return OutputFolder.claim(folder, inputs=inputs, own_names=OWN_NAMES)


def block(projections, patches, shared_scale=False):
    """One map's panel: its projections (contrast-stretched one by one, or all by one scale)
    beside the image patches."""
    rows = math.ceil(math.sqrt(len(projections)))
    scale = robust_scale(projections) if shared_scale else None
    left = make_grid(torch.stack([stretched(p, scale) for p in projections]), nrow=rows, padding=2, pad_value=1)
    right = make_grid(patches, nrow=rows, padding=2, pad_value=1)
    gap = torch.ones(3, left.shape[1], max(4, left.shape[2] // 12))
    return torch.cat([left, gap, right], 2)


def draw_panels(panels, titles, columns, path, suptitle):
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 1.9 * rows + 0.5), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, panel, title in zip(axes.flat, panels, titles):
        axis.imshow(panel.permute(1, 2, 0).numpy())
        axis.set_title(title, fontsize=9)
    figure.suptitle(suptitle)
    save_figure(figure, path)


def top9_layer(model, preprocess, paths, layer, best, field, args, figure_path):
    """Project the strongest activations of one layer's chosen maps, draw its figure and
    return the index entries of its patches."""
    values, images, ys, xs = best
    maps = chosen_maps(args.maps, values, maps_per_layer(args))
    shown = [(m, rank) for m in maps for rank in range(images.shape[1])]
    needed = sorted({images[m, rank].item() for m, rank in shown})
    inputs = torch.stack([load_input(paths[i], preprocess) for i in tqdm(needed, desc=f"layer {layer} images")])
    requests = [
        (needed.index(images[m, rank].item()), layer, m, ys[m, rank].item(), xs[m, rank].item()) for m, rank in shown
    ]
    projections = [patch.cpu() for patch in project(model, inputs, requests)]
    pictures = unnormalize(inputs, preprocess["mean"], preprocess["std"])
    panels, index = [], []
    for m in maps:
        mine = [i for i, (shown_map, _) in enumerate(shown) if shown_map == m]
        boxes = [field.box(*requests[i][3:]) for i in mine]
        panels.append(
            block(
                torch.stack([projections[i] for i in mine]),
                torch.stack([crop(pictures[requests[i][0]], box) for i, box in zip(mine, boxes)]),
                shared_scale=args.stretch == "shared",
            )
        )
        for i, box in zip(mine, boxes):
            rank = shown[i][1]
            index.append(
                {
                    "layer": layer,
                    "map": m,
                    "rank": rank + 1,
                    "image": paths[images[m, rank].item()],
                    "y": requests[i][3],
                    "x": requests[i][4],
                    "box": pil_box(box),
                    "value": round(values[m, rank].item(), 6),
                }
            )
    draw_panels(
        panels,
        [f"map {m}" for m in maps],
        min(3, len(panels)),
        figure_path,
        f"layer {layer}: strongest activations, projected (left) and their "
        f"{field.size}x{field.size} image patches (right)\n"
        + (
            "each map's projections stretched by one scale, their 99th-percentile magnitude around grey"
            if args.stretch == "shared"
            else "each projection stretched by its own 99th-percentile magnitude around grey"
        )
        + (
            "; layer 1's projections are the map's filter times each activation, so they look alike"
            if layer == model.conv_layers[0]
            else ""
        ),
    )
    print(f"wrote {figure_path}")
    return index


def top9(args):
    device = pick_device(args.device)
    model, preprocess = load_model(args.checkpoint, device)
    layers = chosen_layers(model, args.layers, args.checkpoint)
    require_maps(model, layers, args.maps, args.maps_per_layer)
    paths = find_images(args.images)
    out = claim_out(args, args.checkpoint, [args.checkpoint, args.images, *paths], images=args.images)
    figures = {layer: out.path(f"top9_layer{layer}.png") for layer in layers}
    index_path = out.path("top9.json")
    kept, skipped = [], []
    best = strongest_activations(
        model, usable_batches(paths, preprocess, args.batch_size, "finding top 9", kept, skipped), layers, device
    )
    require_usable(kept, skipped, args.images)
    fields = receptive_fields(model)
    index = [
        entry
        for layer in layers
        for entry in top9_layer(model, preprocess, kept, layer, best[layer], fields[layer], args, figures[layer])
    ]
    summary = {
        "checkpoint": args.checkpoint,
        "images": args.images,
        "input_size": preprocess["input_size"],
        "box": "left, top, right, bottom in the image resized to input_size x input_size",
        "receptive_fields": {str(n): vars(fields[n]) for n in layers},
        "patches": index,
    }
    atomic_write_text(index_path, json.dumps(summary, indent=1) + "\n")
    print(f"wrote {index_path}")


def filters(args):
    if len(args.checkpoint) > 2:
        raise UserError("filters draws one checkpoint or two side by side")
    models = [load_model(path, "cpu")[0] for path in args.checkpoint]
    out = claim_out(args, args.checkpoint[0], args.checkpoint).path("filters.png")
    # A learned filter is mostly one flat colour; with that removed its edges and its
    # colour-opponent parts, the pattern the smoothness measures, show.
    figure, axes = plt.subplots(len(args.checkpoint), 2, figsize=(11, 5.0 * len(args.checkpoint)), squeeze=False)
    for row, path, model in zip(axes, args.checkpoint, models):
        weights = model.layer1.conv.weight.detach()
        kernel, stride = model.layer1.conv.kernel_size[0], model.layer1.conv.stride[0]
        smooth = f"smoothness {smoothness(weights):.0%} (white noise {noise_smoothness(kernel):.0%})"
        faded = faded_filters(weights)
        titles = (
            f"{os.path.relpath(path)}: as learned\n{len(weights)} filters, {kernel}x{kernel}, stride {stride}; "
            f"{int(faded.sum())} faded away (grey)",
            f"{os.path.relpath(path)}: each filter's mean colour removed\n{smooth}",
        )
        for axis, shown, title in zip(row, (weights, weights - weights.mean(dim=(2, 3), keepdim=True)), titles):
            grid = make_grid(
                filter_pictures(shown, faded), nrow=math.ceil(math.sqrt(len(shown))), padding=1, pad_value=1
            )
            axis.imshow(grid.permute(1, 2, 0).numpy())
            axis.set_title(title, fontsize=9)
            axis.axis("off")
        print(f"{os.path.relpath(path)}: layer-1 {smooth}")
    caption(
        figure,
        "Each filter stretched to its own range; grey: weights under a tenth of the median filter's. Smooth "
        "filters show edges and colour-opponent blobs once their flat colour is removed; filters still at "
        "their random start show speckle.",
    )
    save_figure(figure, out)
    print(f"wrote {out}")


def snapshot_paths(folder):
    """train.py's snapshots in `folder` (epoch_NNN.pth); UserError unless there are two or more."""
    paths = sorted(glob.glob(os.path.join(glob.escape(folder), "epoch_*.pth")))
    if len(paths) < 2:
        raise UserError(f"{folder}: needs at least two epoch_NNN.pth snapshots (train with --snapshot-epochs 1,2,5,10)")
    return paths


def load_snapshots(paths, folder, device):
    """`([(epoch, model)], preprocess)` from the snapshots `paths` of `folder`, oldest first;
    UserError unless they are of one network, each of another epoch."""
    loaded = sorted((load_checkpoint(path, device) for path in paths), key=lambda pair: pair[1]["epoch"])
    first = loaded[0][1]
    if any(checkpoint["model_config"] != first["model_config"] for _, checkpoint in loaded):
        raise UserError(f"{folder}: the snapshots are of different networks")
    epochs = [checkpoint["epoch"] for _, checkpoint in loaded]
    repeated = [epoch for epoch, following in zip(epochs, epochs[1:]) if epoch == following]
    if repeated:
        raise UserError(f"{folder}: two snapshots of epoch {repeated[0]}; keep one of them")
    return [(checkpoint["epoch"], model) for model, checkpoint in loaded], first["preprocess"]


def projection_change(before, after):
    """1 - cosine similarity of two projections of one activation: 0 when the map sees the
    same pattern there (whatever its strength), 1 when only one of them responds at all."""
    if not (before.any() or after.any()):
        return 0.0  # the map responds there at neither epoch: nothing changed
    return 1 - torch.cosine_similarity(before.flatten(), after.flatten(), 0).item()


def plot_evolution(panels, maps, epochs, path, title):
    """Figure 4: one row per map, one column per snapshot epoch."""
    grid = make_grid(
        torch.stack([stretched(p) for p in torch.stack(panels, 1).flatten(0, 1)]),
        nrow=len(epochs),
        padding=2,
        pad_value=1,
    )
    figure, axis = plt.subplots(figsize=(1.3 * len(epochs) + 1, 1.3 * len(maps) + 0.6))
    axis.imshow(grid.permute(1, 2, 0).numpy())
    column, row = grid.shape[-1] / len(epochs), grid.shape[-2] / len(maps)
    axis.set_xticks([column * (i + 0.5) for i in range(len(epochs))], [str(epoch) for epoch in epochs])
    axis.set_yticks([row * (i + 0.5) for i in range(len(maps))], [f"map {m}" for m in maps])
    axis.set(xlabel="epoch", title=title)
    save_figure(figure, path)


def weight_drift(snapshots, layers):
    """Rows of each layer's weights at each snapshot: their distance from the first snapshot's
    and from the previous one's, each relative to the norm of the earlier weights. A layer that
    settled has moved far from its start and little lately; one that never learned has moved
    little from its start too (both changes are small)."""
    rows = []
    for layer in layers:
        weights = [model.stage(layer).conv.weight.detach().double() for _, model in snapshots]
        for (epoch, _), previous, current in zip(snapshots, [None, *weights], weights):
            rows.append(
                {
                    "layer": layer,
                    "epoch": epoch,
                    "from_first": round(((current - weights[0]).norm() / weights[0].norm()).item(), 6),
                    "from_previous": ""
                    if previous is None
                    else round(((current - previous).norm() / previous.norm()).item(), 6),
                }
            )
    return rows


def plot_changes(changes, drift, epochs, path):
    """Left: mean change of each layer's projections from the previous snapshot. Right: each
    layer's weights, their distance from the first snapshot's and from the previous one's."""
    figure, (projections, weights) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for layer, by_epoch in changes.items():
        shown = sorted(by_epoch)
        projections.plot(shown, [sum(by_epoch[e]) / len(by_epoch[e]) for e in shown], "-o", label=f"layer {layer}")
    projections.set(
        xlabel="epoch",
        ylabel="1 - cosine similarity to the previous snapshot",
        title="projections: change since the previous snapshot",
    )
    for index, layer in enumerate(changes):
        rows = [row for row in drift if row["layer"] == layer]
        colour = f"C{index}"
        weights.plot(
            [r["epoch"] for r in rows],
            [r["from_first"] for r in rows],
            "-o",
            color=colour,
            label=f"layer {layer}",
        )
        later = [r for r in rows if r["from_previous"] != ""]
        weights.plot(
            [r["epoch"] for r in later],
            [r["from_previous"] for r in later],
            "--s",
            color=colour,
        )
    # A layer started small moves many times its initial norm, the others less than once: a
    # log scale shows both.
    weights.set_yscale("log", nonpositive="mask")
    weights.set(
        xlabel="epoch",
        ylabel="weight change / the earlier weights' norm (log)",
        title=f"weights: moved since epoch {epochs[0]} (solid)\nand since the previous snapshot (dashed)",
    )
    for axis in (projections, weights):
        if epochs[-1] > 10 * max(epochs[0], 1):  # snapshots spread over decades crowd a linear axis
            axis.set_xscale("symlog", linthresh=1, linscale=0.5)
            axis.minorticks_off()
        axis.set_xticks(epochs, [str(epoch) for epoch in epochs])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    caption(
        figure,
        "A layer that settled moved far from its start and little lately; one that never learned moved little "
        "from its start too. Snapshot epoch 0 (train.py --snapshot-epochs 0,...) is the initial weights.",
    )
    save_figure(figure, path)


def evolution(args):
    device = pick_device(args.device)
    snapshot_files = snapshot_paths(args.snapshots)
    snapshots, preprocess = load_snapshots(snapshot_files, args.snapshots, device)
    epochs = [epoch for epoch, _ in snapshots]
    final = snapshots[-1][1]
    layers = chosen_layers(final, args.layers, args.snapshots)
    require_maps(final, layers, args.maps, args.maps_per_layer)
    paths = find_images(args.images)
    paths = [paths[i] for i in spread_evenly(len(paths), args.max_images)]  # every class folder
    out = claim_out(
        args,
        os.path.normpath(args.snapshots),
        [args.snapshots, *snapshot_files, args.images, *paths],
        images=args.images,
    )
    figures = {layer: out.path(f"evolution_layer{layer}.png") for layer in layers}
    change_figure, change_table = out.path("evolution_change.png"), out.path("evolution_change.csv")
    weights_table = out.path("evolution_weights.csv")
    paths, inputs = usable_inputs(paths, preprocess, args.batch_size, "decoding images", args.images)
    strongest = {
        epoch: strongest_activations(
            model, tensor_batches(inputs, args.batch_size, f"epoch {epoch}"), layers, device, k=1
        )
        for epoch, model in snapshots
    }

    def located(epoch, layer, m):
        values, images, ys, xs = strongest[epoch][layer]
        return (images[m, 0].item(), layer, m, ys[m, 0].item(), xs[m, 0].item()), values[m, 0].item()

    rows, changes = [], {layer: {} for layer in layers}
    for layer in layers:
        maps = chosen_maps(args.maps, strongest[epochs[-1]][layer][0], maps_per_layer(args))
        panels, previous = [], None
        for epoch, model in snapshots:
            # Each map's strongest activation at this epoch, for the figure; and its activation
            # at the final epoch's strongest place, a fixed point to measure how it still changes.
            requests = [located(epoch, layer, m)[0] for m in maps]
            anchors = [located(epochs[-1], layer, m)[0] for m in maps]
            projected = [patch.cpu() for patch in project(model, inputs, requests + anchors)]
            panels.append(torch.stack(projected[: len(maps)]))
            anchored = projected[len(maps) :]
            for i, m in enumerate(maps):
                change = None if previous is None else projection_change(previous[i], anchored[i])
                if change is not None:
                    changes[layer].setdefault(epoch, []).append(change)
                image, _, _, y, x = requests[i]
                rows.append(
                    {
                        "layer": layer,
                        "map": m,
                        "epoch": epoch,
                        "change_from_previous": "" if change is None else round(change, 6),
                        "strongest_image": paths[image],
                        "y": y,
                        "x": x,
                        "strongest_value": round(located(epoch, layer, m)[1], 6),
                    }
                )
            previous = anchored
        plot_evolution(panels, maps, epochs, figures[layer], f"layer {layer}: strongest activation per epoch")
        print(f"wrote {figures[layer]}")

    drift = weight_drift(snapshots, layers)
    plot_changes(changes, drift, epochs, change_figure)
    atomic_write_text(change_table, csv_text(rows))
    atomic_write_text(weights_table, csv_text(drift))
    for row in drift:
        if row["epoch"] == epochs[-1]:
            print(
                f"layer {row['layer']}: weights moved {row['from_first']:.1%} from epoch {epochs[0]}, "
                f"{row['from_previous']:.1%} since the previous snapshot"
            )
    print(f"wrote {change_figure}, {change_table} and {weights_table}")


def add_command(commands, name, description, summary, run):
    parser = commands.add_parser(
        name, description=description, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(run=run)
    return parser


def add_search(parser, maps_per_layer):
    """The flags of the commands that search photos for each map's strongest activations."""
    add_images(parser)
    add_device(parser)
    add_batch_size(parser, default=32)
    parser.add_argument(
        "--layers", type=int_list, metavar="L1,L2,...", help="convolutional layers to show (default: all of them)"
    )
    parser.add_argument(
        "--maps",
        type=int_list,
        metavar="M1,M2,...",
        help="show these maps of every chosen layer (default: the --maps-per-layer most active)",
    )
    add_maps_per_layer(parser, default=maps_per_layer)
    # Not given, it stands for the default, which a layer with fewer maps shows all of; a
    # number given is checked against every layer before the search.
    parser.set_defaults(maps_per_layer=None, default_maps_per_layer=maps_per_layer)


def maps_per_layer(args):
    """How many of a layer's most active maps to show (`chosen_maps` caps it to the layer's)."""
    return args.maps_per_layer or args.default_maps_per_layer


def parse_args(argv=None):
    parser = script_parser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    top = add_command(commands, "top9", TOP9, "figure 2: the 9 strongest activations of each map, projected", top9)
    add_checkpoint(top)
    add_search(top, maps_per_layer=9)
    top.add_argument(
        "--stretch",
        default="each",
        choices=["each", "shared"],
        help="each: every projection contrast-stretched by its own 99th-percentile magnitude, so that "
        "weak ones are legible too; shared: one scale for a map's nine, so that their strengths "
        "compare (default: %(default)s)",
    )
    add_out(top)
    weights = add_command(commands, "filters", FILTERS, "figure 6: the layer-1 filters", filters)
    add_checkpoint(weights, nargs="+", help="one checkpoint, or two to draw side by side")
    add_out(weights, beside="the first checkpoint")
    evolve = add_command(commands, "evolution", EVOLUTION, "figure 4: features across training snapshots", evolution)
    evolve.add_argument(
        "--snapshots", default=f"{DEFAULT_RUN}/snapshots", help="train.py's snapshot folder (default: %(default)s)"
    )
    add_search(evolve, maps_per_layer=4)
    add_max_images(evolve, default=400)
    add_out(evolve, beside="the snapshots folder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    run_main(main)
