"""The paper's section 4.1 and figure 6, measured: AlexNet's coarse first layer (11x11,
stride 4) against ZFNet's (7x7, stride 2). `measure` takes one network's numbers (accuracy,
dead filters, layer-1 energy by spatial frequency, aliasing in layer-2 projections),
`report` turns two networks' into the table and the findings, `plot` draws the figure.
compare_arch.py is the command line over them.
"""

import math
import os

import torch
import torch.nn.functional as F
from tqdm import tqdm

from zfnet.data import PhotoCache, cache_folder, val_inputs
from zfnet.deconv import project, receptive_fields
from zfnet.errors import UserError
from zfnet.figures import caption, plain_log_ticks, plt, run_names, save_figure
from zfnet.images import make_grid
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
from zfnet.tables import markdown_table
from zfnet.top9 import require_layers, spread_evenly, strongest_activations, tensor_batches

OUTPUTS = ("compare.md", "compare.csv", "compare.png")


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


def report(nets, data):
    """`(table, text)`: the rows of compare.csv, and compare.md (the table and what it shows)."""
    table = [{"measure": name, **dict(zip([n["name"] for n in nets], values))} for name, values in report_rows(nets)]
    lines = "\n".join(f"- {line}" for line in findings(nets))
    reference = ", ".join(f"{share:.1%} {band}" for band, share in band_areas().items())
    text = (
        f"# First layers compared on {os.path.relpath(os.path.join(data, 'val'))} "
        f"({nets[0]['val_photos']} photos)\n\n"
        f"{markdown_table(table)}\nFor reference, random (white-noise) filters spread their energy "
        f"{reference}.\n\n## What these two networks show\n\n{lines}\n"
    )
    return table, text
