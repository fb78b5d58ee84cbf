"""What the tests of occlusion.py, invariance.py and correspondence.py share: a tiny
randomly initialised network saved as a real checkpoint, photos, and running a script."""
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from model import ZFNet
from tests.conftest import ROOT
from zfnet.checkpoint import model_payload, save_checkpoint

CLASSES = ["daisy", "roses", "sunflowers"]
TINY = {"conv_channels": (8, 16, 16, 16, 16), "fc_features": (32, 32)}


def tiny_network(input_size=224, seed=0, **widths):
    """A narrow ZFNet with random weights, in eval mode: fast, and every layer is there."""
    torch.manual_seed(seed)
    model = ZFNet(num_classes=len(CLASSES), input_size=input_size, **{**TINY, **widths}).eval()
    # ZFNet's own initialisation makes every class about equally probable; PyTorch's default
    # for linear layers gives logits of order 1, so that occluding or moving things changes
    # which class wins.
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    return model


def write_checkpoint(path, input_size=64, **widths):
    preprocess = {"input_size": input_size, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    save_checkpoint(model_payload(tiny_network(input_size, **widths), CLASSES, preprocess, epoch=0), str(path))
    return str(path)


def write_photo(path, seed, size=(90, 70)):
    """A photo of smooth random blobs (so that moving or masking parts of it matters)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[1] // 10 + 1, size[0] // 10 + 1, 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(coarse).resize(size, Image.BILINEAR).save(path, quality=95)
    return str(path)


def run_script(script, *arguments):
    """Run a script as a user would; returns the finished process (text stdout and stderr)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, arguments)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def assert_one_line_error(process, fragment):
    """Exit status 2 and one `prog: error: ...` line naming the problem, no traceback. Only a
    bad flag value may add argparse's usage lines before it."""
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    lines = process.stderr.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and fragment in errors[0] and lines[-1] == errors[0], process.stderr
    assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), process.stderr
