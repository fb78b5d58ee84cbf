"""The paper's figure 4: how features develop during training, from the snapshots that
train.py --snapshot-epochs saves.

- `load_snapshots`: the snapshots of one run, oldest first, checked to be of one network;
- `strongest_places`: each snapshot's strongest activation of every map over the photos;
- `trace`: for chosen maps, that activation projected by each snapshot's network, and
  optionally the activation at the last snapshot's strongest place (a fixed point, to
  measure how a map's picture still changes: `projection_change`);
- `weight_drift`: how far each layer's weights moved from their start and lately;
- `report`: the table of where each map's strongest activation lies and how it changed;
- `plot` (one layer's figure) and `plot_changes` draw them.

visualize.py evolution and the explorer's evolution page both use it.
"""

import glob
import os

import torch

from zfnet.checkpoint import load_checkpoint
from zfnet.errors import UserError
from zfnet.figures import caption, plt, save_figure, stretched
from zfnet.files import atomic_write_text
from zfnet.images import make_grid
from zfnet.studies import features
from zfnet.tables import csv_text
from zfnet.top9 import strongest_activations, tensor_batches

OUTPUTS = ("evolution_layer*.png", "evolution_change.png", "evolution_change.csv", "evolution_weights.csv")

COMMAND = """Figure 4: how features develop during training, from the snapshots train.py
--snapshot-epochs saved. For each chosen layer's maps (by default the most active at the last
snapshot), the projection of its strongest activation at every snapshot; and how much each
layer's projections still change from one snapshot to the next, measured at the place of the
last snapshot's strongest activation (1 - cosine similarity).

Writes evolution_layerN.png, evolution_change.png, evolution_change.csv and evolution_weights.csv."""


def snapshot_files(folder, required=False):
    """train.py's snapshots in `folder` (epoch_NNN.pth), in the order of their names; when
    `required`, UserError unless there are two or more."""
    paths = sorted(glob.glob(os.path.join(glob.escape(folder), "epoch_*.pth")))
    if required and len(paths) < 2:
        raise UserError(f"{folder}: needs at least two epoch_NNN.pth snapshots (train with --snapshot-epochs 1,2,5,10)")
    return paths


def load_snapshots(paths, folder, device, network=None):
    """`([(epoch, model)], preprocess)` from the snapshots `paths` of `folder`, oldest first;
    UserError unless they are of one network (of the config `network`, when given), each of
    another epoch."""
    loaded = []
    for path in paths:
        model, checkpoint = load_checkpoint(path, device)
        if network is not None and checkpoint["model_config"] != network:
            raise UserError(f"{path} is of another network")
        loaded.append((model, checkpoint))
    loaded.sort(key=lambda pair: pair[1]["epoch"])
    first = loaded[0][1]
    if any(checkpoint["model_config"] != first["model_config"] for _, checkpoint in loaded):
        raise UserError(f"{folder}: the snapshots are of different networks")
    epochs = [checkpoint["epoch"] for _, checkpoint in loaded]
    repeated = [epoch for epoch, following in zip(epochs, epochs[1:]) if epoch == following]
    if repeated:
        raise UserError(f"{folder}: two snapshots of epoch {repeated[0]}; keep one of them")
    return [(checkpoint["epoch"], model) for model, checkpoint in loaded], first["preprocess"]


def strongest_places(snapshots, inputs, layers, batch_size):
    """`{epoch: {layer: (values, images, ys, xs)}}`: each map's strongest activation over
    `inputs` in every snapshot (strongest_activations with k=1)."""
    return {
        epoch: strongest_activations(
            model,
            tensor_batches(inputs, batch_size, f"snapshot of epoch {epoch}"),
            layers,
            next(model.parameters()).device,
            k=1,
        )
        for epoch, model in snapshots
    }


def trace(snapshots, inputs, strongest, maps, project, anchored=False):
    """For `maps` ({layer: [map, ...]}), each one's strongest activation in every snapshot,
    projected by that snapshot's network with `project` (zfnet.deconv.project or a wrapper).
    Returns `{layer: (found, projections, at_last)}`: found (maps, snapshots, 4) of image, y,
    x and value; projections [[patch per snapshot] per map]; with `anchored`, at_last the
    same for the activation at the place of the last snapshot's strongest (else None)."""
    traced = {}
    for layer, chosen in maps.items():
        found, projections, at_last = [], [[] for _ in chosen], [[] for _ in chosen]
        fixed = features.strongest_requests(strongest[snapshots[-1][0]][layer], layer, chosen)
        for epoch, model in snapshots:
            values, images, ys, xs = (column[chosen, 0] for column in strongest[epoch][layer])
            found.append(torch.stack([images.float(), ys.float(), xs.float(), values], 1))
            requests = features.strongest_requests(strongest[epoch][layer], layer, chosen)
            patches = [patch.cpu() for patch in project(model, inputs, requests + (fixed if anchored else []))]
            for row, patch in zip(projections, patches):
                row.append(patch)
            for row, patch in zip(at_last, patches[len(chosen) :]):
                row.append(patch)
        traced[layer] = (torch.stack(found, 1), projections, at_last if anchored else None)
    return traced


def projection_change(before, after):
    """1 - cosine similarity of two projections of one activation: 0 when the map sees the
    same pattern there (whatever its strength), 1 when only one of them responds at all."""
    if not (before.any() or after.any()):
        return 0.0  # the map responds there at neither epoch: nothing changed
    return 1 - torch.cosine_similarity(before.flatten(), after.flatten(), 0).item()


def report(traced, maps, epochs, paths):
    """`(rows, changes)` from `trace(..., anchored=True)`: a row per layer, snapshot and map
    (evolution_change.csv: where its strongest activation lies, and how much its picture changed
    since the previous snapshot at the last snapshot's strongest place), and those changes as
    `{layer: {epoch: [change per map]}}`."""
    rows, changes = [], {layer: {} for layer in traced}
    for layer, (found, _, at_last) in traced.items():
        for s, epoch in enumerate(epochs):
            for i, m in enumerate(maps[layer]):
                change = None if s == 0 else projection_change(at_last[i][s - 1], at_last[i][s])
                if change is not None:
                    changes[layer].setdefault(epoch, []).append(change)
                image, y, x, value = found[i, s].tolist()
                rows.append(
                    {
                        "layer": layer,
                        "map": m,
                        "epoch": epoch,
                        "change_from_previous": "" if change is None else round(change, 6),
                        "strongest_image": paths[int(image)],
                        "y": int(y),
                        "x": int(x),
                        "strongest_value": round(value, 6),
                    }
                )
    return rows, changes


def weight_drift(snapshots, layers):
    """Rows of each layer's weights at each snapshot: their distance from the first snapshot's
    and from the previous one's, each relative to the norm of the earlier weights. A layer that
    settled has moved far from its start and little lately; one that never learned has moved
    little from its start too (both changes are small)."""
    rows = []
    for layer in layers:
        weights = [model.stage(layer).conv.weight.detach().double() for _, model in snapshots]
        for (epoch, _), previous, current in zip(snapshots, [None, *weights], weights):
            rows.append(
                {
                    "layer": layer,
                    "epoch": epoch,
                    "from_first": round(((current - weights[0]).norm() / weights[0].norm()).item(), 6),
                    "from_previous": ""
                    if previous is None
                    else round(((current - previous).norm() / previous.norm()).item(), 6),
                }
            )
    return rows


def drift_lines(drift, epochs):
    """A line per layer: how far its weights moved by the last snapshot."""
    return [
        f"layer {row['layer']}: weights moved {row['from_first']:.1%} from epoch {epochs[0]}, "
        f"{row['from_previous']:.1%} since the previous snapshot"
        for row in drift
        if row["epoch"] == epochs[-1]
    ]


def plot(projections, maps, epochs, path, title):
    """Figure 4 for one layer: one row per map, one column per snapshot epoch."""
    grid = make_grid(
        torch.stack([stretched(patch) for row in projections for patch in row]),
        nrow=len(epochs),
        padding=2,
        pad_value=1,
    )
    figure, axis = plt.subplots(figsize=(1.3 * len(epochs) + 1, 1.3 * len(maps) + 0.6))
    axis.imshow(grid.permute(1, 2, 0).numpy())
    column, row = grid.shape[-1] / len(epochs), grid.shape[-2] / len(maps)
    axis.set_xticks([column * (i + 0.5) for i in range(len(epochs))], [str(epoch) for epoch in epochs])
    axis.set_yticks([row * (i + 0.5) for i in range(len(maps))], [f"map {m}" for m in maps])
    axis.set(xlabel="epoch", title=title)
    save_figure(figure, path)


def plot_changes(changes, drift, epochs, path):
    """Left: mean change of each layer's projections from the previous snapshot. Right: each
    layer's weights, their distance from the first snapshot's and from the previous one's."""
    figure, (projections, weights) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for layer, by_epoch in changes.items():
        shown = sorted(by_epoch)
        projections.plot(shown, [sum(by_epoch[e]) / len(by_epoch[e]) for e in shown], "-o", label=f"layer {layer}")
    projections.set(
        xlabel="epoch",
        ylabel="1 - cosine similarity to the previous snapshot",
        title="projections: change since the previous snapshot",
    )
    for index, layer in enumerate(changes):
        rows = [row for row in drift if row["layer"] == layer]
        colour = f"C{index}"
        weights.plot(
            [r["epoch"] for r in rows],
            [r["from_first"] for r in rows],
            "-o",
            color=colour,
            label=f"layer {layer}",
        )
        later = [r for r in rows if r["from_previous"] != ""]
        weights.plot(
            [r["epoch"] for r in later],
            [r["from_previous"] for r in later],
            "--s",
            color=colour,
        )
    # A layer started small moves many times its initial norm, the others less than once: a
    # log scale shows both.
    weights.set_yscale("log", nonpositive="mask")
    weights.set(
        xlabel="epoch",
        ylabel="weight change / the earlier weights' norm (log)",
        title=f"weights: moved since epoch {epochs[0]} (solid)\nand since the previous snapshot (dashed)",
    )
    for axis in (projections, weights):
        if epochs[-1] > 10 * max(epochs[0], 1):  # snapshots spread over decades crowd a linear axis
            axis.set_xscale("symlog", linthresh=1, linscale=0.5)
            axis.minorticks_off()
        axis.set_xticks(epochs, [str(epoch) for epoch in epochs])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    caption(
        figure,
        "A layer that settled moved far from its start and little lately; one that never learned moved little "
        "from its start too. Snapshot epoch 0 (train.py --snapshot-epochs 0,...) is the initial weights.",
    )
    save_figure(figure, path)


def output_names(layers):
    """The files `write` writes for `layers`: a figure per layer, then the change figure and
    the two tables."""
    return [f"evolution_layer{layer}.png" for layer in layers] + list(OUTPUTS[1:])


def write(snapshots, traced, maps, paths, title, outputs):
    """Write the figures and tables of `trace(..., anchored=True)` over the photos `paths`
    into `outputs` ({name in output_names: path}), each layer's figure titled "layer N:
    `title`". Returns the lines to print: how far the weights moved, and what was written."""
    epochs = [epoch for epoch, _ in snapshots]
    rows, changes = report(traced, maps, epochs, paths)
    lines = []
    for layer in traced:
        figure = outputs[f"evolution_layer{layer}.png"]
        plot(traced[layer][1], maps[layer], epochs, figure, f"layer {layer}: {title}")
        lines.append(f"wrote {figure}")
    drift = weight_drift(snapshots, list(traced))
    names = OUTPUTS[1:]
    change_figure, change_table, weights_table = (outputs[name] for name in names)
    plot_changes(changes, drift, epochs, change_figure)
    atomic_write_text(change_table, csv_text(rows))
    atomic_write_text(weights_table, csv_text(drift))
    return lines + drift_lines(drift, epochs) + [f"wrote {change_figure}, {change_table} and {weights_table}"]
