"""Projection speed: zfnet.deconv.project against Captum's NeuronDeconvolution (the deconvnet)
and against autograd over the whole photo (guided backpropagation, zfnet.projections), in one run.

    python bench/deconv_speed.py --checkpoint runs/zfnet/best.pth --images flower_data/val
    python bench/deconv_speed.py --maps-per-layer 16 --max-images 100      # a quicker look
    python bench/deconv_speed.py --quick       # a check that it runs: a tiny random network, in seconds

The work is the top9 figure's: for every map of --layer (or its --maps-per-layer most active
ones), the --top strongest activations over the images (each image at most once per map, as
visualize.py top9 finds them), each projected alone to pixel space. Ours projects them all
in one call, including the forward passes that record the switches; Captum projects one
activation per call (a forward and a backward pass each), and its gradient is multiplied by
the activation's value. The images are decoded and the activations found before timing.
Guided backpropagation is timed both ways on the same activations: by autograd over the whole
photo (zfnet.projections.neuron_projections, times the value) and by the window loop
(project with rule="guided"); its speed-up is against autograd's. The last column is the
largest difference from the reference, relative to the reference's largest magnitude.
--quick runs a narrow random network on a few photos of the bundled sample (the times say
nothing then; the differences still do).
"""

import os
import time
import warnings

import torch
from captum.attr import NeuronDeconvolution
from tqdm import tqdm

from zfnet.arguments import (
    add_checkpoint,
    add_device,
    add_images,
    add_maps_per_layer,
    add_max_images,
    parse_with_quick,
    positive_int,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint, quick_network
from zfnet.deconv import paste, project, receptive_fields
from zfnet.errors import run_main
from zfnet.images import find_images
from zfnet.projections import neuron_projections
from zfnet.recipes import PREPROCESS
from zfnet.runtime import pick_device
from zfnet.top9 import (
    chosen_layers,
    chosen_maps,
    require_maps,
    spread_evenly,
    strongest_activations,
    tensor_batches,
    usable_inputs,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BATCH_SIZE = 32
# --quick: 6 photos of the bundled sample, the 2 most active layer-5 maps, 3 activations each.
QUICK = {"images": os.path.join(ROOT, "samples", "flower_photos"), "max_images": 6, "maps_per_layer": 2, "top": 3}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(parser)
    add_images(parser)
    parser.add_argument(
        "--layer",
        default=5,
        type=positive_int,
        help="convolutional layer whose maps are projected (default: %(default)s)",
    )
    add_maps_per_layer(parser)
    parser.add_argument("--top", default=9, type=positive_int, help="activations per map (default: %(default)s)")
    add_max_images(parser)
    add_device(parser)
    parser.set_defaults(device="cpu")  # the README's measurements are on the CPU
    return parse_with_quick(
        parser, argv, QUICK, "on the bundled sample with a narrow random network instead of --checkpoint"
    )


def captum_projections(model, inputs, requests, values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns on every call that it hooks the ReLUs
        for (image, layer, channel, y, x), value in zip(requests, tqdm(values, desc="captum", unit="projection")):
            attribution = NeuronDeconvolution(model, model.stage(layer).relu)
            yield value * attribution.attribute(inputs[image : image + 1], neuron_selector=(channel, y, x))[0]


def top_requests(model, inputs, layer, args, device):
    """The projections top9 would draw for `layer`: `(requests, activation values)`."""
    found = strongest_activations(
        model, tensor_batches(inputs, BATCH_SIZE, "finding the strongest"), [layer], device, k=args.top
    )
    values, images, ys, xs = found[layer]
    maps = chosen_maps(None, values, args.maps_per_layer or len(values))
    ranks = range(images.shape[1])
    requests = [
        (images[m, rank].item(), layer, m, ys[m, rank].item(), xs[m, rank].item()) for m in maps for rank in ranks
    ]
    return requests, [values[m, rank] for m in maps for rank in ranks]


def benchmark(args):
    device = pick_device(args.device)
    torch.manual_seed(0)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    preprocess = checkpoint["preprocess"]
    layer = chosen_layers(model, [args.layer], args.checkpoint)[0]
    require_maps(model, [layer], None, args.maps_per_layer)
    paths = find_images(args.images)
    paths = [paths[i] for i in spread_evenly(len(paths), args.max_images or len(paths))]
    paths, inputs = usable_inputs(paths, preprocess, BATCH_SIZE, "decoding", args.images)
    requests, strengths = top_requests(model, inputs, layer, args, device)
    maps = len({request[2] for request in requests})
    print(
        f"layer {layer}: {len(requests)} projections ({maps} maps x {len(requests) // maps}) "
        f"from {len({request[0] for request in requests})} of {len(paths)} images, on {device}"
    )

    fields = receptive_fields(model)

    def timed(work):
        started = time.perf_counter()
        result = list(work())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - started

    def largest_difference(patches, references):
        worst = 0.0
        for (_, _, _, y, x), patch, reference in zip(requests, patches, references):
            projection = paste(patch, fields[layer].box(y, x), inputs.shape[-1])
            scale = reference.abs().max().clamp(min=torch.finfo(reference.dtype).tiny)
            worst = max(worst, ((projection - reference).abs().max() / scale).item())
        return worst

    for rule in ("deconvnet", "guided"):  # warm-up, like Captum's first call below
        project(model, inputs, requests[:4], rule=rule)
    next(captum_projections(model, inputs.to(device), requests[:1], strengths[:1]))
    ours, our_seconds = timed(lambda: project(model, inputs, requests))
    guided, guided_seconds = timed(lambda: project(model, inputs, requests, rule="guided"))
    captum, captum_seconds = timed(lambda: captum_projections(model, inputs.to(device), requests, strengths))
    autograd, autograd_seconds = timed(
        lambda: (v * g for v, g in zip(strengths, neuron_projections(model, inputs.to(device), requests, "guided")))
    )

    print(
        f"\n{'method':<34} {'projections':>11} {'seconds':>9} {'ms/projection':>13} {'speed-up':>9} "
        f"{'max rel. diff':>13}"
    )
    rows = (
        ("captum NeuronDeconvolution", captum_seconds, captum_seconds, "reference"),
        ("zfnet.deconv.project", our_seconds, captum_seconds, f"{largest_difference(ours, captum):.1e}"),
        ("zfnet.projections guided", autograd_seconds, autograd_seconds, "reference"),
        (
            "zfnet.deconv.project guided",
            guided_seconds,
            autograd_seconds,
            f"{largest_difference(guided, autograd):.1e}",
        ),
    )
    for name, seconds, baseline, difference in rows:
        print(
            f"{name:<34} {len(requests):>11} {seconds:>9.2f} {1000 * seconds / len(requests):>13.2f} "
            f"{baseline / seconds:>8.1f}x {difference:>13}"
        )
    print(
        f"\nguided by the window loop takes {guided_seconds / our_seconds:.2f}x the deconvnet's time "
        f"(goal: at most 1.00x)"
    )


def main(argv=None):
    args = parse_args(argv)
    with quick_network(args, PREPROCESS):
        benchmark(args)


if __name__ == "__main__":
    run_main(main)
