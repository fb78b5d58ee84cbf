"""Resuming: what a run's last.pth holds beyond its weights, and how a resumed run settles its
settings against the saved ones. A resumed run continues bit for bit: the optimiser, the
schedule, the history, the best so far and, with a moving average, the weights that train.
"""

import hashlib
import os

from zfnet.checkpoint import model_payload, read_checkpoint
from zfnet.errors import UserError
from zfnet.recipes import PREPROCESS, RUN_DEFINING, extendable, recorded_settings, saved_settings


def resume_state(config):
    """The checkpoint to continue from, or None; settles `config` against the saved run."""
    last = os.path.join(config.out, "last.pth")
    if not os.path.exists(last):
        if config.resume:
            print(f"no run to resume in {config.out}; starting a new one")
        return None
    # torchrun counts the times it started the workers again (--max-restarts) after one failed:
    # the run they were in is to be continued, not refused.
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if not (config.resume or restarted):
        raise UserError(f"{config.out} already holds a run; pass --resume to continue it or --out to start a new one")
    state = read_checkpoint(last)
    if state.get("train_config") is None:
        raise UserError(f"{last} is a model checkpoint without training state; cannot resume from it")
    saved = saved_settings(state)
    config.recipe_settings = recorded_settings(state)
    for name, value in config.set:
        if config.recipe_settings[name] != value:
            raise UserError(
                f"--set {name} cannot change from {config.recipe_settings[name]} to {value}: the run being resumed "
                "used that; start a new run with another --out instead"
            )
    if config.recipe_settings["ema"] and not (
        isinstance(state.get("training_weights"), dict) and isinstance(state.get("average_updates"), int)
    ):
        raise UserError(
            f"{last}: damaged checkpoint: its run keeps a moving average but the training weights are missing"
        )
    defining = RUN_DEFINING + (() if extendable(config.recipe_settings) else ("epochs",))
    for key in defining:
        if key in config.explicit and getattr(config, key) != saved[key]:
            why = "the run being resumed used that"
            if key == "epochs":
                why = (
                    f"its {saved['recipe']} recipe's learning-rate schedule spans the whole run, "
                    f"so it cannot be extended"
                )
            raise UserError(
                f"--{key.replace('_', '-')} cannot change from {saved[key]} to "
                f"{getattr(config, key)}: {why}; start a new run with another --out instead"
            )
        setattr(config, key, saved[key])
    return state


def data_description(data, samples):
    """What a run trains on, to tell a changed split: the photos of each side, and a digest
    of their paths inside the split and their sizes."""
    digest = hashlib.sha256()
    for side in ("train", "val"):
        for path, label in samples[side]:
            digest.update(f"{side}/{os.path.relpath(path, data)}:{os.path.getsize(path)}:{label}\n".encode())
    return {"train": len(samples["train"]), "val": len(samples["val"]), "digest": digest.hexdigest()}


def require_same_data(state, description, data, out):
    """UserError when the run being resumed was trained on other photos than `data` holds now
    (a split redone or changed since); runs saved before runs recorded their data pass."""
    saved = state.get("data_description")
    if saved is None or saved["digest"] == description["digest"]:
        return
    now, then = (f"{d['train']} train / {d['val']} val photos" for d in (description, saved))
    change = "other photos in the same numbers" if now == then else f"{now}, the run started on {then}"
    raise UserError(
        f"{data} is not the split {out} was trained on ({change}); resume it on the split it "
        f"started on, or start a new run with another --out"
    )


def run_state(config, model_without_ddp, model_ema, optimizer, scheduler, progress, classes, data):
    """What last.pth holds beyond the kept weights: everything `resume_state` and `restore`
    need. `progress` is the run's history, best accuracy and best confusion matrix."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        **progress,
        "train_config": {key: getattr(config, key) for key in RUN_DEFINING + ("epochs", "recipe_settings")},
        "data_description": data,
        "photo_cache": config.cache_used,
    }
    if model_ema is not None:
        state["training_weights"] = model_payload(model_without_ddp, classes, PREPROCESS, 0)["model"]
        state["average_updates"] = int(model_ema.n_averaged.item())
    return state


def restore(state, model_without_ddp, model_ema, optimizer, scheduler):
    """Load a last.pth's `state` into a freshly built run; returns its history, best accuracy,
    best confusion matrix and the epoch it ended."""
    model_without_ddp.load_state_dict(state.get("training_weights", state["model"]))
    if model_ema is not None:
        model_ema.module.load_state_dict(state["model"])
        model_ema.n_averaged.fill_(state["average_updates"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["history"], state["best_accuracy"], state["best_confusion"], state["epoch"]
