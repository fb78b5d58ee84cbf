r"""Time to accuracy: the blog tutorial's recipe against train.py's default recipe on the same
split, and layer 1's smoothness in each.

    python split_data.py --source /path/to/flower_photos --seed 0
    python bench/time_to_accuracy.py --data flower_data      # about 25 minutes on 2 CPU cores
    python bench/time_to_accuracy.py --data flower_data --seeds 0,1,2 --tutorial-epochs 20 \
        --variant layer1_init_scale=1 layer1_lr_scale=1       # layer 1's usual start beside the default
    python bench/time_to_accuracy.py --quick                 # the bundled sample, one epoch each

Each run starts from nothing and is timed on the wall clock from its start, data loading,
decoding and validation included:
- tutorial recipe: the blog tutorial's train.py loop (ImageFolder's work: PIL decoding each
  photo when it is used, with num_workers=0; contiguous float32, Adam at 2e-4,
  RandomResizedCrop and flip, validation on Resize((224, 224))), in this process;
- ours: `python train.py` with its defaults, in a child process, its time at each epoch
  taken when the epoch's line appears; the split's photo cache is deleted first, so the time
  includes decoding every photo;
- ours, float32: the same with `--precision fp32`, to show that bfloat16 leaves accuracy as it is;
- with --variant: train.py with `--set` those settings, a change to the default recipe (or
  one undone) beside it.
ours and the variant train once per training seed of --seeds (the split stays as it is; the
float32 run once, at the first seed), and their means over the seeds follow the table.
It prints, per run, the epochs and the wall time to first reach --target validation accuracy,
the best validation accuracy in --epochs epochs, and the smoothness of layer 1's filters
(zfnet.spectra: white noise's about 18%, readable filters 75% or more) in the best weights,
then each run's time to the target as a share of the tutorial's (which --tutorial-epochs lets
train on until it gets there).
--quick splits the bundled sample into a temporary folder and trains one epoch of the tutorial
loop and of train.py's defaults (and the variant) on it.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from torchvision import transforms

from model import ZFNet
from zfnet.arguments import add_data, int_list, positive_int, script_parser
from zfnet.checkpoint import load_checkpoint
from zfnet.data import TutorialPhotos, cache_folder
from zfnet.errors import run_main
from zfnet.recipes import recipe_setting
from zfnet.spectra import noise_smoothness, smoothness
from zfnet.splitting import split_sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EPOCH_LINE = re.compile(r"^epoch +(\d+)/\d+ .* val loss [\d.]+ acc ([\d.]+)")
TUTORIAL = "tutorial recipe (the blog tutorial's train.py loop)"


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_data(parser)
    parser.add_argument("--epochs", type=positive_int, default=10, help="epochs of every run (default: %(default)s)")
    parser.add_argument(
        "--target", type=float, default=0.70, help="validation accuracy to reach (default: %(default)s)"
    )
    parser.add_argument(
        "--tutorial-epochs",
        type=positive_int,
        metavar="N",
        help="let the tutorial loop train on past --epochs, up to N epochs, until it reaches --target, "
        "so that its time to the target is measured (its best and total stay those of --epochs) "
        "(default: --epochs)",
    )
    parser.add_argument(
        "--seeds",
        type=int_list,
        default=[0],
        metavar="S1,S2,...",
        help="train.py's --seed for each run of ours and the variant (default: 0)",
    )
    parser.add_argument(
        "--variant",
        type=recipe_setting,
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="also train train.py with --set these settings of its recipe (default: none)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the bundled sample split into a temporary folder, one epoch of the tutorial loop and "
        "of train.py's defaults, to check that the benchmark runs (default: off)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1
    if args.tutorial_epochs is None:
        args.tutorial_epochs = args.epochs
    if args.tutorial_epochs < args.epochs:
        parser.error(f"--tutorial-epochs must be at least --epochs ({args.epochs}), got {args.tutorial_epochs}")
    if not args.seeds or len(set(args.seeds)) < len(args.seeds):
        parser.error(f"--seeds needs one or more distinct seeds, got {','.join(map(str, args.seeds))}")
    return args


def layer1_smoothness(model):
    return smoothness(model.stage(model.conv_layers[0]).conv.weight.detach().cpu())


def tutorial_recipe(data, epochs, target, limit):
    """[(epoch, seconds since start, val accuracy)] of the blog tutorial's training loop over
    `epochs` epochs and on, up to `limit`, until it reaches `target`; and its layer 1's
    smoothness after `epochs` epochs."""
    started = time.perf_counter()
    torch.manual_seed(0)
    normalize = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train_set = TutorialPhotos(
        os.path.join(data, "train"),
        transforms.Compose(
            [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
        ),
    )
    val_set = TutorialPhotos(
        os.path.join(data, "val"), transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(), normalize])
    )
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True, num_workers=0)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=32, shuffle=False, num_workers=0)
    model = ZFNet(num_classes=len(train_set.classes), init_weights=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0002)
    timeline = []
    for epoch in range(1, limit + 1):
        if epoch > epochs and max(accuracy for _, _, accuracy in timeline) >= target:
            break
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                correct += (model(images).argmax(1) == labels).sum().item()
        timeline.append((epoch, time.perf_counter() - started, correct / len(val_set)))
        print(f"  tutorial epoch {epoch}: val acc {timeline[-1][2]:.4f} at {timeline[-1][1]:.0f} s", flush=True)
        if epoch == epochs:
            smooth = layer1_smoothness(model)
    return timeline, smooth


def train_py(data, epochs, *flags, workers=None):
    """[(epoch, seconds since start, val accuracy)] of `python train.py` run in a child process
    (with `--workers workers` when given, which the printed lines leave out), and the
    smoothness of layer 1 in its best.pth."""
    shutil.rmtree(cache_folder(data), ignore_errors=True)
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-u",
            "train.py",
            "--data",
            data,
            "--out",
            out,
            "--epochs",
            str(epochs),
            *flags,
            *(["--workers", str(workers)] if workers is not None else []),
        ]
        started = time.perf_counter()
        timeline = []
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as child:
            for line in child.stdout:
                match = EPOCH_LINE.match(line)
                if match:
                    timeline.append((int(match[1]), time.perf_counter() - started, float(match[2])))
                    print(
                        f"  train.py {' '.join(flags) or 'defaults'} epoch {match[1]}: val acc {match[2]} "
                        f"at {timeline[-1][1]:.0f} s",
                        flush=True,
                    )
        if child.returncode:
            raise SystemExit(f"train.py failed with exit status {child.returncode}")
        return timeline, layer1_smoothness(load_checkpoint(os.path.join(out, "best.pth"))[0])


def measure(args):
    data = os.path.abspath(args.data)  # train.py's child process runs in the project folder
    runs = {TUTORIAL: tutorial_recipe(data, args.epochs, args.target, args.tutorial_epochs)}
    workers = 0 if args.quick else None  # --quick: worker processes start slower than the sample's photos load
    kinds = {"train.py defaults": []}
    if args.variant:
        variant = ["--set", *(f"{name}={value}" for name, value in args.variant)]
        kinds["train.py " + " ".join(variant)] = variant
    seeded = args.seeds != [0]

    def at_seed(kind, seed):
        """A run's name and seed flags: train.py's own default seed leaves both as they are."""
        return (f"{kind}, seed {seed}", ["--seed", str(seed)]) if seeded else (kind, [])

    for kind, flags in kinds.items():
        for seed in args.seeds:
            name, seed_flags = at_seed(kind, seed)
            runs[name] = train_py(data, args.epochs, *flags, *seed_flags, workers=workers)
    if not args.quick:
        name, seed_flags = at_seed("train.py --precision fp32", args.seeds[0])
        runs[name] = train_py(data, args.epochs, "--precision", "fp32", *seed_flags)

    target = format(args.target, ".0%")
    width = max(map(len, runs))
    print(
        f"\n{'run':{width}} {'epochs to ' + target:>13} {'time to ' + target:>12} {'best val acc':>13} "
        f"{'total time':>11} {'layer-1 smoothness':>19}"
    )
    reached = {}
    for name, (timeline, smooth) in runs.items():
        first = next(((epoch, seconds) for epoch, seconds, accuracy in timeline if accuracy >= args.target), None)
        within = [row for row in timeline if row[0] <= args.epochs]  # the tutorial's may go on to reach the target
        best_epoch, _, best = max(within, key=lambda row: row[2])
        reached[name] = first
        print(
            f"{name:{width}} {first[0] if first else 'not reached':>13} {f'{first[1]:.0f} s' if first else '-':>12} "
            f"{f'{best:.4f} (ep {best_epoch})':>13} {f'{within[-1][1]:.0f} s':>11} {smooth:>19.1%}"
        )
    print(f"(layer-1 smoothness of white noise: {noise_smoothness(7):.1%})")
    if seeded:
        for kind in kinds:
            seeds = [at_seed(kind, seed)[0] for seed in args.seeds]
            bests = [max(accuracy for _, _, accuracy in runs[name][0]) for name in seeds]
            epochs = [str(reached[name][0]) if reached[name] else "-" for name in seeds]
            seconds = [reached[name][1] for name in seeds if reached[name]]
            print(
                f"{kind}, mean of seeds {','.join(map(str, args.seeds))}: best val acc {sum(bests) / len(bests):.4f}, "
                f"layer-1 smoothness {sum(runs[name][1] for name in seeds) / len(seeds):.1%}, "
                f"first at {target} in epochs {' / '.join(epochs)}"
                + (f", {sum(seconds) / len(seconds):.0f} s on the mean" if len(seconds) == len(seeds) else "")
            )
    tutorial = reached[TUTORIAL]
    if tutorial:
        tutorial_time, bound = tutorial[1], ""
        said = f"reached {target} in epoch {tutorial[0]}, {tutorial_time:.0f} s"
    else:
        (tutorial_epochs, tutorial_time, _), bound = runs[TUTORIAL][0][-1], "under "
        said = f"did not reach {target} in {tutorial_epochs} epochs ({tutorial_time:.0f} s)"
    print(f"\nthe tutorial recipe {said}; each run's time to {target} as a share of the tutorial's:")
    for name in runs:
        if name != TUTORIAL:
            share = f"{bound}{reached[name][1] / tutorial_time:.2f}" if reached[name] else "not reached"
            print(f"  {name}: {share}")


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:  # --quick's split, removed afterwards
        if args.quick:
            args.data = split_sample(os.path.join(folder, "data"))
        measure(args)


if __name__ == "__main__":
    run_main(main)
