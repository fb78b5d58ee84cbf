"""What the layers of a trained ZFNet respond to: the paper's feature visualisations
(Zeiler & Fergus 2014, figures 2, 4 and 6), made with the deconvnet in zfnet/deconv.py, and
how much of each projection is the trained network (sanity checks, Adebayo et al. 2018).

    python visualize.py top9                       # figure 2: layers 1-5, their 9 most active maps
    python visualize.py top9 --layers 5 --maps 3,17,40 --images my_photos/ --rule guided
    python visualize.py filters                    # figure 6: the layer-1 filters
    python visualize.py filters --checkpoint runs/alexnet/best.pth runs/zfnet/best.pth
    python visualize.py evolution                  # figure 4, from train.py --snapshot-epochs
    python visualize.py sanity                     # does each rule's picture survive random weights?
    python visualize.py optimize --layers 5 --maps 3,17  # what these maps want to see, by optimisation
    python visualize.py optimize --layers 5 --diverse 3  # 3 pictures a map, pushed apart in style

Each command writes into --out (default: visualize/ beside the checkpoint, or the snapshots folder) the files
its --help names; --out must be a new or empty folder, or one these commands wrote, outside --images. A photo
that cannot be used (truncated, not an image, a broken link) is skipped with a note.
"""

import argparse
import functools
import json
import os

from zfnet import optimize, top9
from zfnet.arguments import (
    DEFAULT_RUN,
    add_checkpoint,
    add_map_search,
    add_max_images,
    add_optimisation,
    add_out,
    add_rule,
    add_seed,
    add_stretch,
    chosen_count,
    out_folder,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint
from zfnet.deconv import project, receptive_fields
from zfnet.errors import UserError, run_main
from zfnet.files import atomic_write_text
from zfnet.images import find_images, unnormalize
from zfnet.outputs import OutputFolder, require_outside
from zfnet.runtime import pick_device
from zfnet.studies import evolution, features, optimized, sanity

OUTPUTS = features.OUTPUTS + evolution.OUTPUTS + sanity.OUTPUTS + optimized.OUTPUTS  # into one folder by default


def claim_out(args, beside, inputs, images=None):
    """The output folder (--out, or visualize/ beside `beside`), claimed before the long
    work starts; outside the folder of photos `images`, whose search would find the figures."""
    folder = out_folder(args, "visualize", beside=beside)
    if images is not None:
        require_outside(folder, images, "--images")
    return OutputFolder.claim(folder, inputs=inputs, outputs=OUTPUTS)


def searched(args, outputs):
    """The checkpoint's network, its preprocessing, the claimed output folder, the photos
    used, and per chosen layer its strongest activations and the maps to show. The files
    `outputs(layers)` names are checked before the search (none may be an input)."""
    device = pick_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    layers = top9.chosen_layers(model, args.layers, args.checkpoint)
    top9.require_maps(model, layers, args.maps, args.maps_per_layer)
    paths = find_images(args.images)
    out = claim_out(args, args.checkpoint, [args.checkpoint, args.images, *paths], images=args.images)
    list(map(out.path, outputs(layers)))  # raises now, before the search, if one is an input
    kept, skipped = [], []
    batches = top9.usable_batches(paths, checkpoint["preprocess"], args.batch_size, "finding top 9", kept, skipped)
    best = top9.strongest_activations(model, batches, layers, device)
    top9.require_usable(kept, skipped, args.images)
    maps = {layer: top9.chosen_maps(args.maps, best[layer][0], chosen_count(args)) for layer in layers}
    features.warn_if_noise(model)
    return model, checkpoint["preprocess"], out, kept, best, maps


def strongest(args):
    model, preprocess, out, kept, best, maps = searched(args, features.top9_outputs)
    fields = receptive_fields(model)
    index = []
    for layer, chosen in maps.items():
        figure = out.path(f"top9_layer{layer}.png")
        shown, entries = features.top9(model, preprocess, kept, layer, best[layer], fields[layer], chosen, args.rule)
        first, shared = layer == model.conv_layers[0], args.stretch == "shared"
        features.plot_top9(shown, chosen, layer, fields[layer], first, shared, figure, args.rule)
        print(f"wrote {figure}")
        index += entries
    summary = features.summary(args.checkpoint, args.images, preprocess, fields, list(maps), index, args.rule)
    atomic_write_text(out.path("top9.json"), json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out.path('top9.json')}")


def check(args):
    model, preprocess, out, kept, best, maps = searched(args, lambda layers: sanity.OUTPUTS)
    ranked = [r for layer, chosen in maps.items() for r in features.strongest_requests(best[layer], layer, chosen)]
    inputs, requests, photos = features.needed_inputs(kept, preprocess, ranked, "decoding images")
    pictures = unnormalize(inputs, preprocess["mean"], preprocess["std"])
    example = next(i for i, request in enumerate(requests) if request[1] == max(maps))  # the deepest layer's first
    found = sanity.measure(model, inputs, pictures, requests, seed=args.seed, example=example)
    report = sanity.summary(args.checkpoint, args.images, args.seed, found, photos)
    outputs = [out.path(name) for name in sanity.OUTPUTS]
    print("\n".join(sanity.write(found, report, outputs, os.path.relpath(photos[requests[example][0]]))))


def dream(args):
    model, preprocess, out, kept, best, maps = searched(args, lambda layers: optimized.OUTPUTS)
    ranked = [r for n, chosen in maps.items() for r in features.strongest_requests(best[n], n, chosen, per_map=1)]
    inputs, requests, photos = features.needed_inputs(kept, preprocess, ranked, "decoding the strongest photos")
    pictures = unnormalize(inputs, preprocess["mean"], preprocess["std"])
    steps, seed = args.steps, args.seed
    found, colours = optimized.measure(model, preprocess, maps, best, pictures, requests, steps, seed, args.diverse)
    report = optimized.summary(args.checkpoint, args.images, steps, args.seed, found, colours, photos)
    title = f"{os.path.relpath(args.checkpoint)}: pictures optimised to excite each map ({steps} steps), its best photo"
    print("\n".join(optimized.write(found, report, [out.path(name) for name in optimized.OUTPUTS], title)))


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
    final = snapshots[-1][1]
    layers = top9.chosen_layers(final, args.layers, args.snapshots)
    top9.require_maps(final, layers, args.maps, args.maps_per_layer)
    paths = find_images(args.images)
    paths = [paths[i] for i in top9.spread_evenly(len(paths), args.max_images)]  # every class folder
    sources = [args.snapshots, *snapshot_files, args.images, *paths]
    out = claim_out(args, os.path.normpath(args.snapshots), sources, images=args.images)
    outputs = {name: out.path(name) for name in evolution.output_names(layers)}
    paths, inputs = top9.usable_inputs(paths, preprocess, args.batch_size, "decoding images", args.images)
    strongest = evolution.strongest_places(snapshots, inputs, layers, args.batch_size)
    last = strongest[snapshots[-1][0]]
    maps = {layer: top9.chosen_maps(args.maps, last[layer][0], chosen_count(args)) for layer in layers}
    # Each map's strongest activation at each epoch, for the figure; and its activation at the
    # final epoch's strongest place, a fixed point to measure how it still changes.
    by_rule = functools.partial(project, rule=args.rule)
    traced = evolution.trace(snapshots, inputs, strongest, maps, by_rule, anchored=True)
    title = f"strongest activation per epoch, projected by the {features.RULE_NAMES[args.rule]}"
    print("\n".join(evolution.write(snapshots, traced, maps, paths, title, outputs)))


def add_command(commands, name, description, summary, run):
    parser = commands.add_parser(
        name, description=description, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(run=run)
    return parser


def parse_args(argv=None):
    parser = script_parser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    top = add_command(commands, "top9", features.TOP9_COMMAND, "figure 2: each map's 9 strongest, projected", strongest)
    add_checkpoint(top)
    add_map_search(top, maps_per_layer=9)
    add_stretch(top)
    add_rule(top)
    add_out(top)
    weights = add_command(commands, "filters", features.FILTERS_COMMAND, "figure 6: the layer-1 filters", filters)
    add_checkpoint(weights, nargs="+", help="one checkpoint, or two to draw side by side")
    add_out(weights, beside="the first checkpoint")
    history = add_command(commands, "evolution", evolution.COMMAND, "figure 4: features across snapshots", evolve)
    history.add_argument(
        "--snapshots", default=f"{DEFAULT_RUN}/snapshots", help="train.py's snapshot folder (default: %(default)s)"
    )
    add_map_search(history, maps_per_layer=4)
    add_max_images(history, default=400)
    add_rule(history)
    add_out(history, beside="the snapshots folder")
    checks = add_command(commands, "sanity", sanity.COMMAND, "how much of each projection is the network", check)
    add_checkpoint(checks)
    add_map_search(checks, maps_per_layer=9)
    add_seed(checks, what="the re-initialised weights")
    add_out(checks)
    wanted = add_command(commands, "optimize", optimized.COMMAND, "what each map wants to see, optimised", dream)
    add_checkpoint(wanted)
    add_map_search(wanted, maps_per_layer=9)
    add_optimisation(wanted, steps=optimize.STEPS)
    add_out(wanted)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    run_main(main)
