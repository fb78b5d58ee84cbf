"""Where each feature map responds most: the search behind the paper's figure 2 (the top 9
activations of a map over a set of photos) and figure 4 (each map's strongest activation in
every training snapshot), and the choice of layers and maps to show.

    kept, skipped = [], []
    batches = usable_batches(paths, preprocess, 32, "finding top 9", kept, skipped)
    best = strongest_activations(model, batches, [1, 5], device)
    require_usable(kept, skipped, folder)   # image index i is kept[i]
    values, images, ys, xs = best[5]   # each (maps, 9), strongest first
"""

import sys

import torch
from tqdm import tqdm

from zfnet.errors import UserError
from zfnet.images import load_input


def require_layers(model, layers, checkpoint_path):
    """UserError naming the checkpoint unless its network has every one of `layers`."""
    missing = [n for n in layers if n not in model.conv_layers + model.fc_layers]
    if missing:
        raise UserError(
            f"{checkpoint_path}: this network has no layer {', '.join(map(str, missing))} "
            f"(it has {', '.join(map(str, model.conv_layers + model.fc_layers))})"
        )


def strongest_activations(model, batches, layers, device, k=9):
    """For every map of `layers`, the k images on which it responds most, each at the map's
    strongest position there: `{layer: (values, images, ys, xs)}`, each (maps, k), strongest
    first. `batches` yields `(index of its first image, inputs)`. A running top-k: memory
    does not grow with the number of images. Equal values keep the earlier image, and the
    first position in reading order."""
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
    return {
        layer: (values.cpu(), images.cpu(), (flat // side[layer]).cpu(), (flat % side[layer]).cpu())
        for layer, (values, images, flat) in best.items()
    }


def tensor_batches(inputs, batch_size, desc):
    """`(first index, inputs)` for consecutive batches of network inputs already in memory,
    as `strongest_activations` takes them, with a progress bar."""
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc, unit="batch", leave=False):
        yield start, inputs[start : start + batch_size]


def usable_batches(paths, preprocess, batch_size, desc, kept, skipped):
    """`(first index, inputs)` batches of the photos of `paths` that decode, as
    `strongest_activations` takes them, decoded as they are needed. A search over a folder
    goes on past a photo it cannot use (truncated, not an image, too large to decode safely,
    a broken link): its error is appended to `skipped`. Every photo used is appended to
    `kept`, so that image index i means kept[i]."""
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False):
        inputs = []
        for path in paths[start : start + batch_size]:
            try:
                inputs.append(load_input(path, preprocess))
            except UserError as error:
                skipped.append(str(error))
                continue
            kept.append(path)
        if inputs:
            yield len(kept) - len(inputs), torch.stack(inputs)


def require_usable(kept, skipped, folder):
    """After `usable_batches`: UserError if no photo of `folder` could be used, else a note on
    stderr for each one skipped."""
    if not kept:
        raise UserError(f"none of the {len(skipped)} photos in {folder} can be used (the first: {skipped[0]})")
    for error in skipped:
        print(f"note: skipped {error}", file=sys.stderr)


def usable_inputs(paths, preprocess, batch_size, desc, folder):
    """`(kept, inputs)`: the photos of `paths` (found in `folder`) that can be used, and all
    their network inputs in memory; as `usable_batches` and `require_usable` find them."""
    kept, skipped = [], []
    batches = [batch for _, batch in usable_batches(paths, preprocess, batch_size, desc, kept, skipped)]
    require_usable(kept, skipped, folder)
    return kept, torch.cat(batches)


def spread_evenly(count, limit):
    """Indices of at most `limit` of `count` items, evenly spread from the first to the last:
    photos sorted by class folder then cover every class."""
    return torch.linspace(0, count - 1, min(limit, count)).round().long().unique().tolist()


def chosen_layers(model, layers, checkpoint_path):
    """The layers to show, `layers` or all convolutional ones; UserError for a layer the
    network lacks or a fully connected one (it has no maps to project)."""
    layers = list(dict.fromkeys(layers)) if layers else model.conv_layers  # a layer named twice is shown once
    require_layers(model, layers, checkpoint_path)
    fully_connected = [n for n in layers if n in model.fc_layers]
    if fully_connected:
        raise UserError(
            f"layer {fully_connected[0]} is fully connected: only the convolutional layers "
            f"({', '.join(map(str, model.conv_layers))}) have maps to show"
        )
    return layers


def require_maps(model, layers, maps, count=None):
    """UserError unless every one of `layers` has all the `maps` named (None: none named) and
    at least `count` maps (--maps-per-layer; None: not given); checked before the search,
    which takes long."""
    for layer in layers:
        available = model.stage(layer).conv.out_channels
        wrong = [m for m in maps or () if not 0 <= m < available]
        if wrong:
            raise UserError(f"layer {layer} has no map {wrong[0]} (it has {available} maps, 0 to {available - 1})")
        if count is not None and count > available:
            raise UserError(f"--maps-per-layer {count}: layer {layer} has only {available} maps")


def chosen_maps(maps, values, count):
    """The maps named (checked by `require_maps`; each once), or the `count` most active ones
    (all of them if there are fewer) by the mean of their strongest activations `values` (maps, k)."""
    return list(dict.fromkeys(maps)) if maps else values.mean(1).topk(min(count, len(values))).indices.tolist()


def pil_box(box):
    """A receptive-field box `(top, left, bottom, right)` (zfnet.deconv's order) as
    `[left, top, right, bottom]`, PIL's order, in which every output file writes boxes."""
    top, left, bottom, right = box
    return [left, top, right, bottom]
