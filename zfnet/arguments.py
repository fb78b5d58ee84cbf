"""The command-line vocabulary every script shares: one definition per flag, so that the same
word means the same thing, with the same help, in every script.

    --checkpoint  a checkpoint written by train.py
    --data        a split folder holding train/ and val/ (split_data.py makes one)
    --images      a folder of photos, searched recursively
    --device      where the network runs
    --batch-size  photos per forward pass
    --out         the folder a script writes into; for the tools that read a checkpoint it
                  defaults to a folder beside that checkpoint, so that two runs' figures
                  never overwrite each other
    --seed        the random seed

Every script parses its command line into `args`.
"""

import argparse
import glob
import os
import sys

from zfnet.projections import RULES

DEFAULT_RUN = "runs/zfnet"
DEFAULT_CHECKPOINT = f"{DEFAULT_RUN}/best.pth"
DEFAULT_DATA = "flower_data"
DEFAULT_IMAGES = f"{DEFAULT_DATA}/val"


def script_parser(description, **kwargs):
    """An ArgumentParser that shows the script's docstring as written."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )


NEWEST_RUN = "the newest run"  # --checkpoint's default, resolved by newest_checkpoint


def newest_checkpoint(text):
    """--checkpoint's value: the path given, or for its default the best.pth of the most
    recently trained run under runs/ (here), said in one line when it is not runs/zfnet's;
    runs/zfnet/best.pth when there is none."""
    if text != NEWEST_RUN:
        return text
    found = glob.glob(os.path.join(os.path.dirname(DEFAULT_RUN), "*", "best.pth"))
    if not found:
        return DEFAULT_CHECKPOINT
    newest = max(found, key=os.path.getmtime)
    if os.path.normpath(newest) != os.path.normpath(DEFAULT_CHECKPOINT):
        print(f"note: --checkpoint {newest}, the newest run's (give --checkpoint to choose another)", file=sys.stderr)
    return newest


def add_checkpoint(parser, nargs=None, help="checkpoint written by train.py", default=None):
    """--checkpoint; with `nargs`, a list whose default is `default` (or the one default
    checkpoint). Without a default of its own it is the newest run's best.pth (argparse passes
    a string default through `type`, so it is resolved only when the flag is not given)."""
    shown = " ".join(default) if isinstance(default, list) else default
    if default is None:
        default = NEWEST_RUN
        shown = f"best.pth of the newest run under {os.path.dirname(DEFAULT_RUN)}/, else {DEFAULT_CHECKPOINT}"
    parser.add_argument(
        "--checkpoint",
        default=default,
        nargs=nargs,
        type=newest_checkpoints if nargs else newest_checkpoint,
        metavar="PTH",
        help=f"{help} (default: {shown})",
    )


def newest_checkpoints(text):
    """newest_checkpoint for a --checkpoint that takes several: its default becomes a list of one."""
    return [newest_checkpoint(text)] if text == NEWEST_RUN else text


def add_data(parser):
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="split folder holding train/ and val/, as split_data.py makes it (default: %(default)s)",
    )


def add_images(parser, help="folder of photos, searched recursively"):
    parser.add_argument("--images", default=DEFAULT_IMAGES, help=f"{help} (default: %(default)s)")


def add_device(parser):
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: %(default)s)",
    )


def add_batch_size(parser, default=64):
    parser.add_argument(
        "--batch-size", default=default, type=positive_int, help="photos per forward pass (default: %(default)s)"
    )


def add_out(parser, default=None, beside="the checkpoint"):
    """--out; without a default of its own it means a folder named after the script beside
    `beside`, resolved by `out_folder`."""
    where = default if default else f"a folder named after the script beside {beside}"
    parser.add_argument("--out", default=default, help=f"folder for the outputs (default: {where})")


def add_workers(parser, where="once"):
    """--workers: processes that decode the photos into the split's cache."""
    parser.add_argument(
        "--workers",
        default=min(4, os.cpu_count() or 1),
        type=non_negative_int,
        help=f"processes that decode the photos into the cache, {where} (default: %(default)s)",
    )


def add_seed(parser, what="the random choices"):
    parser.add_argument("--seed", default=0, type=int, help=f"seed of {what} (default: %(default)s)")


def add_rule(parser):
    """--rule: how a projection passes each ReLU on its way down (zfnet.projections)."""
    parser.add_argument(
        "--rule",
        default="deconvnet",
        choices=RULES,
        help="deconvnet: the paper's (relu of the signal); guided: guided backpropagation (also the forward "
        "pass's mask); gradient: the plain gradient. visualize.py sanity measures how much of each is the "
        "trained network (default: %(default)s)",
    )


def add_stretch(parser):
    """--stretch: how top9's projections are contrast-stretched."""
    parser.add_argument(
        "--stretch",
        default="each",
        choices=["each", "shared"],
        help="each: every projection contrast-stretched by its own 99th-percentile magnitude, so that "
        "weak ones are legible too; shared: one scale for a map's nine, so that their strengths "
        "compare (default: %(default)s)",
    )


def add_optimisation(parser, steps):
    """--steps, --seed and --diverse of feature visualisation by optimisation (zfnet.optimize)."""
    add_steps(parser, default=steps, what="of gradient ascent on each layer's pictures")
    add_seed(parser, what="the starting pictures and the random transformations")
    parser.add_argument(
        "--diverse",
        default=1,
        type=positive_int,
        metavar="K",
        help="pictures per map, each pushed away from the others' style, at K times the time (default: %(default)s)",
    )


def add_steps(parser, default, what):
    parser.add_argument(
        "--steps", default=default, type=positive_int, help=f"number of steps {what} (default: %(default)s)"
    )


def out_folder(args, tool, beside=None):
    """`args.out`, or `<folder of beside (default: args.checkpoint)>/<tool>`."""
    if args.out:
        return args.out
    anchor = beside if beside is not None else args.checkpoint
    return os.path.join(os.path.dirname(anchor) or ".", tool)


def int_list(text):
    """`--flag 1,2,5` as [1, 2, 5]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def positive_ints(text):
    """`--flag 25,50,112` as [25, 50, 112], each at least 1, at least one of them."""
    values = int_list(text)
    if not values:
        raise argparse.ArgumentTypeError(f"expected one or more whole numbers, got {text!r}")
    return [positive_int(str(value)) for value in values]


def positive_int(text):
    """An integer of at least 1, checked while parsing so that no work starts before."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_max_images(parser, default=None):
    """--max-images: how many of the photos a search reads at most (None: all of them)."""
    parser.add_argument(
        "--max-images",
        default=default,
        type=positive_int,
        help=f"search at most this many photos, spread evenly over the folder (default: {default or 'all'})",
    )


def add_maps_per_layer(parser, default=None):
    """--maps-per-layer: how many feature maps of each layer to show (None: all of them)."""
    parser.add_argument(
        "--maps-per-layer",
        default=default,
        type=positive_int,
        help=f"maps per layer, the most active ones (default: {default or 'all'})",
    )


def add_map_search(parser, maps_per_layer):
    """The flags of the commands that search photos for each map's strongest activations
    (visualize.py top9 and evolution): the photos, the layers and the maps to show."""
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


def chosen_count(args):
    """How many of a layer's most active maps to show (`chosen_maps` caps it to the layer's)."""
    return args.maps_per_layer or args.default_maps_per_layer


def non_negative_int(text):
    """An integer of at least 0 (a count that may be none), checked while parsing."""
    try:
        value = int(text)
    except ValueError:
        return positive_int(text)  # which says that it is not a whole number
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def parse_with_quick(parser, argv, quick, what):
    """Parse `argv` after adding --quick, a benchmark's check that it still runs: `what` (say,
    "on the bundled sample with a narrow random network"), with the flags `quick` names
    (destination: value) set to those values, as its help lists them."""
    shown = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in quick.items() if name != "images")
    parser.add_argument("--quick", action="store_true", help=f"a quick check {what}: {shown}, whatever is given")
    if "--quick" in (sys.argv[1:] if argv is None else argv) and parser.get_default("checkpoint") == NEWEST_RUN:
        parser.set_defaults(checkpoint=None)  # --quick makes its own network: naming the newest run would mislead
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(quick)
    return args


def parse_noting_given(parser, argv):
    """`(args, given)`: `argv` parsed by `parser`, and the destinations of the flags given,
    sorted (the others hold their defaults). A default is not a choice the user made: a
    resumed run keeps its saved value wherever the flag was not given."""
    unset = object()
    destinations = {action.dest for action in parser._actions if action.default != argparse.SUPPRESS}
    args = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(destinations, unset)))
    given = sorted(name for name in destinations if getattr(args, name) is not unset)
    for name in destinations.difference(given):
        setattr(args, name, parser.get_default(name))
    return args, given
