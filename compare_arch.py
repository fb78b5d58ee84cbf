"""AlexNet's first layer against ZFNet's, measured (the paper's section 4.1 and figure 6).

    python train.py --arch alexnet --out runs/alexnet && python train.py --out runs/zfnet
    python compare_arch.py runs/alexnet/best.pth runs/zfnet/best.pth --data flower_data --out runs/compare

The paper replaced AlexNet's 11x11 stride-4 first layer by 7x7 stride 2 because the former
(a) leaves dead filters, (b) covers low and high spatial frequencies but few middle ones, and
(c) aliases in layer 2. For two checkpoints (any architectures) this measures, side by side:

- validation accuracy on DATA/val;
- dead layer-1 filters: weights below a tenth of the layer's median filter norm, or never
  active (rectified output 0 everywhere) on any validation photo;
- how layer 1's filter energy spreads over spatial frequency (2-D FFT of each filter, in
  cycles per input pixel): low below 1/8, middle 1/8 to 1/4, high above 1/4. A stride of s
  samples the layer's output every s pixels, so filter energy above 1/(2s) aliases: above 1/8
  for stride 4, above 1/4 for stride 2;
- aliasing in layer 2: the deconvnet projections of each layer-2 map's strongest activation
  on --images validation photos, and their power at the frequencies of the first layer's
  stride grid (k/s cycles per pixel) over the power in the ring around each: about 1 for a
  smooth spectrum, more for a pattern that repeats every s pixels.

Writes OUT/compare.md (the table and what it shows), OUT/compare.csv and OUT/compare.png.
"""
import argparse
import math
import os

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid
from tqdm import tqdm

from zfnet.checkpoint import load_checkpoint
from zfnet.data import PhotoCache, scan_split, val_inputs
from zfnet.deconv import project, receptive_fields
from zfnet.errors import UserError, run_main
from zfnet.figures import plt, save_figure
from zfnet.files import atomic_write_text
from zfnet.runtime import pick_device
from zfnet.tables import csv_text, markdown_table

BANDS = {"low": (0, 1 / 8), "middle": (1 / 8, 1 / 4), "high": (1 / 4, math.inf)}  # cycles per pixel
FILTER_FFT_SIZE = 64  # zero-padded: a 7x7 and an 11x11 filter's spectra on the same frequency grid
DEAD_NORM = 0.1  # a filter under this share of the median filter norm has faded away
CLOSE = 0.1  # relative difference under which a comparison says nothing either way


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs=2, metavar="CHECKPOINT", help="the two networks, e.g. AlexNet's and ZFNet's")
    parser.add_argument("--data", default="flower_data", help="split whose val/ photos are measured (default: %(default)s)")
    parser.add_argument("--out", default="runs/compare", help="folder for the report (default: %(default)s)")
    parser.add_argument("--images", default=64, type=int,
                        help="validation photos searched for layer 2's strongest activations (default: %(default)s)")
    parser.add_argument("--batch-size", default=64, type=int, help="photos per forward pass (default: %(default)s)")
    parser.add_argument("--workers", default=min(4, os.cpu_count() or 1), type=int,
                        help="processes that decode the photos, if train.py has not cached them (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    if args.images < 1 or args.batch_size < 1:
        raise UserError("--images and --batch-size must be at least 1")
    return args


def radii(size):
    """Spatial frequency (cycles per pixel) of each bin of a size x size FFT."""
    frequencies = torch.fft.fftfreq(size)
    return torch.hypot(frequencies[:, None], frequencies[None, :])


def power_spectra(patches, size):
    """Power spectra (N, size, size) of (N, 3, h, w) patches zero-padded to size x size,
    summed over the colour channels."""
    return torch.fft.fft2(patches.double(), s=(size, size)).abs().square().sum(1)


def band_shares(weights):
    """Share of a layer's filter energy in each frequency band (all filters pooled, so a
    faded filter counts for little)."""
    spectrum = power_spectra(weights, FILTER_FFT_SIZE).sum(0)
    radius = radii(FILTER_FFT_SIZE)
    return {band: (spectrum[(radius >= low) & (radius < high)].sum() / spectrum.sum()).item()
            for band, (low, high) in BANDS.items()}


def band_areas():
    """Each band's share of the frequency plane: the energy shares of white-noise filters,
    the reference for learned ones."""
    radius = radii(FILTER_FFT_SIZE)
    return {band: ((radius >= low) & (radius < high)).double().mean().item() for band, (low, high) in BANDS.items()}


def grid_contrast(spectrum, stride, width):
    """Power at the stride grid's frequencies (k/stride, l/stride cycles per pixel, except 0)
    over the mean power of the ring `width` to 2 * `width` bins around each, summed over the
    grid points; `spectrum` is a size x size power spectrum (periodic, so rings wrap)."""
    size = spectrum.shape[-1]
    bins = torch.arange(size)
    peaks = rings = 0.0
    for k in range(stride):
        for m in range(stride):
            if k == m == 0:
                continue
            row, column = round(k * size / stride) % size, round(m * size / stride) % size
            dy = torch.minimum((bins - row).abs(), size - (bins - row).abs())
            dx = torch.minimum((bins - column).abs(), size - (bins - column).abs())
            distance = torch.hypot(dy[:, None].double(), dx[None, :].double())
            peaks += spectrum[row, column].item()
            rings += spectrum[(distance > width) & (distance <= 2 * width)].mean().item()
    return peaks / rings


def layer2_projections(model, images, batch_size):
    """Deconvnet projections (one per layer-2 map that fires at all) of each map's strongest
    activation over `images`."""
    with torch.no_grad():
        maps = torch.cat([model.activations(images[start:start + batch_size], [2])[2]
                          for start in range(0, len(images), batch_size)])
    side = maps.shape[-1]
    values, flat = maps.transpose(0, 1).flatten(1).max(1)
    image, position = flat // (side * side), flat % (side * side)
    requests = [(image[m], 2, m, position[m] // side, position[m] % side)
                for m in range(len(values)) if values[m] > 0]
    return torch.stack(project(model, images, requests)).cpu()


def measure(path, model, checkpoint, classes, val_samples, args, device):
    """Everything the report says about one loaded checkpoint."""
    if checkpoint["classes"] != classes:
        raise UserError(f"{path} was trained on the classes {checkpoint['classes']}, but {args.data} "
                        f"holds {classes}; compare networks on the data they were trained for")
    if 2 not in model.conv_layers:
        raise UserError(f"{path} has no layer 2 (its layers are {model.conv_layers + model.fc_layers})")
    preprocess = checkpoint["preprocess"]
    cache = PhotoCache.load_or_build(val_samples, "val", preprocess["input_size"],
                                     os.path.join(args.data, ".cache"), args.workers)

    correct, peak = 0, None  # peak: each layer-1 filter's strongest response on any photo
    with torch.no_grad():
        for start in tqdm(range(0, len(cache), args.batch_size), desc=f"validating {path}", unit="batch", leave=False):
            rows = torch.arange(start, min(start + args.batch_size, len(cache)))
            inputs = val_inputs(cache, rows, preprocess).to(device)
            correct += (model(inputs).argmax(1).cpu() == cache.labels[rows]).sum().item()
            strongest = model.activations(inputs, [1])[1].amax((0, 2, 3)).cpu()
            peak = strongest if peak is None else torch.maximum(peak, strongest)

    weights = model.layer1.conv.weight.detach().cpu()
    norms = weights.flatten(1).norm(dim=1)
    faded = norms < DEAD_NORM * norms.median()
    silent = peak <= 0
    kernel, stride = model.layer1.conv.kernel_size[0], model.layer1.conv.stride[0]

    # Photos spread over the whole validation side, so that every class is searched.
    chosen = torch.linspace(0, len(cache) - 1, min(args.images, len(cache))).round().long().unique()
    projections = layer2_projections(model, val_inputs(cache, chosen, preprocess).to(device), args.batch_size)
    field = receptive_fields(model)[2].size
    fft_size = 2 ** math.ceil(math.log2(2 * field))
    spectra = power_spectra(projections, fft_size)
    spectrum = (spectra / spectra.sum((1, 2), keepdim=True).clamp_min(1e-30)).mean(0)  # each weighs the same
    return {"path": path, "arch": model.config["arch"], "kernel": kernel, "stride": stride, "filters": len(weights),
            "accuracy": correct / len(cache), "val_photos": len(cache), "faded": int(faded.sum()),
            "silent": int(silent.sum()), "dead": int((faded | silent).sum()), "dead_mask": faded | silent,
            "bands": band_shares(weights), "weights": weights, "projections": projections,
            "spectrum": spectrum, "aliasing": grid_contrast(spectrum, stride, math.ceil(fft_size / field))}


def report_rows(nets):
    """(measure, value per network) rows shared by the CSV and the Markdown table."""
    rows = [("layer 1", [f"{n['filters']} filters {n['kernel']}x{n['kernel']}, stride {n['stride']}" for n in nets]),
            ("validation accuracy", [round(n["accuracy"], 4) for n in nets]),
            ("dead layer-1 filters", [n["dead"] for n in nets]),
            (f"dead: weights under {DEAD_NORM} x median norm", [n["faded"] for n in nets]),
            ("dead: never active on val", [n["silent"] for n in nets])]
    for band, (low, high) in BANDS.items():
        span = f"{low:g}-{high:g}" if high < math.inf else f"over {low:g}"
        rows.append((f"layer-1 energy, {band} frequencies ({span} cycles/px)", [round(n["bands"][band], 4) for n in nets]))
    rows.append(("layer-2 projections: stride-grid contrast", [round(n["aliasing"], 2) for n in nets]))
    return rows


def verdict(coarse_value, fine_value, claim):
    """How a measured pair bears on a claim that the coarse network's value is the larger
    (claim "more") or the smaller ("fewer"); a difference within CLOSE is no evidence."""
    if abs(coarse_value - fine_value) <= CLOSE * max(abs(coarse_value), abs(fine_value)):
        return f"too close to call (within {CLOSE:.0%}) for the paper's claim"
    return "in line with the paper's claim" if (coarse_value > fine_value) == (claim == "more") else "unlike the paper's claim"


def findings(nets):
    """What the two networks show, in the terms of the paper's three claims about the
    coarser first layer."""
    coarse, fine = sorted(nets, key=lambda n: (n["stride"], n["kernel"]), reverse=True)
    if (coarse["stride"], coarse["kernel"]) == (fine["stride"], fine["kernel"]):
        return ["Both networks have the same first layer; the paper's claims compare different ones, "
                "so the numbers above are the whole finding."]
    a, b = (f"the {n['kernel']}x{n['kernel']}/{n['stride']} network ({n['arch']})" for n in (coarse, fine))
    return [
        f"Dead filters: {a} has {coarse['dead']} of {coarse['filters']}, {b} {fine['dead']} of "
        f"{fine['filters']}: {verdict(coarse['dead'], fine['dead'], 'more')} that the coarse first layer "
        f"leaves more dead filters.",
        f"Middle frequencies: {coarse['bands']['middle']:.1%} of {a}'s layer-1 energy lies between 1/8 and "
        f"1/4 cycles/px, {fine['bands']['middle']:.1%} of {b}'s (random filters: "
        f"{band_areas()['middle']:.1%}): {verdict(coarse['bands']['middle'], fine['bands']['middle'], 'fewer')} "
        f"that the coarse layer covers fewer middle frequencies.",
        f"Aliasing: layer-2 projections of {a} carry {coarse['aliasing']:.2f}x the surrounding power at its "
        f"stride-{coarse['stride']} grid frequencies, those of {b} {fine['aliasing']:.2f}x at its "
        f"stride-{fine['stride']} ones: {verdict(coarse['aliasing'], fine['aliasing'], 'more')} that the "
        f"coarse layer aliases more.",
        f"Validation accuracy: {coarse['accuracy']:.3f} against {fine['accuracy']:.3f}.",
    ]


def signed_grid(tensors, dead=None):
    """Filters or projections (N, 3, h, w) in a grid, each scaled so that 0 is mid-grey; the
    `dead` ones (a boolean mask) framed in red."""
    scaled = tensors / (2 * tensors.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None, None]) + 0.5
    scaled = F.pad(scaled, (1, 1, 1, 1), value=1.0)
    if dead is not None:
        border = torch.ones(scaled.shape[-2:], dtype=torch.bool)
        border[1:-1, 1:-1] = False
        red = dead[:, None, None] & border
        scaled[:, 1][red] = 0.0
        scaled[:, 2][red] = 0.0
    return make_grid(scaled, nrow=math.ceil(math.sqrt(len(scaled))), padding=1, pad_value=1).permute(1, 2, 0).numpy()


def plot(nets, path):
    """Row 1: each network's layer-1 filters, and their energy against spatial frequency.
    Row 2: each network's layer-2 projections, and their power against horizontal frequency."""
    figure, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    for column, net in enumerate(nets):
        axes[0, column].imshow(signed_grid(net["weights"], net["dead_mask"]), interpolation="nearest")
        axes[0, column].set_title(f"{net['arch']}: layer-1 filters {net['kernel']}x{net['kernel']}, stride "
                                  f"{net['stride']}\n({net['dead']} dead, framed red)", fontsize=10)
        strongest = net["projections"].flatten(1).norm(dim=1).argsort(descending=True)[:16]
        axes[1, column].imshow(signed_grid(net["projections"][strongest]), interpolation="nearest")
        axes[1, column].set_title(f"{net['arch']}: layer-2 projections (16 strongest maps)", fontsize=10)
        for row in (0, 1):
            axes[row, column].axis("off")

    radius = radii(FILTER_FFT_SIZE)
    edges = torch.linspace(0, 0.5 * math.sqrt(2), 25)
    centres = (edges[:-1] + edges[1:]) / 2
    for net in nets:
        spectrum = power_spectra(net["weights"], FILTER_FFT_SIZE).sum(0)
        share = [spectrum[(radius >= lo) & (radius < hi)].sum().item() / spectrum.sum().item()
                 for lo, hi in zip(edges[:-1], edges[1:])]
        axes[0, 2].plot(centres, share, "-o", markersize=3, label=f"{net['arch']} ({net['kernel']}x{net['kernel']}/{net['stride']})")
        # Summed over vertical frequency, relative to the mean: comparable across FFT sizes.
        horizontal = net["spectrum"].sum(0) * len(net["spectrum"])
        frequencies = torch.fft.fftfreq(len(horizontal))
        order = frequencies.argsort()
        axes[1, 2].semilogy(frequencies[order], horizontal[order], label=f"{net['arch']} (stride {net['stride']})")
    for low, high, shade in ((1 / 8, 1 / 4, 0.12), (1 / 4, 0.5 * math.sqrt(2), 0.05)):
        axes[0, 2].axvspan(low, high, color="grey", alpha=shade)
    axes[0, 2].set(xlabel="spatial frequency (cycles per pixel); shaded: middle, high",
                   ylabel="share of layer-1 filter energy", title="layer-1 filter energy by frequency")
    for stride in sorted({net["stride"] for net in nets}):
        for k in range(1, stride // 2 + 1):
            axes[1, 2].axvline(k / stride, color="grey", linestyle=":")
            axes[1, 2].axvline(-k / stride, color="grey", linestyle=":")
    axes[1, 2].set(xlabel="horizontal frequency (cycles per pixel); dotted: k / first-layer stride",
                   ylabel="power relative to the mean", title="layer-2 projections by frequency")
    for axis in axes[:, 2]:
        axis.grid(alpha=0.3)
        axis.legend()
    save_figure(figure, path)


def main(argv=None):
    args = parse_args(argv)
    classes, samples = scan_split(args.data)
    device = pick_device(args.device)
    # Both checkpoints are read before any photo is decoded, so a wrong path fails at once.
    loaded = [(path, *load_checkpoint(path, device)) for path in args.checkpoints]
    nets = [measure(*net, classes, samples["val"], args, device) for net in loaded]
    rows = report_rows(nets)
    names = [f"{n['arch']} ({n['path']})" for n in nets]
    table = [{"measure": measure_name, **dict(zip(names, values))} for measure_name, values in rows]
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "compare.csv"), csv_text(table))
    lines = "\n".join(f"- {line}" for line in findings(nets))
    reference = ", ".join(f"{share:.1%} {band}" for band, share in band_areas().items())
    atomic_write_text(os.path.join(args.out, "compare.md"),
                      f"# First layers compared on {args.data}/val ({nets[0]['val_photos']} photos)\n\n"
                      f"{markdown_table(table)}\nFor reference, random (white-noise) filters spread their energy "
                      f"{reference}.\n\n## What these two networks show\n\n{lines}\n")
    plot(nets, os.path.join(args.out, "compare.png"))
    print(lines)
    print(f"report in {os.path.join(args.out, 'compare.md')}, compare.csv and compare.png")


if __name__ == "__main__":
    run_main(main)
