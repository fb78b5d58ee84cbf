"""What the layers of a trained ZFNet respond to: the paper's feature visualisations
(Zeiler & Fergus 2014, figures 2, 4 and 6), made with the deconvnet in zfnet/deconv.py.

    python visualize.py top9                       # figure 2: layers 1-5, their 9 most active maps
    python visualize.py top9 --layers 5 --maps 3,17,40 --images my_photos/
    python visualize.py filters                    # figure 6: the layer-1 filters
    python visualize.py filters --checkpoint runs/alexnet/best.pth runs/zfnet/best.pth
    python visualize.py evolution                  # figure 4, from train.py --snapshot-epochs

Writes into --out (default: visualize/ beside the checkpoint, or beside the snapshots folder):
top9_layerN.png and top9.json (every patch's image, position, box and value); filters.png;
evolution_layerN.png, evolution_change.png, evolution_change.csv and evolution_weights.csv.
--out must be a new or empty folder, or one these commands wrote, outside --images. A photo that cannot be used
(truncated, not an image, too large to decode safely, a broken link) is skipped with a note.
"""

import argparse
import json
import os

from zfnet.arguments import (
    DEFAULT_RUN,
    add_checkpoint,
    add_map_search,
    add_max_images,
    add_out,
    chosen_count,
    out_folder,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint
from zfnet.deconv import project, receptive_fields
from zfnet.errors import UserError, run_main
from zfnet.files import atomic_write_text
from zfnet.images import find_images
from zfnet.outputs import OutputFolder, require_outside
from zfnet.runtime import pick_device
from zfnet.studies import evolution, features
from zfnet.tables import csv_text
from zfnet.top9 import (
    chosen_layers,
    chosen_maps,
    require_maps,
    require_usable,
    spread_evenly,
    strongest_activations,
    usable_batches,
    usable_inputs,
)

# What the three commands write, into one folder by default.
OUTPUTS = features.OUTPUTS + evolution.OUTPUTS

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


def claim_out(args, beside, inputs, images=None):
    """The output folder (--out, or visualize/ beside `beside`), claimed before the long
    work starts; outside the folder of photos `images`, whose search would find the figures."""
    folder = out_folder(args, "visualize", beside=beside)
    if images is not None:
        require_outside(folder, images, "--images")
    return OutputFolder.claim(folder, inputs=inputs, outputs=OUTPUTS)


def top9(args):
    device = pick_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    preprocess = checkpoint["preprocess"]
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
    index = []
    for layer in layers:
        maps = chosen_maps(args.maps, best[layer][0], chosen_count(args))
        shown, entries = features.top9(model, preprocess, kept, layer, best[layer], fields[layer], maps)
        first, shared = layer == model.conv_layers[0], args.stretch == "shared"
        features.plot_top9(shown, maps, layer, fields[layer], first, shared, figures[layer])
        print(f"wrote {figures[layer]}")
        index += entries
    summary = features.summary(args.checkpoint, args.images, preprocess, fields, layers, index)
    atomic_write_text(index_path, json.dumps(summary, indent=1) + "\n")
    print(f"wrote {index_path}")


def filters(args):
    if len(args.checkpoint) > 2:
        raise UserError("filters draws one checkpoint or two side by side")
    networks = [(path, load_checkpoint(path, "cpu")[0]) for path in args.checkpoint]
    out = claim_out(args, args.checkpoint[0], args.checkpoint).path("filters.png")
    print("\n".join(features.plot_filters(networks, out)) + f"\nwrote {out}")


def evolve(args):
    device = pick_device(args.device)
    snapshot_files = evolution.snapshot_files(args.snapshots, required=True)
    snapshots, preprocess = evolution.load_snapshots(snapshot_files, args.snapshots, device)
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
    strongest = evolution.strongest_places(snapshots, inputs, layers, args.batch_size)
    maps = {layer: chosen_maps(args.maps, strongest[epochs[-1]][layer][0], chosen_count(args)) for layer in layers}
    # Each map's strongest activation at each epoch, for the figure; and its activation at the
    # final epoch's strongest place, a fixed point to measure how it still changes.
    traced = evolution.trace(snapshots, inputs, strongest, maps, project, anchored=True)
    rows, changes = evolution.report(traced, maps, epochs, paths)
    for layer in layers:
        title = f"layer {layer}: strongest activation per epoch"
        evolution.plot(traced[layer][1], maps[layer], epochs, figures[layer], title)
        print(f"wrote {figures[layer]}")

    drift = evolution.weight_drift(snapshots, layers)
    evolution.plot_changes(changes, drift, epochs, change_figure)
    atomic_write_text(change_table, csv_text(rows))
    atomic_write_text(weights_table, csv_text(drift))
    print("\n".join(evolution.drift_lines(drift, epochs)))
    print(f"wrote {change_figure}, {change_table} and {weights_table}")


def add_command(commands, name, description, summary, run):
    parser = commands.add_parser(
        name, description=description, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(run=run)
    return parser


def parse_args(argv=None):
    parser = script_parser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    top = add_command(commands, "top9", TOP9, "figure 2: the 9 strongest activations of each map, projected", top9)
    add_checkpoint(top)
    add_map_search(top, maps_per_layer=9)
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
    history = add_command(commands, "evolution", EVOLUTION, "figure 4: features across training snapshots", evolve)
    history.add_argument(
        "--snapshots", default=f"{DEFAULT_RUN}/snapshots", help="train.py's snapshot folder (default: %(default)s)"
    )
    add_map_search(history, maps_per_layer=4)
    add_max_images(history, default=400)
    add_out(history, beside="the snapshots folder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    run_main(main)
