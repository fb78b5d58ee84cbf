"""Time to accuracy: the blog tutorial's recipe against train.py's default recipe on the same
split.

    python split_data.py --source /path/to/flower_photos --seed 0
    python bench/time_to_accuracy.py --data flower_data      # about 35 minutes on 2 CPU cores
    python bench/time_to_accuracy.py --quick                 # the bundled sample, one epoch each

Each run starts from nothing and is timed on the wall clock from its start, data loading,
decoding and validation included:
- tutorial recipe: the blog tutorial's train.py loop (ImageFolder's work: PIL decoding each
  photo when it is used, with num_workers=0; contiguous float32, Adam at 2e-4,
  RandomResizedCrop and flip, validation on Resize((224, 224))), in this process;
- ours: `python train.py` with its defaults, in a child process, its time at each epoch
  taken when the epoch's line appears; the split's photo cache is deleted first, so the time
  includes decoding every photo;
- ours, float32: the same with `--precision fp32`, to show that bfloat16 leaves accuracy as it is.
It prints, per run, the epochs and the wall time to first reach --target validation accuracy,
and the best validation accuracy in --epochs epochs. --quick splits the bundled sample into a
temporary folder and trains one epoch of the tutorial loop and of train.py's defaults on it.
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
from zfnet.arguments import add_data, positive_int, script_parser
from zfnet.data import TutorialPhotos, cache_folder
from zfnet.errors import run_main
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
        "--quick",
        action="store_true",
        help="the bundled sample split into a temporary folder, one epoch of the tutorial loop and "
        "of train.py's defaults, to check that the benchmark runs (default: off)",
    )
    return parser.parse_args(argv)


def tutorial_recipe(data, epochs):
    """[(epoch, seconds since start, val accuracy)] of the blog tutorial's training loop."""
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
    for epoch in range(1, epochs + 1):
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
    return timeline


def train_py(data, epochs, *flags, workers=None):
    """[(epoch, seconds since start, val accuracy)] of `python train.py` run in a child process
    (with `--workers workers` when given, which the printed lines leave out)."""
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
    return timeline


def measure(args):
    data = os.path.abspath(args.data)  # train.py's child process runs in the project folder
    runs = {TUTORIAL: tutorial_recipe(data, args.epochs)}
    if args.quick:  # no worker processes: their start costs more than the sample's few photos
        runs["train.py defaults"] = train_py(data, args.epochs, workers=0)
    else:
        runs["train.py defaults"] = train_py(data, args.epochs)
        runs["train.py --precision fp32"] = train_py(data, args.epochs, "--precision", "fp32")

    target = format(args.target, ".0%")
    print(f"\n{'run':52} {'epochs to ' + target:>13} {'time to ' + target:>12} {'best val acc':>13} {'total time':>11}")
    reached = {}
    for name, timeline in runs.items():
        first = next(((epoch, seconds) for epoch, seconds, accuracy in timeline if accuracy >= args.target), None)
        best_epoch, _, best = max(timeline, key=lambda row: row[2])
        reached[name] = first[1] if first else None
        print(
            f"{name:52} {first[0] if first else 'not reached':>13} {f'{first[1]:.0f} s' if first else '-':>12} "
            f"{f'{best:.4f} (ep {best_epoch})':>13} {f'{timeline[-1][1]:.0f} s':>11}"
        )
    tutorial_time, ours_time = reached[TUTORIAL], reached["train.py defaults"]
    if ours_time and tutorial_time:
        print(f"\ntrain.py's defaults reach {target} in {ours_time / tutorial_time:.2f} of the tutorial recipe's time")
    elif ours_time:
        tutorial_total = runs[TUTORIAL][-1][1]
        print(
            f"\nthe tutorial recipe did not reach {target} in {args.epochs} epochs ({tutorial_total:.0f} s); "
            f"train.py's defaults reached it in less than {ours_time / tutorial_total:.2f} of its time"
        )


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:  # --quick's split, removed afterwards
        if args.quick:
            args.data, args.epochs = split_sample(os.path.join(folder, "data")), 1
        measure(args)


if __name__ == "__main__":
    run_main(main)
