"""Occlusion speed: occlusion.py's maps against Captum's Occlusion, on real photos, in one run.

    python bench/occlusion_speed.py                        # 3 photos of ../shared/flower_photos
    python bench/occlusion_speed.py --photos 6 --checkpoint runs/zfnet/best.pth --device cuda

Both slide a grey square (--size, --stride) over each photo's 224-pixel input and evaluate
the network once per position: Captum with its defaults (one occluded input per forward
pass) over the same positions, so both make the same number of forward evaluations; ours
computes maps (a), (b) and (c) at once, Captum only the class probability, map (b). Captum
spreads each position's effect over the pixels its square covers; to compare the maps
cell by cell, the bench records the probability that Captum's own forward passes return
for each occluded input. Each method runs once on the first photo to warm up, then is
timed on every photo. Without --checkpoint the network is a randomly initialised half-width
ZFNet (the time does not depend on the weights).
"""
import argparse
import os
import sys
import time

import torch
from captum.attr import Occlusion

# Run from anywhere: the project's modules are one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model import ZFNet  # noqa: E402
from train import PREPROCESS  # noqa: E402
from zfnet.checkpoint import load_checkpoint  # noqa: E402
from zfnet.errors import UserError, run_main  # noqa: E402
from zfnet.images import IMAGE_SUFFIXES, load_input  # noqa: E402
from zfnet.occlusion import FEATURE_LAYER, occlusion_maps, square_positions, strongest_activation  # noqa: E402
from zfnet.runtime import pick_device  # noqa: E402


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/flower_photos",
                        help="folder with one sub-folder of photos per class (default: %(default)s)")
    parser.add_argument("--photos", type=int, default=3,
                        help="photos to time, taken in turn from each class (default: %(default)s)")
    parser.add_argument("--checkpoint", help="checkpoint to time (default: a randomly initialised ZFNet)")
    parser.add_argument("--size", type=int, default=50, help="side of the grey square in pixels (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=8, help="step between positions in pixels (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="positions per pass for ours (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    return parser


def pick_photos(root, count):
    """`count` photos with their class folders' names, taken in turn from each class."""
    if not os.path.isdir(root):
        raise UserError(f"photo folder not found: {root}")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    listed = {name: sorted(entry.path for entry in os.scandir(os.path.join(root, name))
                           if entry.name.lower().endswith(IMAGE_SUFFIXES)) for name in classes}
    chosen = []
    for index in range(count):
        name = classes[index % len(classes)] if classes else None
        if name is None or index // len(classes) >= len(listed[name]):
            raise UserError(f"{root} holds too few photos in class folders for --photos {count}")
        chosen.append((listed[name][index // len(classes)], name))
    return chosen


def ours(model, x, size, stride, target, batch_size):
    channel, _, _ = strongest_activation(model, x, FEATURE_LAYER)
    return occlusion_maps(model, x, size, stride, target, FEATURE_LAYER, channel, batch_size)["probability"]


def captum(model, x, size, stride, target):
    """Captum's Occlusion with its defaults; returns the probabilities its forward passes
    gave the occluded inputs, one per square position, as a map."""
    recorded = []

    def forward(inputs):
        probabilities = model(inputs).softmax(1)
        recorded.append(probabilities[:, target])
        return probabilities

    # Captum's default baseline, 0, is the normalisation mean: the same grey as ours.
    with torch.no_grad():
        Occlusion(forward).attribute(x[None], sliding_window_shapes=(x.shape[0], size, size),
                                     strides=(x.shape[0], stride, stride), target=target)
    count = len(square_positions(x.shape[1], size, stride))
    # Captum evaluates the unoccluded input first, then the positions with the square's row
    # changing fastest: column by column.
    return torch.cat(recorded[1:]).view(count, count).T.cpu()


def main(argv=None):
    arguments = get_parser().parse_args(argv)
    if arguments.photos < 1:
        raise UserError("--photos must be at least 1")
    device = pick_device(arguments.device)
    photos = pick_photos(arguments.data, arguments.photos)
    if arguments.checkpoint:
        model, checkpoint = load_checkpoint(arguments.checkpoint, device)
        classes, preprocess = checkpoint["classes"], checkpoint["preprocess"]
    else:
        torch.manual_seed(0)
        classes, preprocess = sorted({name for _, name in photos}), PREPROCESS
        model = ZFNet(num_classes=len(classes)).to(device).eval()
    square_positions(preprocess["input_size"], arguments.size, arguments.stride)
    inputs = [(load_input(path, preprocess).to(device), classes.index(name) if name in classes else 0)
              for path, name in photos]

    methods = {
        "Captum Occlusion (defaults)": lambda x, target: captum(model, x, arguments.size, arguments.stride, target),
        "ours (windowed, batched)": lambda x, target: ours(model, x, arguments.size, arguments.stride, target,
                                                           arguments.batch_size),
    }
    seconds, maps = {}, {}
    for name, method in methods.items():
        method(*inputs[0])
        maps[name], elapsed = [], 0.0
        for x, target in inputs:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            maps[name].append(method(x, target))
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed += time.perf_counter() - start
        seconds[name] = elapsed / len(inputs)

    reference = "Captum Occlusion (defaults)"
    evaluations = maps[reference][0].numel()
    print(f"{len(inputs)} photos of {arguments.data}, {arguments.size}-pixel square, stride {arguments.stride}, "
          f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'weights of ' + arguments.checkpoint if arguments.checkpoint else 'random weights'}")
    print("| method | forward evaluations | seconds per photo | speed-up | max abs difference of map (b) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in methods:
        difference = max(float((mapped - expected).abs().max())
                         for mapped, expected in zip(maps[name], maps[reference]))
        print(f"| {name} | {evaluations} | {seconds[name]:.3f} | {seconds[reference] / seconds[name]:.1f}x | "
              f"{difference:.1e} |")


if __name__ == "__main__":
    run_main(main)
