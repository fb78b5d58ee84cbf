"""The sanity checks' two similarities, ours against the textbook forms, in one run on the
same projections: the work of `visualize.py sanity` and of the explorer's sanity page.
SSIM (zfnet.studies.sanity.ssim): ours convolves with the Gaussian window as a column then a
row and the five local means in one batch; the textbook form the 2-D 11x11 window, one
convolution per local mean. Spearman (sanity.spearman): ours ranks in NumPy, the baseline in
torch (argsort, then the mean rank of each run of ties), as much work but a torch call's
overhead per step.

    python bench/sanity_speed.py --checkpoint runs/features10/best.pth --images flower_data/val
    python bench/sanity_speed.py --quick      # a check that it runs: a tiny random network, in seconds

Each row runs the whole of sanity.measure (every rule, every step of the cascade) on the top-9
activations of the --maps-per-layer most active maps of layers 1-5; the projections are the
same, only the similarities differ. Printed: seconds of each, the speed-up over the baseline,
and the largest difference of a score from the baseline's (float64: rounding only).
"""

import os
import time

import torch
import torch.nn.functional as F

from zfnet.arguments import (
    add_checkpoint,
    add_device,
    add_images,
    add_maps_per_layer,
    add_max_images,
    parse_with_quick,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint, quick_network
from zfnet.errors import run_main
from zfnet.images import find_images, unnormalize
from zfnet.recipes import PREPROCESS
from zfnet.runtime import pick_device
from zfnet.studies import features, sanity
from zfnet.top9 import chosen_maps, spread_evenly, strongest_activations, usable_batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = {"images": os.path.join(ROOT, "samples", "flower_photos"), "max_images": 12, "maps_per_layer": 1}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(parser)
    add_images(parser)
    add_maps_per_layer(parser, default=9)
    add_max_images(parser, default=400)
    add_device(parser)
    return parse_with_quick(
        parser, argv, QUICK, "on the bundled sample with a narrow random network instead of --checkpoint"
    )


def textbook_ssim(a, b):
    """Wang et al. 2004's SSIM as it is usually written (the baseline): the 2-D Gaussian window,
    one convolution for each of the five local means."""
    side = min(11, *a.shape)
    side -= 1 - side % 2
    steps = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    weights = torch.exp(-steps.square() / (2 * 1.5**2))
    window = (weights[:, None] * weights[None, :] / weights.sum() ** 2)[None, None]
    a, b = (picture.double().cpu()[None, None] for picture in (a, b))
    mean_a, mean_b = F.conv2d(a, window), F.conv2d(b, window)
    var_a, var_b = F.conv2d(a * a, window) - mean_a**2, F.conv2d(b * b, window) - mean_b**2
    covariance = F.conv2d(a * b, window) - mean_a * mean_b
    c1, c2 = 0.01**2, 0.03**2
    numerator = (2 * mean_a * mean_b + c1) * (2 * covariance + c2)
    return (numerator / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))).mean().item()


def textbook_spearman(a, b):
    """The Spearman rank correlation with torch's ranks (the baseline): ties get the mean of
    their ranks."""

    def ranks(values):
        order = values.argsort()
        _, group, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
        ranked = torch.empty(len(values), dtype=torch.float64)
        ranked[order] = (counts.cumsum(0).double() - (counts - 1) / 2)[group]
        return ranked - ranked.mean()

    a, b = ranks(a.flatten().double().cpu()), ranks(b.flatten().double().cpu())
    norm = (a.square().sum() * b.square().sum()).sqrt()
    return (a @ b / norm).item() if norm > 0 else 0.0


def timed(measure, ssim, spearman):
    """sanity.measure's result and seconds with `ssim` and `spearman` in the module's place."""
    ours = sanity.ssim, sanity.spearman
    sanity.ssim, sanity.spearman = ssim, spearman
    try:
        start = time.perf_counter()
        found = measure()
        return found, time.perf_counter() - start
    finally:
        sanity.ssim, sanity.spearman = ours


def benchmark(args):
    device = pick_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    preprocess = checkpoint["preprocess"]
    paths = find_images(args.images)
    paths = [paths[i] for i in spread_evenly(len(paths), args.max_images)]
    kept = []
    best = strongest_activations(
        model, usable_batches(paths, preprocess, 32, "finding top 9", kept, []), model.conv_layers, device
    )
    requests = [
        request
        for layer in model.conv_layers
        for request in features.strongest_requests(
            best[layer], layer, chosen_maps(None, best[layer][0], args.maps_per_layer)
        )
    ]
    inputs, requests, _ = features.needed_inputs(kept, preprocess, requests, "decoding images")
    pictures = unnormalize(inputs, preprocess["mean"], preprocess["std"])

    def measure():
        return sanity.measure(model, inputs.to(device), pictures, requests)

    rows = [
        ("textbook SSIM, torch ranks (baseline)", textbook_ssim, textbook_spearman),
        ("separable SSIM in one batch, torch ranks", sanity.ssim, textbook_spearman),
        ("separable SSIM in one batch, NumPy ranks (ours)", sanity.ssim, sanity.spearman),
    ]
    found = [timed(measure, ssim, spearman) for _, ssim, spearman in rows]
    baseline, baseline_seconds = found[0]

    def largest_difference(result, name):
        return max((result.scores[r][name] - baseline.scores[r][name]).abs().max().item() for r in result.scores)

    scores = sum(values["ssim"].numel() for values in baseline.scores.values())
    print(
        f"{args.checkpoint}: sanity.measure on {len(requests)} top-9 activations of layers "
        f"{model.conv_layers[0]}-{model.conv_layers[-1]} ({args.maps_per_layer} maps a layer, {len(paths)} photos "
        f"of {args.images}), {scores} SSIM and as many Spearman scores, {device}"
    )
    print("| similarities | sanity.measure seconds | speed-up | largest SSIM / Spearman difference |")
    print("|---|---|---|---|")
    for (name, _, _), (result, seconds) in zip(rows, found):
        difference = f"{largest_difference(result, 'ssim'):.1e} / {largest_difference(result, 'spearman'):.1e}"
        print(f"| {name} | {seconds:.1f} | {baseline_seconds / seconds:.2f}x | {difference} |")


def main(argv=None):
    args = parse_args(argv)
    with quick_network(args, PREPROCESS):
        benchmark(args)


if __name__ == "__main__":
    run_main(main)
