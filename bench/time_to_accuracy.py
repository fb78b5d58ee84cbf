"""Time to accuracy: the seed's recipe against train.py's default recipe on the same split.

    python split_data.py --source ../shared/flower_photos --seed 0
    python bench/time_to_accuracy.py --data flower_data      # about 35 minutes on 2 CPU cores

Each run starts from nothing and is timed on the wall clock from its start, data loading,
decoding and validation included:
- seed: the seed's train.py loop (ImageFolder and PIL with num_workers=0, contiguous float32,
  Adam at 2e-4, RandomResizedCrop and flip, validation on Resize((224, 224))), in this process;
- ours: `python train.py` with its defaults, in a child process, its time at each epoch
  taken when the epoch's line appears; the split's photo cache is deleted first, so the time
  includes decoding every photo;
- ours, float32: the same with `--precision fp32`, to show that bfloat16 leaves accuracy as it is.
It prints, per run, the epochs and the wall time to first reach --target validation accuracy,
and the best validation accuracy in --epochs epochs.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from torchvision import datasets, transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project's modules, wherever the bench is started from
from model import ZFNet  # noqa: E402

EPOCH_LINE = re.compile(r"^epoch +(\d+)/\d+ .* val loss [\d.]+ acc ([\d.]+)")


def seed_recipe(data, epochs):
    """[(epoch, seconds since start, val accuracy)] of the seed's training loop."""
    started = time.perf_counter()
    torch.manual_seed(0)
    normalize = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train_set = datasets.ImageFolder(os.path.join(data, "train"), transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]))
    val_set = datasets.ImageFolder(os.path.join(data, "val"), transforms.Compose([
        transforms.Resize((224, 224)), transforms.ToTensor(), normalize]))
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
        print(f"  seed epoch {epoch}: val acc {timeline[-1][2]:.4f} at {timeline[-1][1]:.0f} s", flush=True)
    return timeline


def train_py(data, epochs, *flags):
    """[(epoch, seconds since start, val accuracy)] of `python train.py` run in a child process."""
    shutil.rmtree(os.path.join(data, ".cache"), ignore_errors=True)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-u", "train.py", "--data", data, "--out", out, "--epochs", str(epochs), *flags]
        started = time.perf_counter()
        timeline = []
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as child:
            for line in child.stdout:
                match = EPOCH_LINE.match(line)
                if match:
                    timeline.append((int(match[1]), time.perf_counter() - started, float(match[2])))
                    print(f"  train.py {' '.join(flags) or 'defaults'} epoch {match[1]}: val acc {match[2]} "
                          f"at {timeline[-1][1]:.0f} s", flush=True)
        if child.returncode:
            raise SystemExit(f"train.py failed with exit status {child.returncode}")
    return timeline


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="flower_data", help="split folder with train/ and val/")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.70, help="validation accuracy to reach (default: 0.70)")
    args = parser.parse_args()
    data = os.path.abspath(args.data)

    runs = {"seed recipe (seed's train.py loop)": seed_recipe(data, args.epochs),
            "train.py defaults": train_py(data, args.epochs),
            "train.py --precision fp32": train_py(data, args.epochs, "--precision", "fp32")}

    print(f"\n{'run':36} {'epochs to ' + format(args.target, '.0%'):>13} {'time to ' + format(args.target, '.0%'):>12} "
          f"{'best val acc':>13} {'total time':>11}")
    reached = {}
    for name, timeline in runs.items():
        first = next(((epoch, seconds) for epoch, seconds, accuracy in timeline if accuracy >= args.target), None)
        best_epoch, _, best = max(timeline, key=lambda row: row[2])
        reached[name] = first[1] if first else None
        print(f"{name:36} {first[0] if first else 'not reached':>13} {f'{first[1]:.0f} s' if first else '-':>12} "
              f"{f'{best:.4f} (ep {best_epoch})':>13} {f'{timeline[-1][1]:.0f} s':>11}")
    seed_name = "seed recipe (seed's train.py loop)"
    seed_time, ours_time = reached[seed_name], reached["train.py defaults"]
    if ours_time and seed_time:
        print(f"\ntrain.py's defaults reach {args.target:.0%} in {ours_time / seed_time:.2f} of the seed's time")
    elif ours_time:
        seed_total = runs[seed_name][-1][1]
        print(f"\nthe seed's recipe did not reach {args.target:.0%} in {args.epochs} epochs ({seed_total:.0f} s); "
              f"train.py's defaults reached it in less than {ours_time / seed_total:.2f} of the seed's time")


if __name__ == "__main__":
    main()
