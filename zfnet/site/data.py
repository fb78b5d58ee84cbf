"""What the explorer's pages show, and the cache that lets a re-run skip computing it again.

- `survey`: ONE forward pass over the photos gives every photo's class probabilities and,
  for every feature map of layers 1-5, its strongest activation on every photo and where it
  is (photos x maps numbers per layer, a few hundred kB). Each map's top 9 (the photos on
  which it responds most, each at its strongest position: what zfnet.top9's
  strongest_activations finds) and its mean activation per class follow from these.
- `analyse_photo`: what a photo page shows: the prediction, the three occlusion maps of
  figure 7, and each layer's most active maps on it projected three ways.

The cache (`cache.pt` in the site's folder) is keyed by the checkpoint's bytes, the photos'
paths, sizes and modification times, and CACHE_VERSION; photo pages by the photo too, the
evolution by the snapshots' bytes.
"""

import functools
import hashlib
import os

import torch

from zfnet.deconv import project, receptive_fields
from zfnet.files import atomic_write
from zfnet.images import unnormalize
from zfnet.projections import class_projections
from zfnet.studies import sanity
from zfnet.studies.common import judged_class
from zfnet.studies.occlusion import FEATURE_LAYER, occlusion_maps, square_positions
from zfnet.top9 import usable_batches

CACHE_VERSION = 1
TOP = 9  # activations per map, the paper's figure 2
PHOTO_MAPS = 6  # most active maps per layer on a photo page
EVOLUTION_MAPS = 4  # maps per layer on the evolution page
SANITY_MAPS = 4  # most active maps per layer whose top 9 the sanity page measures
WIRED = 8  # maps of the layer below listed on a map page, the most strongly wired first
GROWTH_TILE = 80  # pixels of a map page's projection per snapshot (80 x 819 maps fit a JPEG's 65535)
# The paper's occluder: a 50-pixel grey square moved by 8 pixels over a 224-pixel input,
# scaled for networks of another input size.
OCCLUDER = {"size": 50 / 224, "stride": 8 / 224}
METHODS = ("deconvnet", "guided", "gradient")  # the photo pages' three projections, in order


def one_thread(function):
    """Run `function` on one PyTorch thread. On small tensors (one photo's, a tile's) handing
    work to other threads costs more than it saves, and on a busy machine far more: measured on
    two cores that another job kept busy, rounding a 139-pixel tile took 8 ms on two threads and
    3 us on one, a photo's occlusion maps 4.0 s and 1.0 s. Batches of photos keep PyTorch's
    threads."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


@one_thread
def projected(model, inputs, requests, rule="deconvnet"):
    """zfnet.deconv.project, on one thread: it works on small windows (see one_thread)."""
    return project(model, inputs, requests, rule=rule)


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def photo_stamp(path):
    """A photo's identity for the cache: its path, size and modification time."""
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def survey_key(checkpoint_path, paths):
    digest = hashlib.sha256(f"{CACHE_VERSION}:{file_digest(checkpoint_path)}".encode())
    for path in paths:
        digest.update(f"\n{photo_stamp(path)}".encode())
    return digest.hexdigest()


def load_cache(path, key):
    """The cache at `path` when it was made for `key`, else None (absent, stale or damaged:
    it is only ever a shortcut)."""
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache is recomputed like a missing one
        return None
    return cache if isinstance(cache, dict) and cache.get("key") == key else None


def save_cache(path, cache):
    atomic_write(path, lambda file: torch.save(cache, file))


def _maps_and_scores(model, inputs):
    """One forward pass: `({layer: (values, flat positions, side)}, logits)`: each map's
    strongest activation (maps rectified, before pooling), where it lies, and the side of
    the maps, per photo."""
    strongest, handles = {}, []
    for n in model.conv_layers:

        def record(module, args, output, n=n):
            strongest[n] = (*output.flatten(2).max(2), output.shape[-1])

        handles.append(model.stage(n).relu.register_forward_hook(record))
    try:
        with torch.inference_mode():
            logits = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return strongest, logits


def survey(model, paths, preprocess, batch_size):
    """`(survey, inputs)`: the survey (a dict of plain values and tensors, as cached) of the
    photos of `paths` that decode, and their network inputs (N, 3, S, S) on the CPU (None if
    none decodes). The photos that cannot be used are listed in survey["skipped"]."""
    device = next(model.parameters()).device
    kept, skipped, inputs, probabilities = [], [], [], []
    values, positions, sides = {n: [] for n in model.conv_layers}, {n: [] for n in model.conv_layers}, {}
    for _, batch in usable_batches(paths, preprocess, batch_size, "forward pass over the photos", kept, skipped):
        strongest, logits = _maps_and_scores(model, batch.to(device))
        for n, (value, position, side) in strongest.items():
            values[n].append(value.cpu())
            positions[n].append(position.cpu())
            sides[n] = side
        probabilities.append(logits.float().softmax(1).cpu())
        inputs.append(batch)
    if not kept:
        return {"paths": kept, "skipped": skipped}, None
    values = {n: torch.cat(parts) for n, parts in values.items()}
    positions = {n: torch.cat(parts) for n, parts in positions.items()}
    return {
        "paths": kept,
        "skipped": skipped,
        "probabilities": torch.cat(probabilities),
        "values": values,
        "top": {n: top_activations(values[n], positions[n], sides[n]) for n in values},
    }, torch.cat(inputs)


def top_activations(values, positions, side, k=TOP):
    """Each map's k strongest photos, from the photos' strongest activations `values` and
    their flat `positions` (photos, maps): `(values, images, ys, xs)`, each (maps, k),
    strongest first; equal values keep the earlier photo, as strongest_activations does."""
    order = values.T.sort(dim=1, descending=True, stable=True).indices[:, :k].clone()  # not a view of all photos
    flat = positions.T.gather(1, order)
    return values.T.gather(1, order), order, flat // side, flat % side


def class_labels(paths, folder, classes):
    """Each photo's class index when every photo lies in a class folder of `folder` named
    after one of the checkpoint's `classes` (a validation split's layout), else None."""
    labels = []
    for path in paths:
        parts = os.path.relpath(path, folder).split(os.sep)
        if len(parts) < 2 or parts[0] not in classes:
            return None
        labels.append(classes.index(parts[0]))
    return torch.tensor(labels)


def class_means(values, groups, count):
    """(maps, classes): each map's mean strongest activation over the photos of each class
    (NaN for a class without photos)."""
    sums = torch.zeros(count, values.shape[1]).index_add_(0, groups, values)
    photos = torch.bincount(groups, minlength=count)
    return (sums / photos[:, None]).T


def occluder(input_size):
    size = max(1, round(OCCLUDER["size"] * input_size))
    return size, max(1, round(OCCLUDER["stride"] * input_size))


@one_thread
def analyse_photo(model, x, path, classes):
    """`(numbers, pictures)` for one photo page; `x` (3, S, S) is the photo's input. Numbers
    (cached): probabilities, the class judged (`target`), the occlusion maps, and per layer the
    photo's most active maps `(map, y, x, value)`. Pictures (written once): per layer a row
    per map, `(receptive-field box, deconvnet, guided, gradient)` projections inside the box,
    and the target score's guided and plain gradients over the whole photo."""
    device = next(model.parameters()).device
    x = x.to(device)
    with torch.inference_mode():
        probabilities = model(x[None]).float().softmax(1)[0].cpu()
        found = model.activations(x[None], model.conv_layers)
    target = judged_class(path, classes, None, probabilities)
    requests, chosen = [], {}
    for layer, maps in found.items():
        peaks = maps[0].flatten(1).max(1)
        top = peaks.values.topk(min(PHOTO_MAPS, len(peaks.values)))
        chosen[layer] = []
        for value, m in zip(top.values.tolist(), top.indices.tolist()):
            y, column = divmod(peaks.indices[m].item(), maps.shape[-1])
            chosen[layer].append((m, y, column, value))
            requests.append((0, layer, m, y, column))
    size, stride = occluder(x.shape[-1])
    strongest = chosen[FEATURE_LAYER][0][0]
    maps = occlusion_maps(model, x, size, stride, target, FEATURE_LAYER, strongest)
    numbers = {
        "probabilities": probabilities,
        "target": target,
        "maps": chosen,
        "occlusion": {
            **maps,
            "offsets": square_positions(x.shape[-1], size, stride),
            "size": size,
            "stride": stride,
            "layer": FEATURE_LAYER,
            "channel": strongest,
        },
    }
    fields = receptive_fields(model)
    projections = {rule: projected(model, x[None], requests, rule) for rule in METHODS}
    pictures = {
        "rows": {layer: [] for layer in chosen},
        "class": {rule: class_projections(model, x[None], [target], rule)[0] for rule in METHODS[1:]},
    }
    for i, (_, layer, _, y, column) in enumerate(requests):
        pictures["rows"][layer].append((fields[layer].box(y, column), *(projections[m][i] for m in METHODS)))
    return numbers, pictures


@one_thread
def sanity_checks(model, inputs, pictures, requests, example):
    """zfnet.studies.sanity.measure, on one thread: it projects small windows (see one_thread)."""
    return sanity.measure(model, inputs, pictures, requests, example=example)


def wiring(model, layer, m, count=WIRED):
    """`[(map of the layer below, share)]`: the `count` maps of layer `layer - 1` most strongly
    wired into map `m` of `layer`, by the sum of the absolute weights from each (its 2-D
    kernel), strongest first, with that sum's share of all of them. Between two convolutions
    lie only ReLU, pooling and normalisation, which keep the maps' order: input channel k is
    map k of the layer below."""
    strength = model.stage(layer).conv.weight[m].detach().abs().sum(dim=(1, 2)).double()
    order = strength.sort(descending=True, stable=True).indices[:count]
    total = strength.sum().item()
    return [(k, strength[k].item() / total if total else 0.0) for k in order.tolist()]


def filter_drift(snapshots, layer):
    """(maps, snapshots): how far each filter of layer `layer` is at each snapshot from the
    first snapshot's, relative to the first's norm (zfnet.studies.evolution.weight_drift does
    the same for the whole layer)."""
    weights = torch.stack([model.stage(layer).conv.weight.detach().double().cpu() for _, model in snapshots])
    moved = (weights - weights[0]).flatten(2).norm(dim=2)
    return (moved / weights[0].flatten(1).norm(dim=1).clamp(min=1e-12)).T.float()


def seen(inputs, preprocess):
    """Network inputs as the pictures the network sees, in [0, 1]."""
    return unnormalize(inputs.cpu(), preprocess["mean"], preprocess["std"])


def architecture(model, input_size):
    """The network as a table, without running it: a row per convolution, pooling and fully
    connected layer: `(layer, operation, kernel / stride / padding, output, receptive field,
    parameters)`; the receptive field of a convolution's maps is `(size, stride)`."""
    fields, rows, side, channels = receptive_fields(model), [], input_size, 3
    for n in model.conv_layers:
        stage = model.stage(n)
        for module in (stage.conv, getattr(stage, "pool", None)):
            if module is None:
                continue
            kernel, stride, padding = (
                v[0] if isinstance(v, tuple) else v for v in (module.kernel_size, module.stride, module.padding)
            )
            side = (side + 2 * padding - kernel) // stride + 1
            if module is stage.conv:
                channels = module.out_channels
                field = (fields[n].size, fields[n].stride)
                rows.append(
                    (
                        n,
                        "convolution + ReLU",
                        (kernel, stride, padding),
                        (channels, side, side),
                        field,
                        sum(p.numel() for p in module.parameters()),
                    )
                )
            else:
                rows.append((n, "max-pooling", (kernel, stride, padding), (channels, side, side), None, 0))
    for n in [*model.fc_layers, None]:
        linear = model.classifier if n is None else model.stage(n).linear
        rows.append(
            (
                "output" if n is None else n,
                "fully connected" + ("" if n is None else " + ReLU, dropout 0.5"),
                None,
                (linear.out_features,),
                None,
                sum(p.numel() for p in linear.parameters()),
            )
        )
    return rows
