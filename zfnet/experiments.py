"""What the experiments (occlusion, invariance, correspondence) share: the network their
--checkpoint and --device name, the layers they need, the class a photo is judged against,
and layer features in batches."""

import os

import torch
from tqdm import tqdm

from zfnet.checkpoint import load_checkpoint
from zfnet.errors import UserError
from zfnet.runtime import pick_device


def load_network(args):
    """`(model, checkpoint)` from the --checkpoint and --device flags, on that device."""
    return load_checkpoint(args.checkpoint, pick_device(args.device))


def require_layers(model, layers, checkpoint_path):
    """UserError naming the checkpoint unless its network has every one of `layers`."""
    missing = [n for n in layers if n not in model.conv_layers + model.fc_layers]
    if missing:
        raise UserError(
            f"{checkpoint_path}: this network has no layer {', '.join(map(str, missing))} "
            f"(it has {', '.join(map(str, model.conv_layers + model.fc_layers))})"
        )


def class_index(name, classes):
    if name not in classes:
        raise UserError(f"unknown class {name!r} (this checkpoint knows {', '.join(classes)})")
    return classes.index(name)


def judged_class(path, classes, requested, probabilities):
    """The class index to judge a photo against: `requested` (a name) when given, else the
    photo's folder when that is named after a class, else the class the network predicts
    from `probabilities`."""
    if requested is not None:
        return class_index(requested, classes)
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if folder in classes:
        return classes.index(folder)
    return int(probabilities.argmax())


def short_names(paths):
    """`{path: file name}` for labels and output files; UserError when two photos share a name."""
    names = {}
    for path in paths:
        name = os.path.basename(path)
        if name in names and names[name] != path:
            raise UserError(f"{names[name]} and {path} have the same file name; rename one or run them separately")
        names[name] = path
    return {path: name for name, path in names.items()}


def layer_features(model, inputs, layers, batch_size, description):
    """`{layer: (N, D)}`: the rectified outputs of `layers` (convolutional layers before
    pooling) for `inputs` (N, 3, H, W), flattened, computed `batch_size` inputs at a time."""
    device = next(model.parameters()).device
    parts = {layer: [] for layer in layers}
    with torch.inference_mode():
        for batch in tqdm(
            inputs.split(batch_size), desc=description, unit="batch", leave=False, disable=len(inputs) <= batch_size
        ):
            for layer, output in model.activations(batch.to(device), layers).items():
                parts[layer].append(output.flatten(1).cpu())
    return {layer: torch.cat(outputs) for layer, outputs in parts.items()}
