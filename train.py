"""Train ZFNet on a folder split into train/ and val/ (python split_data.py makes one).

    python train.py                                  # flower_data/ -> runs/zfnet/
    python train.py --epochs 30 --out runs/long --snapshot-epochs 1,2,5,10,30
    python train.py --out runs/long --epochs 40 --resume    # continue (or extend) a run
    torchrun --nproc_per_node=2 train.py             # DistributedDataParallel, one process per GPU/CPU share

Writes into --out: best.pth (best validation accuracy), last.pth (everything a resume needs),
snapshots/epoch_NNN.pth (weights only, for visualize.py evolution), class_indices.json,
metrics.csv, curves.png and confusion.png. Every file is written atomically.
"""
import argparse
import csv
import io
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from model import ARCHS, WIDTHS, ZFNet
from zfnet.arguments import int_list
from zfnet.checkpoint import model_payload, read_checkpoint, save_checkpoint
from zfnet.data import PhotoCache, scan_split, train_inputs, val_inputs
from zfnet.errors import UserError, run_main
from zfnet.figures import plot_confusion, plot_curves
from zfnet.files import atomic_write_text
from zfnet.runtime import Distributed, derived_seed, generator, native_bfloat16

PREPROCESS = {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
MEMORY_FORMAT = torch.channels_last  # the layout the fastest oneDNN and cuDNN kernels use; never slower here
# Both recipes train with Adam. "seed" is the seed's recipe exactly: a constant 2e-4 and
# RandomResizedCrop(224). "fast" reaches better accuracy in a fraction of the time
# (bench/time_to_accuracy.py): twice the rate, annealed to zero on a cosine over the run,
# label smoothing, and crops of at least half the photo, closer to the whole photos that
# validation and predict.py see.
RECIPES = {
    "seed": {"lr": 2e-4, "label_smoothing": 0.0, "schedule": "constant", "crop_scale": 0.08},
    "fast": {"lr": 4e-4, "label_smoothing": 0.1, "schedule": "cosine", "crop_scale": 0.5},
}
# Flags that change what a run computes: a resumed run must keep them as they were.
RUN_DEFINING = ("data", "batch_size", "recipe", "lr", "label_smoothing", "seed", "width",
                "arch", "conv_channels", "fc_features", "precision")


def get_parser(suppress_defaults=False):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None)

    def add(*names, default=None, **kwargs):
        if not suppress_defaults:
            kwargs["default"] = default
        parser.add_argument(*names, **kwargs)

    add("--data", default="flower_data", help="folder holding train/ and val/ (default: %(default)s)")
    add("--out", default="runs/zfnet", help="folder for checkpoints, metrics and figures (default: %(default)s)")
    add("--epochs", default=10, type=int, help="total epochs to train (default: %(default)s)")
    add("--batch-size", default=32, type=int, help="images per step and process (default: %(default)s)")
    add("--recipe", default="fast", choices=sorted(RECIPES),
        help="fast: Adam at 4e-4 on a cosine schedule, label smoothing 0.1, crops of at least half "
             "the photo; seed: the seed's Adam at a constant 2e-4 and RandomResizedCrop(224) "
             "(default: %(default)s)")
    add("--lr", type=float, help="(peak) learning rate (default: the recipe's)")
    add("--label-smoothing", type=float, help="label smoothing of the loss (default: the recipe's)")
    add("--precision", default="auto", choices=["auto", "fp32", "bf16"],
        help="auto: bfloat16 autocast where the hardware runs it natively (CUDA GPUs, CPUs with "
             "AVX512-BF16 or AMX), else float32 (default: %(default)s)")
    add("--workers", default=min(4, os.cpu_count() or 1), type=int,
        help="processes that decode the photos into the cache, once (default: %(default)s)")
    add("--seed", default=0, type=int, help="seed for initialisation, order, crops and dropout (default: %(default)s)")
    add("--width", default="half", choices=sorted(WIDTHS),
        help="half: the seed's layer widths; full: the paper's (default: %(default)s)")
    add("--arch", default="zfnet", choices=sorted(ARCHS),
        help="zfnet: 7x7 stride-2 first layer; alexnet: 11x11 stride 4 (default: %(default)s)")
    add("--conv-channels", type=int_list, metavar="C1,C2,C3,C4,C5",
        help="override the widths of layers 1-5; 0 removes layers 2-4 (ablations)")
    add("--fc-features", type=int_list, metavar="F6,F7",
        help="override the widths of layers 6 and 7; 0 removes a layer (ablations)")
    add("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    add("--snapshot-epochs", default=[], type=int_list, metavar="E1,E2,...",
        help="also save the weights after these epochs into OUT/snapshots/ (for visualize.py evolution)")
    add("--resume", default=False, action="store_true",
        help="continue the run in --out from its last.pth (starts a new run if there is none)")
    return parser


def parse_args(argv=None):
    config = get_parser().parse_args(argv)
    config.explicit = sorted(vars(get_parser(suppress_defaults=True).parse_args(argv)))
    for key in ("lr", "label_smoothing"):
        if getattr(config, key) is None:
            setattr(config, key, RECIPES[config.recipe][key])
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0 or config.workers < 0:
        raise UserError("--epochs and --batch-size must be at least 1, --lr positive, --workers not negative")
    if not 0 <= config.label_smoothing < 1:
        raise UserError("--label-smoothing must lie in [0, 1)")
    return config


def resume_state(config):
    """The checkpoint to continue from, or None; settles `config` against the saved run."""
    last = os.path.join(config.out, "last.pth")
    if not os.path.exists(last):
        if config.resume:
            print(f"no run to resume in {config.out}; starting a new one")
        return None
    if not config.resume:
        raise UserError(f"{config.out} already holds a run; pass --resume to continue it "
                        f"or --out to start a new one")
    state = read_checkpoint(last)
    saved = state.get("train_config")
    if saved is None:
        raise UserError(f"{last} is a model checkpoint without training state; cannot resume from it")
    # A schedule is laid out over the whole run, so only a constant rate lets a run be extended.
    defining = RUN_DEFINING + (("epochs",) if RECIPES[saved["recipe"]]["schedule"] != "constant" else ())
    for key in defining:
        if key in config.explicit and getattr(config, key) != saved[key]:
            why = (f"its {saved['recipe']} recipe's learning-rate schedule spans the whole run"
                   if key == "epochs" else "the run being resumed used that")
            raise UserError(f"--{key.replace('_', '-')} cannot change from {saved[key]} to "
                            f"{getattr(config, key)}: {why}; start a new run with another --out instead")
        setattr(config, key, saved[key])
    return state


def build_model(config, num_classes):
    try:
        return ZFNet(num_classes=num_classes, width=config.width, arch=config.arch,
                     conv_channels=config.conv_channels, fc_features=config.fc_features,
                     input_size=PREPROCESS["input_size"])
    except ValueError as error:
        raise UserError(str(error)) from None


def build_optimizer(model, config, steps_per_epoch):
    """Adam and the recipe's per-step learning-rate schedule."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    total = config.epochs * steps_per_epoch

    def factor(step):
        if RECIPES[config.recipe]["schedule"] == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * step / total))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def uses_bfloat16(device, precision):
    return precision == "bf16" or (precision == "auto" and native_bfloat16(device))


def train_step(model, optimizer, scheduler, inputs, labels, autocast, label_smoothing):
    """One optimisation step; returns the batch's logits and mean loss (detached)."""
    with autocast:
        logits = model(inputs.contiguous(memory_format=MEMORY_FORMAT))
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return logits.detach(), loss.detach()


def evaluate(model, cache, indices, num_classes, batch_size, runtime, autocast):
    """Summed loss, correct count and confusion matrix over cache rows `indices` (this
    process's share), summed over all processes."""
    loss_sum = torch.zeros((), device=runtime.device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=runtime.device)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            rows = indices[start:start + batch_size]
            inputs = val_inputs(cache, rows, PREPROCESS).to(runtime.device, non_blocking=True)
            labels = cache.labels[rows.to(cache.labels.device)].to(runtime.device)
            with autocast:
                logits = model(inputs.contiguous(memory_format=MEMORY_FORMAT))
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            confusion.view(-1).index_add_(0, labels * num_classes + logits.argmax(1), torch.ones_like(labels))
    confusion = runtime.sum(confusion)
    return runtime.sum(loss_sum).item(), confusion.diagonal().sum().item(), confusion.cpu().tolist()


def class_indices(classes):
    """The index -> class name mapping, as the seed's class_indices.json holds it."""
    return {str(index): name for index, name in enumerate(classes)}


def write_reports(out, history, classes, best_confusion):
    """metrics.csv, curves.png and confusion.png from the whole history (so a resumed run's
    files cover every epoch)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(os.path.join(out, "metrics.csv"), text.getvalue())
    plot_curves(history, os.path.join(out, "curves.png"))
    plot_confusion(best_confusion, classes, os.path.join(out, "confusion.png"),
                   title="validation confusion matrix of best.pth")


def open_caches(config, samples, runtime):
    """The decoded train and val photos, on the training device. Rank 0 decodes them once;
    the other processes then open its cache files."""
    cache_dir = os.path.join(config.data, ".cache")
    caches = {}
    for turn in ("build", "open"):
        if (turn == "build") == runtime.is_main:
            for side in ("train", "val"):
                caches[side] = PhotoCache.load_or_build(samples[side], side, PREPROCESS["input_size"],
                                                        cache_dir, config.workers, quiet=not runtime.is_main)
        runtime.barrier()
    return caches["train"].to(runtime.device), caches["val"].to(runtime.device)


def train(config):
    """Train as `config` (parse_args' namespace) says; returns a summary dict with the
    history, the best validation accuracy, the output folder and the classes."""
    runtime = Distributed(config.device)
    try:
        return _train(config, runtime)
    except KeyboardInterrupt:
        if runtime.is_main and os.path.exists(os.path.join(config.out, "last.pth")):
            print(f"\nstopped; the last finished epoch is saved: continue with "
                  f"`python train.py --out {config.out} --resume`", file=sys.stderr)
        raise
    finally:
        runtime.close()


def _train(config, runtime):
    device = runtime.device
    state = resume_state(config)
    classes, samples = scan_split(config.data)
    if state is not None and state["classes"] != classes:
        raise UserError(f"the classes in {config.data} differ from those of the run being resumed")
    if not all(1 <= epoch <= config.epochs for epoch in config.snapshot_epochs):
        raise UserError(f"--snapshot-epochs must lie between 1 and --epochs ({config.epochs})")
    log = print if runtime.is_main else (lambda *args, **kwargs: None)
    train_cache, val_cache = open_caches(config, samples, runtime)

    # bfloat16 has float32's range, so autocast needs no loss scaling; weights stay float32.
    bfloat16 = uses_bfloat16(device, config.precision)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(derived_seed(config.seed, "init"))
    model = build_model(config, len(classes)).to(device, memory_format=MEMORY_FORMAT)
    sampler = DistributedSampler(range(len(train_cache)), num_replicas=runtime.world_size, rank=runtime.rank,
                                 shuffle=True, seed=derived_seed(config.seed, "order") % 2**31)
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    optimizer, scheduler = build_optimizer(model, config, steps_per_epoch)
    history, best_accuracy, best_confusion, start_epoch = [], -1.0, None, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_accuracy = state["history"], state["best_accuracy"]
        best_confusion, start_epoch = state["best_confusion"], state["epoch"]
        log(f"resuming {config.out} after epoch {start_epoch} of {config.epochs}")
    trained = DistributedDataParallel(model) if runtime.enabled else model
    crop_scale = (RECIPES[config.recipe]["crop_scale"], 1.0)
    val_rows = torch.arange(runtime.rank, len(val_cache), runtime.world_size)
    train_config = {key: getattr(config, key) for key in RUN_DEFINING + ("epochs",)}
    if runtime.is_main:
        os.makedirs(config.out, exist_ok=True)
        atomic_write_text(os.path.join(config.out, "class_indices.json"),
                          json.dumps(class_indices(classes), indent=4) + "\n")
        log(f"training on {device} ({runtime.world_size} process{'es' if runtime.enabled else ''}, "
            f"{'bfloat16' if bfloat16 else 'float32'}): {len(train_cache)} train / {len(val_cache)} val "
            f"photos, {len(classes)} classes, {config.arch} {config.width} width, {config.recipe} recipe")

    for epoch in range(start_epoch + 1, config.epochs + 1):
        trained.train()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        crops = generator(config.seed, "crops", epoch, runtime.rank)
        torch.manual_seed(derived_seed(config.seed, "dropout", epoch, runtime.rank))
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        started = time.perf_counter()
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch}/{config.epochs}",
                   unit="batch", leave=False, disable=not runtime.is_main)
        for step, start in enumerate(bar):
            rows = order[start:start + config.batch_size]
            inputs = train_inputs(train_cache, rows, crops, PREPROCESS, crop_scale).to(device, non_blocking=True)
            labels = train_cache.labels[rows.to(train_cache.labels.device)].to(device)
            logits, loss = train_step(trained, optimizer, scheduler, inputs, labels, autocast,
                                      config.label_smoothing)
            loss_sum += loss * len(rows)
            correct += (logits.argmax(1) == labels).sum()
            if device.type == "cpu" or step % 20 == 0:  # reading the loss waits for the GPU
                bar.set_postfix(loss=f"{loss.item():.3f}")
        train_seconds = time.perf_counter() - started
        seen = runtime.sum(torch.tensor(float(len(order)), device=device)).item()
        train_loss = runtime.sum(loss_sum).item() / seen
        train_accuracy = runtime.sum(correct).item() / seen

        val_loss_sum, val_correct, confusion = evaluate(model, val_cache, val_rows, len(classes),
                                                        2 * config.batch_size, runtime, autocast)
        val_loss, val_accuracy = val_loss_sum / len(val_cache), val_correct / len(val_cache)
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "train_loss": round(train_loss, 6), "train_acc": round(train_accuracy, 6),
                        "val_loss": round(val_loss, 6), "val_acc": round(val_accuracy, 6),
                        "seconds": round(seconds, 2), "images_per_second": round(seen / train_seconds, 1)})
        log(f"epoch {epoch:3d}/{config.epochs}  train loss {train_loss:.4f} acc {train_accuracy:.4f}  "
            f"val loss {val_loss:.4f} acc {val_accuracy:.4f}  {seconds:6.1f} s  {seen / train_seconds:6.1f} img/s")

        if not runtime.is_main:
            continue
        payload = model_payload(model, classes, PREPROCESS, epoch)
        if val_accuracy > best_accuracy:
            best_accuracy, best_confusion = val_accuracy, confusion
            save_checkpoint({**payload, "val_accuracy": val_accuracy}, os.path.join(config.out, "best.pth"))
        if epoch in config.snapshot_epochs:
            save_checkpoint(payload, os.path.join(config.out, "snapshots", f"epoch_{epoch:03d}.pth"))
        save_checkpoint({**payload, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "history": history, "best_accuracy": best_accuracy, "best_confusion": best_confusion,
                         "train_config": train_config}, os.path.join(config.out, "last.pth"))
        write_reports(config.out, history, classes, best_confusion)

    if start_epoch >= config.epochs:
        log(f"{config.out} has already trained {start_epoch} epochs; pass a larger --epochs to continue")
    elif history:
        best = max(history, key=lambda row: row["val_acc"])
        log(f"best val accuracy {best['val_acc']:.4f} at epoch {best['epoch']}; "
            f"checkpoints, metrics and figures in {config.out}/")
    return {"history": history, "best_accuracy": best_accuracy, "out": config.out, "classes": classes}


def main(argv=None):
    train(parse_args(argv))


if __name__ == "__main__":
    run_main(main)
