"""Deconvnet speed: zfnet.deconv.project against Captum's NeuronDeconvolution, in one run.

    python bench/deconv_speed.py --checkpoint runs/zfnet/best.pth --images flower_data/val
    python bench/deconv_speed.py --maps 16 --max-images 100      # a quicker look

The work is the top9 figure's: for every map of --layer (or the first --maps of them), the
--top strongest activations over the images (each image at most once per map, as
visualize.py top9 finds them), each projected alone to pixel space. Ours projects them all
in one call, including the forward passes that record the switches; Captum projects one
activation per call (a forward and a backward pass each), and its gradient is multiplied by
the activation's value. The images are decoded and the activations found before timing.
The last column is the largest difference between the two, relative to the projection's
largest magnitude.
"""
import argparse
import os
import sys
import time
import warnings

import torch
from captum.attr import NeuronDeconvolution
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project's modules, wherever the bench is started from
import visualize  # noqa: E402
from zfnet.checkpoint import load_checkpoint  # noqa: E402
from zfnet.data import decoded_batches  # noqa: E402
from zfnet.deconv import paste, project, receptive_fields  # noqa: E402
from zfnet.errors import run_main  # noqa: E402
from zfnet.images import find_images  # noqa: E402
from zfnet.runtime import pick_device  # noqa: E402


def captum_projections(model, inputs, requests, values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns on every call that it hooks the ReLUs
        for (image, layer, channel, y, x), value in zip(requests, tqdm(values, desc="captum", unit="projection")):
            attribution = NeuronDeconvolution(model, model.stage(layer).relu)
            yield value * attribution.attribute(inputs[image:image + 1], neuron_selector=(channel, y, x))[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/zfnet/best.pth", help="trained checkpoint (default: %(default)s)")
    parser.add_argument("--images", default="flower_data/val", help="image folder (default: %(default)s)")
    parser.add_argument("--layer", default=5, type=int, help="layer whose maps are projected (default: %(default)s)")
    parser.add_argument("--maps", type=int, help="project only the first MAPS maps (default: all)")
    parser.add_argument("--top", default=9, type=int, help="activations per map (default: %(default)s)")
    parser.add_argument("--max-images", type=int, help="use only the first MAX_IMAGES images (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: %(default)s)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(0)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    preprocess = checkpoint["preprocess"]
    layer = visualize.chosen_layers(model, [args.layer])[0]
    paths = find_images(args.images)[:args.max_images]
    inputs = torch.cat([batch for _, batch in decoded_batches(paths, preprocess, 32, "decoding")])
    batches = ((start, inputs[start:start + 32]) for start in range(0, len(inputs), 32))
    found = visualize.strongest_activations(model, batches, [layer], device, k=args.top)
    values, images, ys, xs = found[layer]
    maps = range(min(args.maps or len(values), len(values)))
    requests = [(images[m, rank].item(), layer, m, ys[m, rank].item(), xs[m, rank].item())
                for m in maps for rank in range(images.shape[1])]
    strengths = [values[m, rank] for m in maps for rank in range(images.shape[1])]
    print(f"layer {layer}: {len(requests)} projections ({len(maps)} maps x {images.shape[1]}) "
          f"from {len({request[0] for request in requests})} of {len(paths)} images, on {device}")

    project(model, inputs, requests[:4])  # warm-up, like Captum's first call below
    next(captum_projections(model, inputs.to(device), requests[:1], strengths[:1]))
    started = time.perf_counter()
    ours = project(model, inputs, requests)
    if device.type == "cuda":
        torch.cuda.synchronize()
    our_seconds = time.perf_counter() - started

    fields = receptive_fields(model)
    worst = 0.0
    started = time.perf_counter()
    captum = list(captum_projections(model, inputs.to(device), requests, strengths))
    captum_seconds = time.perf_counter() - started
    for (_, _, _, y, x), patch, reference in zip(requests, ours, captum):
        projection = paste(patch, fields[layer].box(y, x), inputs.shape[-1])
        scale = reference.abs().max().clamp(min=torch.finfo(reference.dtype).tiny)
        worst = max(worst, ((projection - reference).abs().max() / scale).item())

    print(f"\n{'method':<28} {'projections':>11} {'seconds':>9} {'ms/projection':>13} {'speed-up':>9} "
          f"{'max rel. diff':>13}")
    for name, seconds, difference in (("captum NeuronDeconvolution", captum_seconds, "reference"),
                                      ("zfnet.deconv.project", our_seconds, f"{worst:.1e}")):
        print(f"{name:<28} {len(requests):>11} {seconds:>9.2f} {1000 * seconds / len(requests):>13.2f} "
              f"{captum_seconds / seconds:>8.1f}x {difference:>13}")


if __name__ == "__main__":
    run_main(main)
