"""Layer-1 filter smoothness, validation accuracy and training time of trained runs, against
white noise and the goals of a network worth looking inside.

    python bench/filter_smoothness.py --checkpoint runs/zfnet/best.pth runs/features/best.pth
    python bench/filter_smoothness.py --quick     # a check that it runs: random networks, in seconds

A network whose layer-1 filters are still the random noise they started from shows nothing
in the paper's figures. Smoothness is the share of the filters' energy below 1/4 (and 1/8)
cycle per pixel once each filter's mean per colour channel is removed (zfnet.spectra): white
noise has 18% (3%), smooth colour blobs and wide edges about 90% or more. Oriented filters are
edges and bars: the coherence of a filter's structure tensor (how much its gradients share one
direction) above 0.5, which white noise almost never reaches. Each checkpoint's row also gives
its validation accuracy and epochs as train.py recorded them, and the recipe and training
minutes (validation included, decoding excluded) from the last.pth beside it; the last column
says whether the run meets the goals: smoothness of at least 80%, at least a quarter of the
filters oriented, validation accuracy of at least 85%, at most 60 minutes of training.
"""

import os
import tempfile

import torch

from model import ZFNet
from zfnet.arguments import add_checkpoint, script_parser
from zfnet.checkpoint import load_checkpoint, model_payload, read_checkpoint, save_checkpoint
from zfnet.errors import run_main
from zfnet.recipes import PREPROCESS, recipe_label, recorded_settings
from zfnet.spectra import noise_oriented_share, noise_smoothness, oriented_filters, smoothness
from zfnet.tables import markdown_table


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(parser, nargs="+", help="checkpoints written by train.py")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a quick check on two random networks, one with a small layer-1 start (--checkpoint is ignored)",
    )
    return parser.parse_args(argv)


GOALS = {"smoothness": 0.80, "oriented": 0.25, "accuracy": 0.85, "minutes": 60}


def recipe_and_minutes(path):
    """The recipe of the run that wrote `path` and its training minutes, from the last.pth
    beside it (None where there is none)."""
    last = os.path.join(os.path.dirname(path), "last.pth")
    if not os.path.isfile(last):
        return "?", None
    state = read_checkpoint(last)
    config = state.get("train_config") or {}
    recipe = recipe_label(config["recipe"], recorded_settings(state)) if "recipe" in config else "?"
    return recipe, sum(row["seconds"] for row in state.get("history", [])) / 60


def verdict(smooth, oriented, accuracy, minutes):
    """Which goals a run misses, or "yes"."""
    missed = [
        name
        for name, met in (
            (f"smoothness < {GOALS['smoothness']:.0%}", smooth >= GOALS["smoothness"]),
            (f"oriented < {GOALS['oriented']:.0%}", oriented >= GOALS["oriented"]),
            (
                "accuracy unknown" if accuracy is None else f"accuracy < {GOALS['accuracy']:.0%}",
                accuracy is not None and accuracy >= GOALS["accuracy"],
            ),
            (
                "time unknown" if minutes is None else f"over {GOALS['minutes']} min",
                minutes is not None and minutes <= GOALS["minutes"],
            ),
        )
        if not met
    ]
    return "yes" if not missed else "no: " + ", ".join(missed)


def row(path):
    model, checkpoint = load_checkpoint(path)
    weights = model.layer1.conv.weight.detach()
    accuracy = checkpoint.get("val_accuracy")
    name, minutes = recipe_and_minutes(path)
    smooth = smoothness(weights)
    oriented = oriented_filters(weights)
    return {
        "run": os.path.relpath(path),
        "recipe": name,
        "epochs": checkpoint["epoch"],
        "minutes": "-" if minutes is None else f"{minutes:.1f}",
        "val accuracy": "-" if accuracy is None else f"{accuracy:.1%}",
        "smooth < 1/4": f"{smooth:.1%}",
        "smooth < 1/8": f"{smoothness(weights, below=1 / 8):.1%}",
        "oriented": f"{int(oriented.sum())} of {len(oriented)}",
        "kernel": weights.shape[-1],
        "meets the goals": verdict(smooth, oriented.double().mean().item(), accuracy, minutes),
    }


def random_networks(folder):
    """Two random half-width networks: as initialised, and with a tenth of layer 1's start
    plus a smooth bump added (a stand-in for learned blobs)."""
    torch.manual_seed(0)
    plain = ZFNet(num_classes=5)
    smooth = ZFNet(num_classes=5)
    grid = torch.arange(7.0) - 3
    bump = torch.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / 4.5)
    with torch.no_grad():
        smooth.layer1.conv.weight.mul_(0.1).add_(0.05 * bump)
    paths = []
    for name, model in (("random", plain), ("smooth", smooth)):
        paths.append(os.path.join(folder, name, "best.pth"))
        save_checkpoint(model_payload(model, ["a", "b", "c", "d", "e"], PREPROCESS, 0), paths[-1])
    return paths


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        paths = random_networks(folder) if args.quick else args.checkpoint
        rows = [row(path) for path in paths]
    for kernel in sorted({r["kernel"] for r in rows}):
        rows.insert(
            0,
            {
                "run": f"white noise, {kernel}x{kernel}",
                "recipe": "-",
                "epochs": "-",
                "minutes": "-",
                "val accuracy": "-",
                "smooth < 1/4": f"{noise_smoothness(kernel):.1%}",
                "smooth < 1/8": f"{noise_smoothness(kernel, below=1 / 8):.1%}",
                "oriented": f"{noise_oriented_share(kernel):.1%}",
                "kernel": kernel,
                "meets the goals": "-",
            },
        )
    print(markdown_table(rows), end="")


if __name__ == "__main__":
    run_main(main)
