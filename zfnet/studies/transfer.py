"""The transfer study (section 5.2 of the paper): a trained network's layers 1 to 7 kept fixed
under a new softmax trained on N photos per class, against the same network trained from
scratch on the same photos.

transfer.py is a thin command line over `run`.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

from zfnet.checkpoint import load_checkpoint
from zfnet.data import decoded_batches, scan_split
from zfnet.errors import UserError
from zfnet.figures import caption, plt, save_figure
from zfnet.runtime import generator, pick_device
from zfnet.studies.common import claim_study_folder, link_split, train_run
from zfnet.tables import mean_and_spread, plus_minus, write_tables

# What the study writes into its --out: a rerun may replace them.
OUTPUTS = ("transfer.csv", "transfer.md", "transfer.png", "splits", "scratch")
# The softmax's L2 penalty: with a few photos per class and 2048 features the classes are
# separable, and without it the weights would grow without end.
WEIGHT_DECAY = 1e-3


def by_class(classes, samples):
    """`{class: paths}` from scan_split's `[(path, label)]` of one side."""
    return {name: [path for path, label in samples if label == index] for index, name in enumerate(classes)}


def draw_photos(photos, args):
    """Per draw, the photos to train on: the first max(N) photos of each class of DATA/train
    in a random order (its prefixes serve the smaller N)."""
    largest = max(args.per_class)
    short = {name: len(paths) for name, paths in photos.items() if len(paths) < largest}
    if short:
        name, count = next(iter(short.items()))
        more = f"; {len(short) - 1} more classes are short" if len(short) > 1 else ""
        raise UserError(
            f"class {name} has {count} photos in {os.path.join(args.data, 'train')}, "
            f"fewer than --per-class {largest}{more}"
        )

    def drawn(paths, draw, name):
        order = torch.randperm(len(paths), generator=generator(args.seed, "draw", draw, name))
        return [paths[i] for i in order[:largest]]

    return [{name: drawn(paths, draw, name) for name, paths in photos.items()} for draw in range(args.draws)]


def frozen_layers(path, device):
    """A checkpoint's layers 1 to 7, fixed: its network without the softmax (nn.Identity in its
    place), in eval mode so that dropout is off, and without gradients."""
    layers, checkpoint = load_checkpoint(path, device)
    layers.classifier = nn.Identity()
    return layers.requires_grad_(False), checkpoint


@torch.no_grad()  # not inference_mode: the softmax trains on these features with autograd
def softmax_inputs(layers, paths, preprocess, device, batch_size=64):
    """What a softmax on top of the frozen layers sees for each photo: layer 7's outputs."""
    return torch.cat(
        [
            torch.flatten(layers(inputs.to(device)), 1).cpu()
            for _, inputs in decoded_batches(paths, preprocess, batch_size, "layer 7 features")
        ]
    )


def fit_softmax(features, labels, num_classes):
    """A new softmax layer trained to convergence (L-BFGS) on fixed features. The penalised
    loss is convex, so its minimum does not depend on where it starts: zeros, no seed."""
    softmax = nn.Linear(features.shape[1], num_classes)
    nn.init.zeros_(softmax.weight)
    nn.init.zeros_(softmax.bias)
    optimizer = torch.optim.LBFGS(softmax.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = F.cross_entropy(softmax(features), labels) + WEIGHT_DECAY / 2 * softmax.weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    return softmax


def stack(features, photos, classes, count=None):
    """Features and labels of the first `count` photos of each class in `photos`."""
    rows = [(path, label) for label, name in enumerate(classes) for path in photos[name][:count]]
    return torch.stack([features[path] for path, _ in rows]), torch.tensor([label for _, label in rows])


def accuracy(logits, labels):
    return (logits.argmax(1) == labels).float().mean().item()


def plot(rows, num_classes, path, title):
    """Test accuracy against training photos per class, transfer and from scratch, with the
    spread over draws."""
    figure, axis = plt.subplots(figsize=(7, 5), layout="constrained")
    counts = [row["per_class"] for row in rows]
    draws = rows[0]["draws"]
    for key, label, style in (
        ("transfer", "frozen layers 1-7 + new softmax", "-o"),
        ("scratch", "same network from scratch", "-s"),
    ):
        axis.errorbar(
            counts,
            [row[f"{key}_accuracy"] for row in rows],
            yerr=[row[f"{key}_sd"] for row in rows],
            fmt=style,
            capsize=4,
            label=label,
        )
    axis.axhline(1 / num_classes, color="grey", linestyle="--", label="guessing at random")
    axis.set_xscale("log", base=2)
    axis.set_xticks(counts, [str(count) for count in counts])
    axis.minorticks_off()  # ticks at the counts measured only
    axis.set(
        xlabel="training photos per class (log scale)",
        ylabel="test accuracy (share of test photos right)",
        title=title,
        ylim=(0, 1.03),  # a little room above 1, where a perfect score's marks would be cut in half
    )
    axis.grid(alpha=0.3)
    # Above the plot, where it hides no curve: under it, it would meet the caption.
    spread = f"mean ± 1 std over {draws} draws" if draws > 1 else None
    figure.legend(loc="outside upper center", ncol=2, fontsize=9, title=spread)
    caption(
        figure,
        "What to look for: the transferred features' lead over training from scratch, largest with few photos.",
    )
    save_figure(figure, path)


def network_flags(config):
    """train.py flags that build the network a checkpoint's `model_config` describes."""
    return [
        "--arch",
        config["arch"],
        "--width",
        config["width"],
        "--conv-channels",
        ",".join(map(str, config["conv_channels"])),
        "--fc-features",
        ",".join(map(str, config["fc_features"])),
    ]


def run(args):
    """Run the study transfer.py's `args` ask for; returns the stem of its table and figure
    (OUT/transfer)."""
    device = pick_device(args.training.device)
    layers, checkpoint = frozen_layers(args.checkpoint, device)
    classes, samples = scan_split(args.data)
    photos, test = by_class(classes, samples["train"]), by_class(classes, samples["val"])
    draws = draw_photos(photos, args)
    out = claim_study_folder(args.out, {"--checkpoint": args.checkpoint, "--data": args.data}, OUTPUTS)

    # Every photo goes through the frozen layers once; each softmax then trains on their outputs.
    needed = sorted({path for side in (*draws, test) for paths in side.values() for path in paths})
    features = dict(zip(needed, softmax_inputs(layers, needed, checkpoint["preprocess"], device)))
    test_features, test_labels = stack(features, test, classes)

    run_flags = [*args.train_flags, *network_flags(checkpoint["model_config"])]
    results = {count: {"transfer": [], "scratch": []} for count in args.per_class}
    for draw, train in enumerate(draws):
        for count in args.per_class:
            softmax = fit_softmax(*stack(features, train, classes, count), len(classes))
            results[count]["transfer"].append(accuracy(softmax(test_features), test_labels))

            name = f"draw{draw}-n{count}"
            split = out.path("splits", name)
            link_split(split, {"train": {c: paths[:count] for c, paths in train.items()}, "val": test})
            print(f"== from scratch: draw {draw}, {count} photos per class")
            history = train_run(
                [*run_flags, "--data", os.path.abspath(split), "--seed", str(args.seed + draw)],
                out.path("scratch", name),
                args.epochs,
            )
            results[count]["scratch"].append(history[-1]["val_acc"])

    rows, markdown_rows = [], []
    for count, measured in results.items():
        row = {"per_class": count, "draws": args.draws}
        for key in ("transfer", "scratch"):
            mean, spread = mean_and_spread(measured[key])
            row.update({f"{key}_accuracy": round(mean, 4), f"{key}_sd": round(spread, 4)})
        rows.append(row)
        markdown_rows.append(
            {
                "photos per class": count,
                "draws": args.draws,
                "transfer accuracy": plus_minus(measured["transfer"]),
                "from scratch accuracy": plus_minus(measured["scratch"]),
            }
        )
    title = f"Transfer to {len(classes)} classes, {len(test_labels)} test photos"
    stem = out.path("transfer")  # no input lies in --out, as claim_study_folder made sure
    write_tables(
        rows,
        markdown_rows,
        stem,
        f"{title}; layers 1-7 of {os.path.relpath(args.checkpoint)} (trained on {', '.join(checkpoint['classes'])})",
    )
    plot(rows, len(classes), out.path("transfer.png"), title)
    return stem
