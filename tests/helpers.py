"""What the test files share: the project root, the preprocessing of the tests' checkpoints,
tiny networks saved as real checkpoints, photos made on the fly, and running a script the
way a user does (a real process) or in this process (fast, and patchable)."""

import contextlib
import errno
import io
import os
import re
import runpy
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from model import ZFNet
from zfnet.checkpoint import model_payload, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Flags of a quick training run here: decoded in this process, on the CPU.
ON_CPU = ("--workers", "0", "--device", "cpu")
PREPROCESS = {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
CLASSES = ["daisy", "roses", "sunflowers"]
TINY = {"conv_channels": (8, 16, 16, 16, 16), "fc_features": (32, 32)}
# Clearly different classes: a network that learns anything separates them in a few epochs.
COLOURS = {"blue": (30, 60, 200), "green": (40, 170, 60), "red": (200, 40, 40)}


def tiny_network(input_size=224, seed=0, classes=CLASSES, **widths):
    """A narrow ZFNet with random weights, in eval mode: fast, and every layer is there."""
    torch.manual_seed(seed)
    model = ZFNet(num_classes=len(classes), input_size=input_size, **{**TINY, **widths}).eval()
    # ZFNet's own initialisation makes every class about equally probable; PyTorch's default
    # for linear layers gives logits of order 1, so that occluding or moving things changes
    # which class wins.
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    return model


def save_network(path, model, classes=CLASSES, input_size=None, epoch=1):
    """Save `model` as train.py saves a checkpoint; returns the path as a string."""
    preprocess = {**PREPROCESS, "input_size": input_size or model.config["input_size"]}
    save_checkpoint(model_payload(model, list(classes), preprocess, epoch), str(path))
    return str(path)


def write_checkpoint(path, input_size=64, classes=CLASSES, **widths):
    """A tiny random network saved as a checkpoint; returns the path as a string."""
    return save_network(path, tiny_network(input_size, classes=classes, **widths), classes, epoch=0)


def write_photo(path, seed, size=(90, 70)):
    """A photo of smooth random blobs (so that moving or masking parts of it matters)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[1] // 10 + 1, size[0] // 10 + 1, 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(coarse).resize(size, Image.BILINEAR).save(path, quality=95)
    return str(path)


def write_photos(folder, colour, count, seed, size=(48, 40)):
    """`count` noisy photos of one dominant colour, with random sizes around `size`."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        width, height = size[0] + int(rng.integers(0, 16)), size[1] + int(rng.integers(0, 16))
        noise = rng.normal(0, 25, (height, width, 3))
        pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{index:03d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def run_script(script, *arguments, cwd=ROOT, timeout=300):
    """Run a script in a new process as a user would; returns the finished process (text
    stdout and stderr)."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *map(str, arguments)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def call_script(script, *arguments):
    """Run a script as `__main__` in this process (as `python script ...` would, without the
    start-up cost of a new interpreter); returns an object with the returncode, stdout and
    stderr that run_script's process would have. Exceptions other than a clean exit propagate."""
    argv, sys.argv = sys.argv, [script, *map(str, arguments)]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        sys.argv = argv
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line_error(process, fragment):
    """Exit status 2 and one `prog: error: ...` line naming the problem, no traceback. Only a
    bad flag value may add argparse's usage lines before it, and the run's notes (`note: ...`,
    said before it failed) may come before it."""
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    lines = process.stderr.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and fragment in errors[0] and lines[-1] == errors[0], process.stderr
    assert all(line.startswith(("usage:", " ", "note: ")) for line in lines[:-1]), process.stderr


def flags_without_defaults(help_text):
    """The flags in a --help text (other than -h) whose help does not state their default."""
    options = help_text.split("options:", 1)[1]
    blocks = [" ".join(block.split()) for block in re.split(r"\n(?=  -)", options)]
    return [
        block.split()[0]
        for block in blocks
        if block.startswith("-") and not block.startswith("-h") and "(default:" not in block
    ]


def record_figure_texts(monkeypatch):
    """A list that collects every text of each figure saved from now on (titles, labels,
    legends), whichever module saves it, for tests run through call_script."""
    import matplotlib.figure
    import matplotlib.text

    texts, savefig = [], matplotlib.figure.Figure.savefig

    # Every module saves through Figure.savefig, however it imported the function that calls it.
    def recording(figure, *args, **kwargs):
        texts.extend(text.get_text() for text in figure.findobj(matplotlib.text.Text) if text.get_text())
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    return texts


def write_tied_photos(folder):
    """Seven photos of different sizes in two class folders; the last is a copy of the first,
    so that searches meet equal values. Returns the folder as a string."""
    for i in range(6):
        write_photo(os.path.join(folder, f"class{i % 2}", f"photo{i}.jpg"), seed=i, size=(80, 60 + 10 * i))
    shutil.copy(os.path.join(folder, "class0", "photo0.jpg"), os.path.join(folder, "class1", "photo9.jpg"))
    return str(folder)


def write_bomb(path, side=30000):
    """A valid PNG header for a side x side greyscale image with almost no data: PIL refuses it
    on opening (a decompression bomb) before reading any pixels, so it costs nothing to make."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    with open(path, "wb") as file:
        file.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * (side + 1)))
            + chunk(b"IEND", b"")
        )
    return str(path)


def hide_progress_bars(monkeypatch):
    """Turn tqdm's bars off in the zfnet modules and in the scripts run from now on. On a
    terminal a bar clears itself before an error, but captured stderr keeps its text, which
    would stand beside the one error line that assert_one_line_error checks."""
    import tqdm

    shown = tqdm.tqdm

    def hidden(*args, **kwargs):
        return shown(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(tqdm, "tqdm", hidden)
    for name, module in list(sys.modules.items()):
        if name.startswith("zfnet.") and getattr(module, "tqdm", None) is shown:
            monkeypatch.setattr(module, "tqdm", hidden)


def disk_full(*args, **kwargs):
    """A stand-in for a writer (monkeypatched in) when the disk is full."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def write_truncated_photo(path, seed=0):
    """A JPEG cut off halfway, as an interrupted copy leaves one; returns the path as a string."""
    write_photo(path, seed)
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)
    return str(path)


def folder_contents(folder):
    """Every file under `folder` with its bytes, to show that a refused run left it as it was."""
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def assert_a_full_disk_keeps_the_outputs(monkeypatch, writer, script, arguments, out):
    """Run `script` once, then again with `writer` (a dotted name) failing as on a full disk:
    the second run ends with one line and leaves `out` exactly as the first wrote it."""
    assert call_script(script, *arguments).returncode == 0
    before = folder_contents(out)
    monkeypatch.setattr(writer, disk_full)
    hide_progress_bars(monkeypatch)
    assert_one_line_error(
        call_script(script, *arguments), "No space left on device; what was there before is unchanged"
    )
    assert folder_contents(out) == before
    return before


def variant_parameters(name, num_classes=5):
    """The parameters of an ablation variant at the half width, as the study counts them."""
    from zfnet import recipes
    from zfnet.studies import ablation

    conv_channels, fc_features = ablation.variant_widths(name, "half")
    config = recipes.parse_args(
        ["--conv-channels", ",".join(map(str, conv_channels)), "--fc-features", ",".join(map(str, fc_features))]
    )
    return ablation.parameter_count(config, num_classes)


def assert_close(ours, reference, what="", tolerance=1e-5):
    """`ours` equals `reference` within `tolerance` of the reference's largest magnitude, which
    must not be zero (a test against a zero reference would prove nothing)."""
    scale = reference.abs().max()
    assert scale > 0, f"{what}: the reference is zero, so the test would prove nothing"
    error = (ours - reference).abs().max() / scale
    assert error <= tolerance, f"{what}: relative difference {error:.2e}"


def assert_picture(path, min_size=(300, 200)):
    """`path` is a PNG of at least `min_size` (width, height) pixels that shows something: not
    one flat colour, and a fair share of it not the white background."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", path
        assert image.width >= min_size[0] and image.height >= min_size[1], (path, image.size)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10, f"{path}: nearly one flat colour"
    assert (pixels < 250).any(axis=2).mean() > 0.02, f"{path}: nearly blank"


def record_figure_panels(monkeypatch):
    """A list that collects, for each figure saved from now on, how many panels (axes that
    draw something: an image, lines or patches) it has."""
    import matplotlib.figure

    panels, savefig = [], matplotlib.figure.Figure.savefig

    def recording(figure, *args, **kwargs):
        panels.append(sum(1 for axis in figure.axes if axis.images or axis.lines or axis.patches or axis.collections))
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    return panels
