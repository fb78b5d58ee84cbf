"""What the layers of a trained ZFNet respond to: the paper's feature visualisations
(Zeiler & Fergus 2014, figures 2, 4 and 6), made with the deconvnet in zfnet/deconv.py.

    python visualize.py top9                       # figure 2: layers 1-5, their 9 most active maps
    python visualize.py top9 --layers 5 --maps 3,17,40 --images my_photos/
    python visualize.py filters                    # figure 6: the layer-1 filters
    python visualize.py filters --checkpoint runs/alexnet/best.pth runs/zfnet/best.pth
    python visualize.py evolution                  # figure 4, from train.py --snapshot-epochs

Writes into --out: top9_layerN.png and top9.json (every patch's image, position, box and
value); filters.png; evolution_layerN.png, evolution_change.png and evolution_change.csv.
"""
import argparse
import csv
import glob
import io
import json
import math
import os

import torch
from torchvision.utils import make_grid
from tqdm import tqdm

from zfnet.arguments import int_list
from zfnet.checkpoint import load_checkpoint
from zfnet.data import decoded_batches
from zfnet.deconv import crop, project, receptive_fields
from zfnet.errors import UserError, run_main
from zfnet.figures import plt, save_figure, stretched
from zfnet.files import atomic_write_text
from zfnet.images import find_images, load_input, normalize, open_rgb, resize_uint8, unnormalize
from zfnet.runtime import pick_device


def strongest_activations(model, batches, layers, device, k=9):
    """For every map of `layers`, the k images on which it responds most, each at the map's
    strongest position there: `{layer: (values, images, ys, xs)}`, each (maps, k), strongest
    first. A running top-k: memory does not grow with the number of images. Equal values
    keep the earlier image, and the first position in reading order."""
    best, side = {}, {}
    with torch.no_grad():
        for start, inputs in batches:
            for layer, maps in model.activations(inputs.to(device), layers).items():
                side[layer] = maps.shape[-1]
                values, positions = maps.flatten(2).max(2)
                images = torch.arange(start, start + len(inputs), device=device).expand_as(values.T)
                found = (values.T, images, positions.T)
                if layer in best:
                    found = tuple(torch.cat(pair, 1) for pair in zip(best[layer], found))
                order = found[0].sort(dim=1, descending=True, stable=True).indices[:, :k]
                best[layer] = tuple(column.gather(1, order) for column in found)
    return {layer: (values.cpu(), images.cpu(), (flat // side[layer]).cpu(), (flat % side[layer]).cpu())
            for layer, (values, images, flat) in best.items()}


def chosen_layers(model, layers):
    layers = layers or model.conv_layers
    missing = [n for n in layers if n not in model.conv_layers]
    if missing:
        raise UserError(f"no convolutional layer {missing[0]} in this network (it has {model.conv_layers})")
    return layers


def chosen_maps(model, layer, maps, values, count):
    """The maps the user named, checked, or the `count` most active ones (by the mean of
    their strongest activations)."""
    available = model.stage(layer).conv.out_channels
    if maps:
        wrong = [m for m in maps if not 0 <= m < available]
        if wrong:
            raise UserError(f"layer {layer} has no map {wrong[0]} (it has maps 0 to {available - 1})")
        return maps
    return values.mean(1).topk(min(count, available)).indices.tolist()


def load_model(path, device):
    model, checkpoint = load_checkpoint(path, device)
    return model, checkpoint["preprocess"]


def block(projections, patches):
    """One map's panel: its projections (each contrast-stretched) beside the image patches."""
    rows = math.ceil(math.sqrt(len(projections)))
    left = make_grid(torch.stack([stretched(p) for p in projections]), nrow=rows, padding=2, pad_value=1)
    right = make_grid(patches, nrow=rows, padding=2, pad_value=1)
    gap = torch.ones(3, left.shape[1], max(4, left.shape[2] // 12))
    return torch.cat([left, gap, right], 2)


def draw_panels(panels, titles, columns, path, suptitle):
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 1.9 * rows + 0.5), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, panel, title in zip(axes.flat, panels, titles):
        axis.imshow(panel.permute(1, 2, 0).numpy())
        axis.set_title(title, fontsize=9)
    figure.suptitle(suptitle)
    save_figure(figure, path)


def top9(args):
    device = pick_device(args.device)
    model, preprocess = load_model(args.checkpoint, device)
    layers = chosen_layers(model, args.layers)
    paths = find_images(args.images)
    best = strongest_activations(model, decoded_batches(paths, preprocess, args.batch_size, "finding top 9"),
                                 layers, device)
    fields = receptive_fields(model)
    index = []
    for layer in layers:
        values, images, ys, xs = best[layer]
        maps = chosen_maps(model, layer, args.maps, values, args.top_maps)
        shown = [(m, rank) for m in maps for rank in range(images.shape[1])]
        needed = sorted({images[m, rank].item() for m, rank in shown})
        inputs = torch.stack([load_input(paths[i], preprocess) for i in tqdm(needed, desc=f"layer {layer} images")])
        requests = [(needed.index(images[m, rank].item()), layer, m, ys[m, rank].item(), xs[m, rank].item())
                    for m, rank in shown]
        projections = [patch.cpu() for patch in project(model, inputs, requests)]
        pictures = unnormalize(inputs, preprocess["mean"], preprocess["std"])
        panels = []
        for m in maps:
            mine = [i for i, (shown_map, _) in enumerate(shown) if shown_map == m]
            boxes = [fields[layer].box(*requests[i][3:]) for i in mine]
            panels.append(block(torch.stack([projections[i] for i in mine]),
                                torch.stack([crop(pictures[requests[i][0]], box) for i, box in zip(mine, boxes)])))
            for i, box in zip(mine, boxes):
                rank = shown[i][1]
                index.append({"layer": layer, "map": m, "rank": rank + 1, "image": paths[images[m, rank].item()],
                              "y": requests[i][3], "x": requests[i][4], "box": list(box),
                              "value": round(values[m, rank].item(), 6)})
        figure_path = os.path.join(args.out, f"top9_layer{layer}.png")
        draw_panels(panels, [f"map {m}" for m in maps], min(3, len(panels)), figure_path,
                    f"layer {layer}: strongest activations, projected (left) and their "
                    f"{fields[layer].size}x{fields[layer].size} image patches (right)")
        print(f"wrote {figure_path}")
    summary = {"checkpoint": args.checkpoint, "images": args.images, "input_size": preprocess["input_size"],
               "box": "top, left, bottom, right in the image resized to input_size x input_size",
               "receptive_fields": {str(n): vars(fields[n]) for n in layers}, "patches": index}
    atomic_write_text(os.path.join(args.out, "top9.json"), json.dumps(summary, indent=1) + "\n")
    print(f"wrote {os.path.join(args.out, 'top9.json')}")


def filters(args):
    if len(args.checkpoint) > 2:
        raise UserError("filters draws one checkpoint or two side by side")
    figure, axes = plt.subplots(1, len(args.checkpoint), figsize=(6 * len(args.checkpoint), 6.4), squeeze=False)
    for axis, path in zip(axes.flat, args.checkpoint):
        model, _ = load_model(path, "cpu")
        weights = model.layer1.conv.weight.detach()
        grid = make_grid(weights, nrow=math.ceil(math.sqrt(len(weights))), padding=1,
                         normalize=True, scale_each=True, pad_value=1)
        axis.imshow(grid.permute(1, 2, 0).numpy())
        kernel, stride = model.layer1.conv.kernel_size[0], model.layer1.conv.stride[0]
        axis.set_title(f"{path}\n{len(weights)} filters, {kernel}x{kernel}, stride {stride}", fontsize=9)
        axis.axis("off")
    out = os.path.join(args.out, "filters.png")
    save_figure(figure, out)
    print(f"wrote {out}")


def load_snapshots(folder, device):
    """`([(epoch, model)], preprocess)` from train.py's snapshots/epoch_NNN.pth, oldest first."""
    paths = glob.glob(os.path.join(folder, "epoch_*.pth"))
    if len(paths) < 2:
        raise UserError(f"{folder}: needs at least two epoch_NNN.pth snapshots "
                        f"(train with --snapshot-epochs 1,2,5,10)")
    loaded = sorted((load_checkpoint(path, device) for path in paths), key=lambda pair: pair[1]["epoch"])
    first = loaded[0][1]
    if any(checkpoint["model_config"] != first["model_config"] for _, checkpoint in loaded):
        raise UserError(f"{folder}: the snapshots are of different networks")
    return [(checkpoint["epoch"], model) for model, checkpoint in loaded], first["preprocess"]


def cached_batches(pixels, preprocess, batch_size, desc):
    for start in tqdm(range(0, len(pixels), batch_size), desc=desc, unit="batch"):
        yield start, normalize(pixels[start:start + batch_size], preprocess["mean"], preprocess["std"])


def projection_change(before, after):
    """1 - cosine similarity of two projections of one activation: 0 when the map sees the
    same pattern there (whatever its strength), 1 when only one of them responds at all."""
    if not (before.any() or after.any()):
        return 0.0  # the map responds there at neither epoch: nothing changed
    return 1 - torch.cosine_similarity(before.flatten(), after.flatten(), 0).item()


def plot_evolution(panels, maps, epochs, path, title):
    """Figure 4: one row per map, one column per snapshot epoch."""
    grid = make_grid(torch.stack([stretched(p) for p in torch.stack(panels, 1).flatten(0, 1)]), nrow=len(epochs),
                     padding=2, pad_value=1)
    figure, axis = plt.subplots(figsize=(1.3 * len(epochs) + 1, 1.3 * len(maps) + 0.6))
    axis.imshow(grid.permute(1, 2, 0).numpy())
    column, row = grid.shape[-1] / len(epochs), grid.shape[-2] / len(maps)
    axis.set_xticks([column * (i + 0.5) for i in range(len(epochs))], [str(epoch) for epoch in epochs])
    axis.set_yticks([row * (i + 0.5) for i in range(len(maps))], [f"map {m}" for m in maps])
    axis.set(xlabel="epoch", title=title)
    save_figure(figure, path)


def plot_changes(changes, path):
    """Mean change of each layer's projections from the previous snapshot, against epoch."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for layer, by_epoch in changes.items():
        epochs = sorted(by_epoch)
        axis.plot(epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs], "-o", label=f"layer {layer}")
    axis.set(xlabel="epoch", ylabel="1 - cosine similarity to the previous snapshot",
             title="how much each layer's projections still change")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path)


def evolution(args):
    device = pick_device(args.device)
    snapshots, preprocess = load_snapshots(args.snapshots, device)
    epochs = [epoch for epoch, _ in snapshots]
    final = snapshots[-1][1]
    layers = chosen_layers(final, args.layers)
    paths = find_images(args.images)
    paths = paths[::math.ceil(len(paths) / args.max_images)]  # an even spread over the classes
    pixels = torch.stack([resize_uint8(open_rgb(path), preprocess["input_size"])
                          for path in tqdm(paths, desc="decoding images", unit="image")])
    inputs = normalize(pixels, preprocess["mean"], preprocess["std"])
    strongest = {epoch: strongest_activations(model, cached_batches(pixels, preprocess, args.batch_size,
                                                                    f"epoch {epoch}"), layers, device, k=1)
                 for epoch, model in snapshots}

    def located(epoch, layer, m):
        values, images, ys, xs = strongest[epoch][layer]
        return (images[m, 0].item(), layer, m, ys[m, 0].item(), xs[m, 0].item()), values[m, 0].item()

    rows, changes = [], {layer: {} for layer in layers}
    for layer in layers:
        maps = chosen_maps(final, layer, args.maps, strongest[epochs[-1]][layer][0], args.maps_per_layer)
        panels, previous = [], None
        for epoch, model in snapshots:
            # Each map's strongest activation at this epoch, for the figure; and its activation
            # at the final epoch's strongest place, a fixed point to measure how it still changes.
            requests = [located(epoch, layer, m)[0] for m in maps]
            anchors = [located(epochs[-1], layer, m)[0] for m in maps]
            projected = [patch.cpu() for patch in project(model, inputs, requests + anchors)]
            panels.append(torch.stack(projected[:len(maps)]))
            anchored = projected[len(maps):]
            for i, m in enumerate(maps):
                change = None if previous is None else projection_change(previous[i], anchored[i])
                if change is not None:
                    changes[layer].setdefault(epoch, []).append(change)
                image, _, _, y, x = requests[i]
                rows.append({"layer": layer, "map": m, "epoch": epoch,
                             "change_from_previous": "" if change is None else round(change, 6),
                             "strongest_image": paths[image], "y": y, "x": x,
                             "strongest_value": round(located(epoch, layer, m)[1], 6)})
            previous = anchored
        out = os.path.join(args.out, f"evolution_layer{layer}.png")
        plot_evolution(panels, maps, epochs, out, f"layer {layer}: strongest activation per epoch")
        print(f"wrote {out}")

    plot_changes(changes, os.path.join(args.out, "evolution_change.png"))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(os.path.join(args.out, "evolution_change.csv"), text.getvalue())
    print(f"wrote {os.path.join(args.out, 'evolution_change.png')} and evolution_change.csv")


def get_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="runs/zfnet/visualize", help="folder for the figures (default: %(default)s)")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    data.add_argument("--batch-size", default=32, type=int, help="images per forward pass (default: %(default)s)")
    data.add_argument("--layers", type=int_list, metavar="L1,L2,...", help="layers to show (default: all of 1-5)")
    data.add_argument("--maps", type=int_list, metavar="M1,M2,...",
                        help="show these maps of every chosen layer instead of the most active ones")
    data.add_argument("--images", default="flower_data/val",
                        help="folder of images, class sub-folders included (default: %(default)s)")

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    top = commands.add_parser("top9", parents=[common, data], help="figure 2: the 9 strongest activations of each map, projected")
    top.add_argument("--checkpoint", default="runs/zfnet/best.pth", help="trained checkpoint (default: %(default)s)")
    top.add_argument("--top-maps", default=9, type=int, help="maps per layer, the most active (default: %(default)s)")
    top.set_defaults(run=top9)
    weights = commands.add_parser("filters", parents=[common], help="figure 6: the layer-1 filters")
    weights.add_argument("--checkpoint", nargs="+", default=["runs/zfnet/best.pth"],
                         help="one checkpoint, or two to draw side by side (default: %(default)s)")
    weights.set_defaults(run=filters)
    evolve = commands.add_parser("evolution", parents=[common, data], help="figure 4: features across training snapshots")
    evolve.add_argument("--snapshots", default="runs/zfnet/snapshots",
                        help="train.py's snapshot folder (default: %(default)s)")
    evolve.add_argument("--maps-per-layer", default=4, type=int,
                        help="maps per layer, the most active at the last snapshot (default: %(default)s)")
    evolve.add_argument("--max-images", default=400, type=int,
                        help="use at most this many images, spread evenly over the folder (default: %(default)s)")
    evolve.set_defaults(run=evolution)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    counts = ("batch_size", "top_maps", "maps_per_layer", "max_images")
    if any(getattr(args, name, 1) < 1 for name in counts):
        raise UserError("--batch-size, --top-maps, --maps-per-layer and --max-images must be at least 1")
    args.run(args)


if __name__ == "__main__":
    run_main(main)
