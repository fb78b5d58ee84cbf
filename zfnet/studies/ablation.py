"""The ablation study (section 5.1 and table 3 of the paper): the full model and variants with
layers removed or resized, trained with the same recipe and seeds, and their errors compared.

ablation.py is a thin command line over `run`.
"""

import os

import numpy as np

from model import WIDTHS
from zfnet.data import scan_split
from zfnet.figures import caption, plt, save_figure
from zfnet.recipes import build_model, parse_args
from zfnet.studies.common import claim_study_folder, train_run
from zfnet.tables import mean_and_spread, plus_minus, write_tables

# Each variant scales the base widths (--width) of layers 1-5 and 6-7; 0 removes a layer.
# The factors are the paper's changes relative to its own widths (384-384-256 maps in layers
# 3-5, 4096 units in layers 6-7), so --width full trains exactly the paper's sizes.
VARIANTS = {
    "full": ("the full model", (1, 1, 1, 1, 1), (1, 1)),
    "no-layer7": ("layer 7 removed", (1, 1, 1, 1, 1), (1, 0)),
    "no-layers6-7": ("layers 6 and 7 removed", (1, 1, 1, 1, 1), (0, 0)),
    "no-layers3-4": ("layers 3 and 4 removed", (1, 1, 0, 0, 1), (1, 1)),
    "no-layers3-4-6-7": ("layers 3, 4, 6 and 7 removed", (1, 1, 0, 0, 1), (0, 0)),
    "narrower-layers6-7": ("layers 6, 7 halved (paper: 2048 units)", (1, 1, 1, 1, 1), (1 / 2, 1 / 2)),
    "wider-layers6-7": ("layers 6, 7 doubled (paper: 8192 units)", (1, 1, 1, 1, 1), (2, 2)),
    "wider-layers3-5": ("layers 3, 4, 5 at 4/3, 8/3, 2x (paper: 512, 1024, 512 maps)", (1, 1, 4 / 3, 8 / 3, 2), (1, 1)),
}

# What the study writes into its --out: a rerun may replace them.
OUTPUTS = ("ablation.csv", "ablation.md", "ablation.png", *VARIANTS)


def variant_widths(name, width):
    """Layer widths (conv_channels, fc_features) of a variant built on the base `width`."""
    _, conv_scale, fc_scale = VARIANTS[name]
    base = WIDTHS[width]
    return (
        [round(c * s) for c, s in zip(base["conv_channels"], conv_scale)],
        [round(f * s) for f, s in zip(base["fc_features"], fc_scale)],
    )


def parameter_count(config, num_classes):
    return sum(parameter.numel() for parameter in build_model(config, num_classes).parameters())


def run_variant(name, args, num_classes, out):
    """Train (or read back) every seed of one variant into the claimed folder `out`; its table
    row as plain numbers for the CSV and the chart, and formatted for the Markdown table."""
    conv_channels, fc_features = variant_widths(name, args.training.width)
    run_flags = [
        *args.train_flags,
        "--data",
        os.path.abspath(args.data),
        "--conv-channels",
        ",".join(map(str, conv_channels)),
        "--fc-features",
        ",".join(map(str, fc_features)),
    ]
    train_errors, val_errors, seconds = [], [], 0.0
    for seed in range(args.seeds):
        print(f"== {name} ({VARIANTS[name][0]}), seed {seed}")
        history = train_run([*run_flags, "--seed", str(seed)], out.path(name, f"seed{seed}"), args.epochs)
        train_errors.append(1 - history[-1]["train_acc"])
        val_errors.append(1 - history[-1]["val_acc"])
        seconds += sum(row["seconds"] for row in history)
    (train_error, train_sd), (val_error, val_sd) = mean_and_spread(train_errors), mean_and_spread(val_errors)
    parameters = parameter_count(parse_args(run_flags), num_classes)
    row = {
        "variant": name,
        "change": VARIANTS[name][0],
        "layers_1_5": "-".join(map(str, conv_channels)),
        "layers_6_7": "-".join(map(str, fc_features)),
        "parameters": parameters,
        "seeds": args.seeds,
        "train_error": round(train_error, 4),
        "train_error_sd": round(train_sd, 4),
        "val_error": round(val_error, 4),
        "val_error_sd": round(val_sd, 4),
        "minutes": round(seconds / 60, 1),
    }
    readable = {
        "variant": name,
        "change": VARIANTS[name][0],
        "widths (layers 1-5 / 6-7)": f"{row['layers_1_5']} / {row['layers_6_7']}",
        "parameters": f"{parameters:,}",
        "train error": plus_minus(train_errors),
        "val error": plus_minus(val_errors),
        "minutes": row["minutes"],
    }
    return row, readable


def plot(rows, num_classes, path, title):
    """Horizontal bars of train and validation error per variant (with the spread over seeds
    when there are several), against the error of guessing."""
    figure, axis = plt.subplots(figsize=(9, 0.6 * len(rows) + 2), layout="constrained")
    positions = np.arange(len(rows))
    seeds = rows[0]["seeds"]
    for offset, (key, label) in enumerate((("train_error", "training photos"), ("val_error", "validation photos"))):
        spread = [row[f"{key}_sd"] for row in rows] if seeds > 1 else None
        axis.barh(
            positions - 0.2 + 0.4 * offset,
            [row[key] for row in rows],
            height=0.4,
            xerr=spread,
            capsize=3,
            label=f"error on {label}",
        )
    axis.axvline(1 - 1 / num_classes, color="grey", linestyle="--", label="guessing at random")
    axis.set_yticks(positions, [f"{row['variant']} ({row['parameters'] / 1e6:.1f} M)" for row in rows])
    axis.invert_yaxis()
    axis.set(
        xlabel="top-1 error after the last epoch (share of photos wrong)",
        ylabel="variant (parameters, millions)",
        title=title,
        xlim=(0, 1),
    )
    axis.grid(axis="x", alpha=0.3)
    # Above the plot, where it hides no bar: under it, it would meet the caption.
    spread = f"mean ± 1 std over {seeds} seeds" if seeds > 1 else None
    figure.legend(loc="outside upper center", ncol=3, fontsize=9, title=spread)
    caption(
        figure,
        "What to look for: validation error above the base's (the part mattered) or far above training error "
        "(overfitting).",
    )
    save_figure(figure, path)


def run(args):
    """Run the study ablation.py's `args` ask for; returns the stem of its table and chart
    (OUT/ablation)."""
    classes, _ = scan_split(args.data)
    out = claim_study_folder(args.out, {"--data": args.data}, OUTPUTS)
    rows, markdown_rows = zip(*(run_variant(name, args, len(classes), out) for name in args.variants))
    training = args.training
    title = (
        f"Ablation: {training.arch}, {training.width} width, {args.epochs} epoch{'s' * (args.epochs > 1)}, "
        f"{args.seeds} seed{'s' * (args.seeds > 1)}"
    )
    stem = out.path("ablation")  # no input lies in --out, as claim_study_folder made sure
    write_tables(rows, markdown_rows, stem, title)
    plot(rows, len(classes), out.path("ablation.png"), title)
    return stem
