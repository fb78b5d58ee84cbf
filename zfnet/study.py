"""What the studies (ablation.py, transfer.py) share: runs of train.py's training function that
a rerun skips when finished and continues when interrupted, and split folders made of links."""
import os

from train import RUN_DEFINING, parse_args, train
from zfnet.checkpoint import read_checkpoint
from zfnet.errors import UserError


def train_run(train_argv, out, epochs):
    """Train one run of a study into `out` for `epochs` epochs and return its history.

    A run that already holds `epochs` epochs is read back, not trained again; an interrupted
    one continues from its last.pth. Either must have been trained with the same settings."""
    config = parse_args([*train_argv, "--out", out, "--epochs", str(epochs), "--resume"])
    last = os.path.join(out, "last.pth")
    if os.path.exists(last):
        state = read_checkpoint(last)
        saved = state.get("train_config") or {}
        for key in RUN_DEFINING:
            if saved.get(key) != getattr(config, key):
                raise UserError(f"{out} was trained with {key} {saved.get(key)!r}, this study asks for "
                                f"{getattr(config, key)!r}; give the study another --out")
        if len(state["history"]) >= epochs:
            print(f"{out}: finished earlier ({len(state['history'])} epochs), skipped")
            return state["history"][:epochs]
    return train(config)["history"]


def link_split(root, photos):
    """Make ROOT/train/<class>/ and ROOT/val/<class>/ of symbolic links to the photos in
    `photos` ({"train": {class: [paths]}, "val": {...}}), replacing what was there, so that
    train.py trains on a chosen subset without copying it. ROOT/.cache is kept: the same
    photos linked again open train.py's decoded cache instead of decoding them again."""
    for side, classes in photos.items():
        for name, paths in classes.items():
            folder = os.path.join(root, side, name)
            os.makedirs(folder, exist_ok=True)
            for entry in os.scandir(folder):
                os.unlink(entry.path)
            for path in paths:
                os.symlink(os.path.abspath(path), os.path.join(folder, os.path.basename(path)))
