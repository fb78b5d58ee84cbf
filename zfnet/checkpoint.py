"""The one way checkpoints are written and read.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with `torch.load(..., weights_only=True)`: opening a checkpoint never runs code from it.
Every checkpoint carries what is needed to rebuild and use its network with nothing else:

    model         the state_dict
    model_config  ZFNet's constructor arguments (arch, width, layer widths, classes, input size)
    classes       class names in index order
    preprocess    {"input_size", "mean", "std"} for zfnet.images.load_input
    epoch         epochs of training behind these weights

train.py adds what resuming needs (optimizer, scheduler, best accuracy, arguments) to last.pth.
"""

import contextlib
import math
import os
import tempfile

import torch

from model import ZFNet
from zfnet.data import scan_classes
from zfnet.errors import UserError
from zfnet.files import atomic_write

FORMAT = "zfnet-checkpoint-1"
REQUIRED = ("model", "model_config", "classes", "preprocess")


def save_checkpoint(payload, path):
    """Write atomically: killing the process at any moment leaves the old file or the new one."""
    atomic_write(path, lambda file: torch.save({"format": FORMAT, **payload}, file))


def model_payload(model, classes, preprocess, epoch, class_names=None):
    """The part of a checkpoint every reader needs, from a (possibly wrapped) model;
    `class_names`, human-readable names beside the class folders, when a run has them."""
    model = getattr(model, "module", model)  # DistributedDataParallel or torch.compile wrappers
    model = getattr(model, "_orig_mod", model)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    return {
        "model": state,
        "model_config": dict(model.config),
        "classes": list(classes),
        "preprocess": dict(preprocess),
        "epoch": epoch,
        **({"class_names": list(class_names)} if class_names else {}),
    }


def read_checkpoint(path):
    """The checkpoint dict at `path`, validated; UserError naming the problem otherwise."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path} (train one with `python train.py`)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged bytes make the unpickler fail in arbitrary ways
        raise UserError(f"{path}: corrupt or not a checkpoint ({type(error).__name__})") from None
    if (
        not isinstance(checkpoint, dict)
        or checkpoint.get("format") != FORMAT
        or any(key not in checkpoint for key in REQUIRED)
    ):
        raise UserError(f"{path}: not a zfnet checkpoint (written by another program or version)")
    problem = contents_problem(checkpoint)
    if problem:
        raise UserError(f"{path}: damaged checkpoint: {problem}")
    return checkpoint


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def contents_problem(checkpoint):
    """What makes a checkpoint's contents unusable, in a few words, or None. Checked before
    anything is built from it: nonsense must not reach the network or the preprocessing."""
    weights, config, classes, preprocess = (checkpoint[key] for key in REQUIRED)
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        return "its weights are not a dict of named tensors"
    if not all(tensor.is_floating_point() for tensor in weights.values()):
        return "its weights are not floating-point tensors"
    if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
        return "its model configuration is not a dict"
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        return "its class names are not a list of names"
    if len(set(classes)) != len(classes):
        return "its class names repeat"
    names = checkpoint.get("class_names", classes)
    if not isinstance(names, list) or len(names) != len(classes) or not all(isinstance(n, str) and n for n in names):
        return "its human-readable class names are not one name per class"
    if not isinstance(preprocess, dict) or set(preprocess) != {"input_size", "mean", "std"}:
        return "its preprocessing is not {input_size, mean, std}"
    size, mean, std = preprocess["input_size"], preprocess["mean"], preprocess["std"]
    if not isinstance(size, int) or isinstance(size, bool) or size != config.get("input_size"):
        return f"its input size {size!r} is not the whole number its network was built for"
    for name, values in (("mean", mean), ("std", std)):
        if not isinstance(values, list) or len(values) != 3 or not all(_is_number(v) for v in values):
            return f"its preprocessing {name} {values!r} is not three finite numbers"
    if not all(v > 0 for v in std):
        return f"its preprocessing std {std!r} must be positive"
    epoch = checkpoint.get("epoch", 0)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return f"its epoch {epoch!r} is not a count"
    return None


def build_model(checkpoint, path="checkpoint"):
    """Rebuild the exact network a checkpoint describes and load its weights (eval mode)."""
    try:
        model = ZFNet(**checkpoint["model_config"], init_weights=False)
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(f"{path}: unusable model configuration ({error})") from None
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise UserError(f"{path}: weights do not fit the network it describes ({first})") from None
    if len(checkpoint["classes"]) != model.config["num_classes"]:
        raise UserError(f"{path}: {len(checkpoint['classes'])} class names for {model.config['num_classes']} outputs")
    return model.eval()


def load_checkpoint(path, device="cpu"):
    """`(model, checkpoint)`: the network on `device` in eval mode, and the checkpoint dict."""
    checkpoint = read_checkpoint(path)
    return build_model(checkpoint, path).to(device), checkpoint


def save_random_network(path, classes, preprocess, seed=0, **widths):
    """A ZFNet with random weights for `classes` (ZFNet's `widths` overridden as given),
    saved as train.py saves a checkpoint, for the benchmarks' quick runs; returns `path`."""
    torch.manual_seed(seed)
    model = ZFNet(num_classes=len(classes), input_size=preprocess["input_size"], **widths).eval()
    save_checkpoint(model_payload(model, classes, preprocess, 0), path)
    return path


QUICK_WIDTHS = {"conv_channels": (8, 16, 16, 16, 16), "fc_features": (32, 32)}  # seconds, not minutes


@contextlib.contextmanager
def quick_network(args, preprocess):
    """A benchmark's --quick: `args.checkpoint` becomes a narrow random network (QUICK_WIDTHS)
    for the classes of `args.images`, in a folder deleted on leaving; without --quick nothing
    changes."""
    with tempfile.TemporaryDirectory() as folder:
        if args.quick:
            classes = list(scan_classes(args.images))
            path = os.path.join(folder, "random.pth")
            args.checkpoint = save_random_network(path, classes, preprocess, **QUICK_WIDTHS)
        yield
