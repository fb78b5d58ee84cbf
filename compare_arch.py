"""AlexNet's first layer against ZFNet's, measured (the paper's section 4.1 and figure 6).

    python train.py --arch alexnet --out runs/alexnet && python train.py --out runs/zfnet
    python compare_arch.py --checkpoint runs/alexnet/best.pth runs/zfnet/best.pth --data flower_data

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
  on --max-images validation photos, and their power at the frequencies of the first layer's
  stride grid (k/s cycles per pixel) over the power in the ring around each: about 1 for a
  smooth spectrum, more for a pattern that repeats every s pixels.

Writes OUT/compare.md (the table and what it shows), OUT/compare.csv and OUT/compare.png;
OUT defaults to compare_arch/ beside the first checkpoint. It must be a new or empty folder,
or one compare_arch.py wrote, outside DATA.
"""

import math
import os

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid
from tqdm import tqdm

from zfnet.arguments import (
    DEFAULT_CHECKPOINT,
    add_batch_size,
    add_checkpoint,
    add_data,
    add_device,
    add_max_images,
    add_out,
    add_workers,
    out_folder,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint
from zfnet.data import PhotoCache, cache_folder, scan_split, val_inputs
from zfnet.deconv import project, receptive_fields
from zfnet.errors import UserError, run_main
from zfnet.experiments import require_layers
from zfnet.figures import caption, plain_log_ticks, plt, run_names, save_figure
from zfnet.files import atomic_write_text
from zfnet.outputs import OutputFolder, require_outside
from zfnet.runtime import pick_device
from zfnet.spectra import (
    BANDS,
    FADED_NORM,
    band_areas,
    band_shares,
    energy_shares,
    faded_filters,
    grid_contrast,
    noise_smoothness,
    power_spectra,
    smoothness,
    verdict,
)
from zfnet.tables import csv_text, markdown_table
from zfnet.top9 import spread_evenly, strongest_activations, tensor_batches

ALEXNET_CHECKPOINT = "runs/alexnet/best.pth"  # where the docstring's first command trains it
OWN_NAMES = ("compare.md", "compare.csv", "compare.png")


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(
        parser,
        nargs=2,
        help="the two networks, AlexNet's and ZFNet's",
        default=[ALEXNET_CHECKPOINT, DEFAULT_CHECKPOINT],
    )
    add_data(parser)
    add_max_images(parser, default=64)
    add_batch_size(parser)
    add_workers(parser)
    add_device(parser)
    add_out(parser, beside="the first checkpoint")
    return parser.parse_args(argv)


def layer2_projections(model, images, batch_size):
    """Deconvnet projections (one per layer-2 map that fires at all) of each map's strongest
    activation over `images`."""
    found = strongest_activations(
        model, tensor_batches(images, batch_size, "searching layer 2"), [2], images.device, k=1
    )
    values, image, ys, xs = (column[:, 0] for column in found[2])
    requests = [(image[m].item(), 2, m, ys[m].item(), xs[m].item()) for m in range(len(values)) if values[m] > 0]
    return torch.stack(project(model, images, requests)).cpu()


def require_comparable(path, model, checkpoint, classes, data):
    """UserError unless the network was trained on the classes of `data` and has a layer 2."""
    if checkpoint["classes"] != classes:
        raise UserError(
            f"{path} was trained on the classes {checkpoint['classes']}, but {data} "
            f"holds {classes}; compare networks on the data they were trained for"
        )
    require_layers(model, [2], path)


def measure(path, model, checkpoint, val_samples, args, device):
    """Everything the report says about one loaded checkpoint."""
    preprocess = checkpoint["preprocess"]
    cache = PhotoCache.load_or_build(
        val_samples, "val", preprocess["input_size"], cache_folder(args.data), args.workers
    )

    correct, peak = 0, None  # peak: each layer-1 filter's strongest response on any photo
    with torch.no_grad():
        for start in tqdm(range(0, len(cache), args.batch_size), desc=f"validating {path}", unit="batch", leave=False):
            rows = torch.arange(start, min(start + args.batch_size, len(cache)))
            inputs = val_inputs(cache, rows, preprocess).to(device)
            correct += (model(inputs).argmax(1).cpu() == cache.labels[rows]).sum().item()
            strongest = model.activations(inputs, [1])[1].amax((0, 2, 3)).cpu()
            peak = strongest if peak is None else torch.maximum(peak, strongest)

    weights = model.layer1.conv.weight.detach().cpu()
    faded = faded_filters(weights)
    silent = peak <= 0
    kernel, stride = model.layer1.conv.kernel_size[0], model.layer1.conv.stride[0]

    # Photos spread over the whole validation side, so that every class is searched.
    chosen = torch.tensor(spread_evenly(len(cache), args.max_images))
    projections = layer2_projections(model, val_inputs(cache, chosen, preprocess).to(device), args.batch_size)
    field = receptive_fields(model)[2].size
    fft_size = 2 ** math.ceil(math.log2(2 * field))
    spectra = power_spectra(projections, fft_size)
    spectrum = (spectra / spectra.sum((1, 2), keepdim=True).clamp_min(1e-30)).mean(0)  # each weighs the same
    arch = model.config["arch"]
    return {
        "name": f"{arch} ({os.path.relpath(path)})",
        "path": path,
        "arch": arch,
        "kernel": kernel,
        "stride": stride,
        "filters": len(weights),
        "accuracy": correct / len(cache),
        "val_photos": len(cache),
        "faded": int(faded.sum()),
        "silent": int(silent.sum()),
        "dead": int((faded | silent).sum()),
        "dead_mask": faded | silent,
        "bands": band_shares(weights),
        "smoothness": smoothness(weights),
        "noise_smoothness": noise_smoothness(kernel),
        "weights": weights,
        "projections": projections,
        "spectrum": spectrum,
        "aliasing": grid_contrast(spectrum, stride, math.ceil(fft_size / field)),
    }


def report_rows(nets):
    """(measure, value per network) rows shared by the CSV and the Markdown table."""
    rows = [
        ("layer 1", [f"{n['filters']} filters {n['kernel']}x{n['kernel']}, stride {n['stride']}" for n in nets]),
        ("validation accuracy", [round(n["accuracy"], 4) for n in nets]),
        ("dead layer-1 filters", [n["dead"] for n in nets]),
        (f"dead: weights under {FADED_NORM} x median norm", [n["faded"] for n in nets]),
        ("dead: never active on val", [n["silent"] for n in nets]),
    ]
    for band, (low, high) in BANDS.items():
        span = f"{low:g}-{high:g}" if high < math.inf else f"over {low:g}"
        rows.append(
            (f"layer-1 energy, {band} frequencies ({span} cycles/px)", [round(n["bands"][band], 4) for n in nets])
        )
    rows.append(
        ("layer-1 smoothness: energy below 1/4 cycle/px, means removed", [round(n["smoothness"], 4) for n in nets])
    )
    rows.append(("the same for white-noise filters of this size", [round(n["noise_smoothness"], 4) for n in nets]))
    rows.append(("layer-2 projections: stride-grid contrast", [round(n["aliasing"], 2) for n in nets]))
    return rows


def findings(nets):
    """What the two networks show, in the terms of the paper's three claims about the
    coarser first layer."""
    coarse, fine = sorted(nets, key=lambda n: (n["stride"], n["kernel"]), reverse=True)
    if (coarse["stride"], coarse["kernel"]) == (fine["stride"], fine["kernel"]):
        return [
            "Both networks have the same first layer; the paper's claims compare different ones, "
            "so the numbers above are the whole finding."
        ]
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
    Row 2: each network's layer-2 projections, and their power against horizontal frequency.
    A colour per network in the curves, that of its titles over the pictures."""
    figure, axes = plt.subplots(2, 3, figsize=(16, 10), layout="constrained")
    colours = plt.get_cmap("tab10").colors
    names = run_names([net["path"] for net in nets])
    for column, (net, name) in enumerate(zip(nets, names)):
        net_label = f"{name} ({net['arch']}, {net['kernel']}x{net['kernel']} stride {net['stride']})"
        axes[0, column].imshow(signed_grid(net["weights"], net["dead_mask"]), interpolation="nearest")
        axes[0, column].set_title(
            f"{net_label}\nlayer-1 filters: {net['dead']} of {net['filters']} dead (framed red)",
            fontsize=10,
            color=colours[column],
        )
        strongest = net["projections"].flatten(1).norm(dim=1).argsort(descending=True)[:16]
        axes[1, column].imshow(signed_grid(net["projections"][strongest]), interpolation="nearest")
        axes[1, column].set_title(
            f"{net_label}\nlayer-2 projections of the 16 strongest maps", fontsize=10, color=colours[column]
        )
        for row in (0, 1):
            axes[row, column].axis("off")

    edges = torch.linspace(0, 0.5 * math.sqrt(2), 25).tolist()
    centres = [(low + high) / 2 for low, high in zip(edges[:-1], edges[1:])]
    for column, (net, name) in enumerate(zip(nets, names)):
        share = energy_shares(net["weights"], zip(edges[:-1], edges[1:]))
        axes[0, 2].plot(centres, share, "-o", markersize=3, color=colours[column], label=name)
        # Summed over vertical frequency, relative to the mean: comparable across FFT sizes.
        horizontal = net["spectrum"].sum(0) * len(net["spectrum"])
        frequencies = torch.fft.fftfreq(len(horizontal))
        order = frequencies.argsort()
        axes[1, 2].semilogy(frequencies[order], horizontal[order], color=colours[column], label=name)
    for band, shade in (("middle", 0.25), ("high", 0.1)):
        low, high = BANDS[band]
        span = f"{low:g}-{high:g}" if high < math.inf else f"over {low:g}"
        axes[0, 2].axvspan(low, min(high, edges[-1]), color="grey", alpha=shade, label=f"{band} band ({span})")
    axes[0, 2].set(
        xlabel="spatial frequency (cycles per pixel)",
        ylabel="share of layer-1 filter energy",
        title="layer-1 filter energy by frequency",
    )
    grid = sorted({k / net["stride"] for net in nets for k in range(1, net["stride"] // 2 + 1)})
    label = "k / first-layer stride (where aliasing shows)"
    for frequency in grid:
        for signed in (frequency, -frequency):
            axes[1, 2].axvline(signed, color="grey", linestyle=":", label=label)
            label = None  # one legend entry for all the lines
    axes[1, 2].set(
        xlabel="horizontal frequency (cycles per pixel)",
        ylabel="power relative to the mean (log scale)",
        title="layer-2 projections by frequency",
    )
    plain_log_ticks(axes[1, 2])
    for axis in axes[:, 2]:
        axis.grid(alpha=0.3)
        # Under the plot, where it hides no curve (the curves fill the plot from side to side).
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9)
    caption(
        figure,
        "What to look for: the better first layer has fewer dead (red-framed) filters, more energy in the middle "
        "band and weaker peaks at the dotted stride frequencies (aliasing). In the pictures grey is 0.",
    )
    save_figure(figure, path)


def claim_outputs(args, samples):
    """`{name: path}` of the outputs, in the output folder claimed before the long work."""
    folder = out_folder(args, "compare_arch", beside=args.checkpoint[0])
    require_outside(folder, args.data, "--data")  # in train/ or val/ the figures would be photos of a class
    photos = [path for side in samples.values() for path, _ in side]
    out = OutputFolder.claim(folder, inputs=[*args.checkpoint, args.data, *photos], own_names=OWN_NAMES)
    return {name: out.path(name) for name in OWN_NAMES}


def main(argv=None):
    args = parse_args(argv)
    classes, samples = scan_split(args.data)
    device = pick_device(args.device)
    # Both checkpoints are read and checked before any photo is decoded, so a wrong one fails at once.
    loaded = [(path, *load_checkpoint(path, device)) for path in args.checkpoint]
    for net in loaded:
        require_comparable(*net, classes, args.data)
    paths = claim_outputs(args, samples)
    nets = [measure(*net, samples["val"], args, device) for net in loaded]
    rows = report_rows(nets)
    table = [{"measure": measure_name, **dict(zip([n["name"] for n in nets], values))} for measure_name, values in rows]
    atomic_write_text(paths["compare.csv"], csv_text(table))
    lines = "\n".join(f"- {line}" for line in findings(nets))
    reference = ", ".join(f"{share:.1%} {band}" for band, share in band_areas().items())
    atomic_write_text(
        paths["compare.md"],
        f"# First layers compared on {os.path.relpath(os.path.join(args.data, 'val'))} "
        f"({nets[0]['val_photos']} photos)\n\n"
        f"{markdown_table(table)}\nFor reference, random (white-noise) filters spread their energy "
        f"{reference}.\n\n## What these two networks show\n\n{lines}\n",
    )
    plot(nets, paths["compare.png"])
    print(lines)
    print(f"report in {paths['compare.md']}, compare.csv and compare.png")


if __name__ == "__main__":
    run_main(main)
