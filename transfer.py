"""How well a trained network's features serve a new task (section 5.2, tables 4 to 6): keep
its layers 1 to 7 fixed, train only a new softmax on N photos per class, and compare with the
same network trained from scratch on the same photos.

    python transfer.py --checkpoint runs/zfnet/best.pth --data caltech256 --per-class 15,30,45,60
    python transfer.py --checkpoint runs/flowers3/best.pth --data flower_data/train --test-data flower_data/val

--data is any folder with one sub-folder per class. Each of --draws random draws picks N photos
of every class to train on (a draw's smaller N are the first photos of its larger N) and tests
on --test-data, or else on up to --test-per-class photos of each class that the draw leaves out.
The softmax sees layer 7's outputs in eval mode (no dropout). The from-scratch runs train with
train.py's training function (--epochs each) into OUT/scratch/, so a rerun skips the finished
ones. Writes OUT/transfer.csv, OUT/transfer.md and OUT/transfer.png.
"""
import os

import torch
import torch.nn.functional as F
from torch import nn

from zfnet.arguments import int_list
from zfnet.checkpoint import load_checkpoint
from zfnet.data import decoded_batches, scan_classes
from zfnet.errors import UserError, run_main
from zfnet.figures import plt, save_figure
from zfnet.runtime import generator, pick_device
from zfnet.study import link_split, parse_study_args, study_parser, train_run
from zfnet.tables import mean_and_spread, plus_minus, write_tables

# The softmax's L2 penalty: with a few photos per class and 2048 features the classes are
# separable, and without it the weights would grow without end.
WEIGHT_DECAY = 1e-3


def parse_transfer_args(argv):
    parser = study_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="the trained network whose layers 1-7 are kept")
    parser.add_argument("--data", required=True, help="the new task: a folder with one sub-folder of photos per class")
    parser.add_argument("--test-data", help="photos to test on, in the same class folders (default: "
                        "photos of --data that a draw does not train on)")
    parser.add_argument("--per-class", default=[5, 10, 20, 40], type=int_list, metavar="N1,N2,...",
                        help="training photos per class to try (default: 5,10,20,40)")
    parser.add_argument("--draws", default=3, type=int, help="random draws of the photos per N (default: %(default)s)")
    parser.add_argument("--test-per-class", default=50, type=int,
                        help="without --test-data: at most this many left-out photos per class to test on "
                             "(default: %(default)s)")
    parser.add_argument("--epochs", default=30, type=int, help="epochs of each from-scratch run (default: %(default)s)")
    parser.add_argument("--out", default="runs/transfer", help="folder for the runs and the table (default: %(default)s)")
    parser.add_argument("--seed", default=0, type=int, help="seed of the draws and the from-scratch runs (default: %(default)s)")
    args, train_flags, recipe = parse_study_args(
        parser, argv, also_set_by_study=("--width", "--arch"))  # the checkpoint's network decides these
    if not args.per_class or min(args.per_class) < 1 or args.draws < 1 or args.test_per_class < 1 or args.epochs < 1:
        raise UserError("--per-class needs positive numbers; --draws, --test-per-class and --epochs must be at least 1")
    args.per_class = sorted(set(args.per_class))
    return args, train_flags, recipe


def draw_photos(photos, test_photos, args):
    """Per draw, `(train, test)`: the first max(N) photos of each class in a random order (its
    prefixes serve the smaller N), and the photos to test on."""
    largest = max(args.per_class)
    needed = largest if test_photos else largest + 1
    short = {name: len(paths) for name, paths in photos.items() if len(paths) < needed}
    if short:
        name, count = next(iter(short.items()))
        reason = "" if test_photos else f" ({largest} to train on and one left to test on)"
        raise UserError(f"class {name} has {count} photos in {args.data}; --per-class {largest} needs "
                        f"{needed}{reason}" + (f"; {len(short) - 1} more classes are short" if len(short) > 1 else ""))
    draws = []
    for draw in range(args.draws):
        train, test = {}, {}
        for name, paths in photos.items():
            order = [paths[i] for i in torch.randperm(len(paths), generator=generator(args.seed, "draw", draw, name))]
            train[name] = order[:largest]
            test[name] = test_photos[name] if test_photos else order[largest:largest + args.test_per_class]
        draws.append((train, test))
    return draws


def frozen_layers(path, device):
    """A checkpoint's layers 1 to 7, fixed: its network without the softmax (nn.Identity in its
    place), in eval mode so that dropout is off, and without gradients."""
    layers, checkpoint = load_checkpoint(path, device)
    layers.classifier = nn.Identity()
    return layers.requires_grad_(False), checkpoint


@torch.no_grad()  # not inference_mode: the softmax trains on these features with autograd
def softmax_inputs(layers, paths, preprocess, device, batch_size=64):
    """What a softmax on top of the frozen layers sees for each photo: layer 7's outputs."""
    return torch.cat([torch.flatten(layers(inputs.to(device)), 1).cpu()
                      for _, inputs in decoded_batches(paths, preprocess, batch_size, "layer 7 features")])


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


def plot_accuracy(rows, num_classes, path, title):
    """Test accuracy against training photos per class, transfer and from scratch, with the
    spread over draws."""
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    counts = [row["per_class"] for row in rows]
    for key, label, style in (("transfer", "frozen layers 1-7 + new softmax", "-o"),
                              ("scratch", "same network from scratch", "-s")):
        axis.errorbar(counts, [row[f"{key}_accuracy"] for row in rows], yerr=[row[f"{key}_sd"] for row in rows],
                      fmt=style, capsize=4, label=label)
    axis.axhline(1 / num_classes, color="grey", linestyle="--", label="chance")
    axis.set_xscale("log", base=2)
    axis.set_xticks(counts, [str(count) for count in counts])
    axis.set(xlabel="training photos per class", ylabel="test accuracy", title=title, ylim=(0, 1))
    axis.grid(alpha=0.3)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    save_figure(figure, path)


def main(argv=None):
    args, train_flags, recipe = parse_transfer_args(argv)
    device = pick_device(recipe.device)
    layers, checkpoint = frozen_layers(args.checkpoint, device)
    photos = scan_classes(args.data)
    classes = list(photos)
    test_photos = scan_classes(args.test_data) if args.test_data else None
    if test_photos and list(test_photos) != classes:
        raise UserError(f"{args.test_data} and {args.data} hold different class folders")
    draws = draw_photos(photos, test_photos, args)

    # Every photo goes through the frozen layers once; each softmax then trains on their outputs.
    needed = sorted({path for draw in draws for side in draw for paths in side.values() for path in paths})
    features = dict(zip(needed, softmax_inputs(layers, needed, checkpoint["preprocess"], device)))

    config = checkpoint["model_config"]
    network_flags = [*train_flags, "--arch", config["arch"], "--width", config["width"],
                     "--conv-channels", ",".join(map(str, config["conv_channels"])),
                     "--fc-features", ",".join(map(str, config["fc_features"]))]
    results = {count: {"transfer": [], "scratch": []} for count in args.per_class}
    for draw, (train, test) in enumerate(draws):
        test_features, test_labels = stack(features, test, classes)
        for count in args.per_class:
            softmax = fit_softmax(*stack(features, train, classes, count), len(classes))
            results[count]["transfer"].append(accuracy(softmax(test_features), test_labels))

            name = f"draw{draw}-n{count}"
            split = os.path.join(args.out, "splits", name)
            link_split(split, {"train": {c: paths[:count] for c, paths in train.items()}, "val": test})
            print(f"== from scratch: draw {draw}, {count} photos per class")
            history = train_run([*network_flags, "--data", os.path.abspath(split), "--seed", str(args.seed + draw)],
                                os.path.join(args.out, "scratch", name), args.epochs)
            results[count]["scratch"].append(history[-1]["val_acc"])

    rows, markdown_rows = [], []
    for count, measured in results.items():
        row = {"per_class": count, "draws": args.draws}
        for key in ("transfer", "scratch"):
            mean, spread = mean_and_spread(measured[key])
            row.update({f"{key}_accuracy": round(mean, 4), f"{key}_sd": round(spread, 4)})
        rows.append(row)
        markdown_rows.append({"photos per class": count, "draws": args.draws,
                              "transfer accuracy": plus_minus(measured["transfer"]),
                              "from scratch accuracy": plus_minus(measured["scratch"])})
    test_size = sum(len(paths) for paths in draws[0][1].values())
    title = f"Transfer to {len(classes)} classes, {test_size} test photos"
    stem = os.path.join(args.out, "transfer")
    write_tables(rows, markdown_rows, stem, f"{title}; layers 1-7 of {args.checkpoint} "
                 f"(trained on {', '.join(checkpoint['classes'])})")
    plot_accuracy(rows, len(classes), stem + ".png", title)
    print(f"table and plot in {stem}.md, {stem}.csv and {stem}.png")


if __name__ == "__main__":
    run_main(main)
