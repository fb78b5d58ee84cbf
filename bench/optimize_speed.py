"""Feature visualisation by optimisation: what `visualize.py optimize` costs for the most
active maps of every convolutional layer (the README's figure: 9 maps of layers 1-5, goal at
most 15 minutes on a 2-core CPU), and what its devices buy (Fourier parametrisation,
decorrelated colours, random shift/scale/rotation: zfnet.optimize) against plain pixel
optimisation (Erhan et al. 2009: sigmoid of free pixels, no transformation, same objective,
steps and learning rate), in one run on the same maps.

    python bench/optimize_speed.py --checkpoint runs/reference/best.pth --images flower_data/val
    python bench/optimize_speed.py --quick     # a check that it runs: a tiny random network, in seconds

Per layer and method: seconds for its maps (one batch), seconds per map, the median ratio of
a picture's strongest activation to the map's strongest photo's (over --images), and the
picture's smoothness: the share of its spectral energy below 1/8 cycle per pixel (white
noise's is printed beside), the difference between a picture that looks like something and
high-frequency noise that merely excites the map.
"""

import os
import statistics
import time

import torch
import torch.nn.functional as F

from zfnet import optimize
from zfnet.arguments import (
    add_checkpoint,
    add_device,
    add_images,
    add_maps_per_layer,
    add_max_images,
    add_steps,
    parse_with_quick,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint, quick_network
from zfnet.errors import run_main
from zfnet.images import find_images, unnormalize
from zfnet.recipes import PREPROCESS
from zfnet.runtime import pick_device
from zfnet.spectra import noise_smoothness, smoothness
from zfnet.top9 import chosen_maps, spread_evenly, strongest_activations, tensor_batches, usable_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_MINUTES = 15  # 9 maps of each of layers 1-5 of the reference model, on this project's 2-core CPU
SMOOTH_BELOW = 1 / 8  # cycles per pixel (the table's header says so)
# --quick: 6 photos of the bundled sample, the 2 most active maps of layers 1-5, 8 steps.
QUICK = {"images": os.path.join(ROOT, "samples", "flower_photos"), "max_images": 6, "maps_per_layer": 2, "steps": 8}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(parser)
    add_images(parser)
    add_maps_per_layer(parser, default=9)
    add_steps(parser, default=optimize.STEPS, what="of gradient ascent, for both methods")
    add_max_images(parser, default=400)
    add_device(parser)
    parser.set_defaults(device="cpu")  # the goal is on the CPU
    return parse_with_quick(
        parser, argv, QUICK, "on the bundled sample with a narrow random network instead of --checkpoint"
    )


def plain_pixels(model, layer, maps, preprocess, steps, device):
    """Erhan et al.'s optimisation: free pixels through a sigmoid, nothing else (the baseline)."""
    size = preprocess["input_size"]
    mean = torch.tensor(preprocess["mean"], device=device)[:, None, None]
    std = torch.tensor(preprocess["std"], device=device)[:, None, None]
    generator = torch.Generator().manual_seed(0)
    pixels = (torch.randn(len(maps), 3, size, size, generator=generator) * optimize.INITIAL_SCALE).to(device)
    pixels.requires_grad_()
    adam = torch.optim.Adam([pixels], lr=optimize.LEARNING_RATE)
    rows, chosen = torch.arange(len(maps), device=device), torch.tensor(maps, device=device)
    for _ in range(steps):
        adam.zero_grad()
        excited = optimize.pre_activation(model, layer, (torch.sigmoid(pixels) - mean) / std)[rows, chosen]
        (-F.leaky_relu(excited, optimize.LEAK).flatten(1).mean(1).sum()).backward()
        adam.step()
    with torch.no_grad():
        pictures = torch.sigmoid(pixels)
        strengths = optimize.pre_activation(model, layer, (pictures - mean) / std)[rows, chosen]
    return pictures.cpu(), strengths.clamp(min=0).flatten(1).amax(1).cpu()


def benchmark(args):
    device = pick_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    preprocess = checkpoint["preprocess"]
    paths = find_images(args.images)
    paths = [paths[i] for i in spread_evenly(len(paths), args.max_images)]
    paths, inputs = usable_inputs(paths, preprocess, 32, "decoding", args.images)
    layers = model.conv_layers
    best = strongest_activations(model, tensor_batches(inputs, 32, "finding the strongest"), layers, device, k=1)
    colours = optimize.colour_matrix(unnormalize(inputs, preprocess["mean"], preprocess["std"]))
    methods = {
        "ours (zfnet.optimize)": lambda layer, maps: optimize.optimise(
            model, layer, maps, preprocess, colours, steps=args.steps
        ),
        "plain pixels (baseline)": lambda layer, maps: plain_pixels(model, layer, maps, preprocess, args.steps, device),
    }
    print(
        f"{args.checkpoint}: the {args.maps_per_layer} most active maps of layers {layers[0]}-{layers[-1]}, "
        f"{args.steps} steps, strongest photos over {len(paths)} photos of {args.images}, {device}"
    )
    print("| method | layer | maps | seconds | s/map | x strongest photo (median) | smooth < 1/8 |")
    print("|---|---|---|---|---|---|---|")
    totals = dict.fromkeys(methods, 0.0)
    for layer in layers:
        maps = chosen_maps(None, best[layer][0], args.maps_per_layer)
        photo = best[layer][0][maps, 0].cpu()
        for name, run in methods.items():
            start = time.perf_counter()
            pictures, strengths = run(layer, maps)
            seconds = time.perf_counter() - start
            totals[name] += seconds
            ratios = [s / p for s, p in zip(strengths.tolist(), photo.tolist()) if p > 0]
            ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
            print(
                f"| {name} | {layer} | {len(maps)} | {seconds:.1f} | {seconds / len(maps):.2f} | {ratio} | "
                f"{smoothness(pictures, SMOOTH_BELOW):.1%} |"
            )
    size = preprocess["input_size"]
    print(f"| white noise, {size}x{size} | - | - | - | - | - | {noise_smoothness(size, SMOOTH_BELOW):.1%} |")
    ours = totals["ours (zfnet.optimize)"]
    print(
        f"ours: {ours / 60:.1f} minutes for all {len(layers)} layers (goal: at most {GOAL_MINUTES} minutes for 9 maps "
        f"of each of layers 1-5 on a 2-core CPU); plain pixels: {totals['plain pixels (baseline)'] / 60:.1f} minutes"
    )


def main(argv=None):
    args = parse_args(argv)
    with quick_network(args, PREPROCESS):
        benchmark(args)


if __name__ == "__main__":
    run_main(main)
