"""Occlusion speed: occlusion.py's maps against Captum's Occlusion, on real photos, in one run.

    python bench/occlusion_speed.py                        # 3 photos of flower_data/val
    python bench/occlusion_speed.py --photos 6 --checkpoint runs/zfnet/best.pth --device cuda
    python bench/occlusion_speed.py --quick                # a check that it runs, in seconds

Both slide a grey square (--size, --stride) over each photo's 224-pixel input and evaluate
the network once per position: Captum with its defaults (one occluded input per forward
pass) over the same positions, so both make the same number of forward evaluations; ours
computes maps (a), (b) and (c) at once, Captum only the class probability, map (b). Captum
spreads each position's effect over the pixels its square covers; to compare the maps
cell by cell, the bench records the probability that Captum's own forward passes return
for each occluded input. Each method runs once on the first photo to warm up, then is
timed on every photo. Without --checkpoint the network is a randomly initialised half-width
ZFNet (the time does not depend on the weights). --quick times 2 photos of the bundled
sample with a large square and a coarse stride: every step runs, in seconds.
"""

import os
import time

import torch
from captum.attr import Occlusion

from model import ZFNet
from zfnet.arguments import add_device, add_images, parse_with_quick, positive_int, script_parser
from zfnet.checkpoint import load_checkpoint
from zfnet.data import scan_classes
from zfnet.errors import UserError, run_main
from zfnet.images import load_input
from zfnet.recipes import PREPROCESS
from zfnet.runtime import pick_device
from zfnet.studies.occlusion import FEATURE_LAYER, occlusion_maps, square_positions, strongest_activation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --quick: 2 photos (two classes), 4 x 4 positions of a 100-pixel square (the last ones cut off
# by the edge), batches of ours that do not divide the positions evenly.
QUICK = {
    "images": os.path.join(ROOT, "samples", "flower_photos"),
    "photos": 2,
    "size": 100,
    "stride": 60,
    "batch_size": 5,
}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_images(parser, help="folder with one sub-folder of photos per class")
    parser.add_argument(
        "--photos",
        type=positive_int,
        default=3,
        help="photos to time, taken in turn from each class (default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoint", metavar="PTH", help="checkpoint to time (default: a randomly initialised ZFNet)"
    )
    parser.add_argument(
        "--size", type=positive_int, default=50, help="side of the grey square in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--stride", type=positive_int, default=8, help="step between positions in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="positions per pass for ours (default: %(default)s)"
    )
    add_device(parser)
    parser.set_defaults(device="cpu")  # the README's measurements are on the CPU
    return parse_with_quick(parser, argv, QUICK, "on the bundled sample")


def pick_photos(folder, count):
    """`count` photos with their class folders' names, taken in turn from each class."""
    listed = scan_classes(folder)
    classes = list(listed)
    chosen = []
    for index in range(count):
        name, rank = classes[index % len(classes)], index // len(classes)
        if rank >= len(listed[name]):
            raise UserError(f"{folder} holds too few photos in class folders for --photos {count}")
        chosen.append((listed[name][rank], name))
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
        Occlusion(forward).attribute(
            x[None], sliding_window_shapes=(x.shape[0], size, size), strides=(x.shape[0], stride, stride), target=target
        )
    count = len(square_positions(x.shape[1], size, stride))
    # Captum evaluates the unoccluded input first, then the positions with the square's row
    # changing fastest: column by column.
    return torch.cat(recorded[1:]).view(count, count).T.cpu()


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    photos = pick_photos(args.images, args.photos)
    if args.checkpoint:
        model, checkpoint = load_checkpoint(args.checkpoint, device)
        classes, preprocess = checkpoint["classes"], checkpoint["preprocess"]
    else:
        torch.manual_seed(0)
        classes, preprocess = sorted({name for _, name in photos}), PREPROCESS
        model = ZFNet(num_classes=len(classes)).to(device).eval()
    square_positions(preprocess["input_size"], args.size, args.stride)
    inputs = [
        (load_input(path, preprocess).to(device), classes.index(name) if name in classes else 0)
        for path, name in photos
    ]

    methods = {
        "Captum Occlusion (defaults)": lambda x, target: captum(model, x, args.size, args.stride, target),
        "ours (windowed, batched)": lambda x, target: ours(model, x, args.size, args.stride, target, args.batch_size),
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
    print(
        f"{len(inputs)} photos of {os.path.relpath(args.images)}, {args.size}-pixel square, stride {args.stride}, "
        f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'weights of ' + args.checkpoint if args.checkpoint else 'random weights'}"
    )
    print("| method | forward evaluations | seconds per photo | speed-up | max abs difference of map (b) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in methods:
        difference = max(
            float((mapped - expected).abs().max()) for mapped, expected in zip(maps[name], maps[reference])
        )
        print(
            f"| {name} | {evaluations} | {seconds[name]:.3f} | {seconds[reference] / seconds[name]:.1f}x | "
            f"{difference:.1e} |"
        )


if __name__ == "__main__":
    run_main(main)
