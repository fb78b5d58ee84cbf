"""The training run, top to bottom: `train(config)` sets a run up (from scratch or resumed),
then each epoch trains, validates and saves its checkpoints and reports.

The settings and what they build live in zfnet.recipes, resuming in zfnet.resume. train.py
is a thin command line over `parse_args` and `train`; the studies (ablation.py, transfer.py)
and the benchmarks call the same functions.

The model handles, as torchvision's reference scripts name them: `model` is what trains
(wrapped in DistributedDataParallel when several processes train), `model_without_ddp` the
same weights unwrapped, `model_ema` their moving average when the recipe keeps one, and
`kept_model` the one the run validates and saves (the average when there is one).
"""

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

from zfnet.checkpoint import model_payload, save_checkpoint
from zfnet.data import (
    cache_folder,
    choose_cache,
    open_cache,
    read_class_names,
    scan_split,
    train_inputs,
    val_inputs,
)
from zfnet.errors import UserError
from zfnet.figures import plot_confusion, plot_curves
from zfnet.files import atomic_write_text
from zfnet.outputs import OutputFolder, release
from zfnet.recipes import (
    PLATEAU_PATIENCE,
    PREPROCESS,
    build_model,
    build_optimizer,
    check_settings,
    extendable,
    moving_average,
    recipe_label,
    renormalize,
)
from zfnet.resume import data_description, require_same_data, restore, resume_state, run_state
from zfnet.runtime import Distributed, derived_seed, generator, native_bfloat16
from zfnet.tables import csv_text

MEMORY_FORMAT = torch.channels_last  # the layout the fastest oneDNN and cuDNN kernels use; never slower here
REPORTS = ("metrics.csv", "curves.png", "confusion.png")
OUTPUTS = ("best.pth", "last.pth", "snapshots", "class_indices.json", *REPORTS)


def train(config):
    """Train as `config` (zfnet.recipes.parse_args' namespace) says; returns a summary dict
    with the history, the best validation accuracy, the output folder and the classes."""
    runtime = Distributed(config.device)
    try:
        return _train(config, runtime)
    except KeyboardInterrupt:
        if runtime.is_main and os.path.exists(os.path.join(config.out, "last.pth")):
            print(
                f"\nstopped; the last finished epoch is saved: continue with "
                f"`python train.py --out {config.out} --resume`",
                file=sys.stderr,
            )
        raise
    finally:
        if runtime.is_main:
            release(config.out)
        runtime.close()


def _train(config, runtime):
    device, log = runtime.device, print if runtime.is_main else (lambda *args, **kwargs: None)

    # The run: resumed or new, its data, its output folder.
    state = resume_state(config)
    classes, samples = scan_split(config.data)
    data = data_description(config.data, samples)
    if state is not None and state["classes"] != classes:
        raise UserError(f"the classes in {config.data} differ from those of the run being resumed")
    if state is not None:
        require_same_data(state, data, config.data, config.out)
    names = read_class_names(config.class_names, classes) if config.class_names else (state or {}).get("class_names")
    check_settings(config)  # again: a resumed run's saved settings now stand in config
    if runtime.is_main:
        OutputFolder.claim(config.out, outputs=OUTPUTS)
    train_cache, val_cache = open_caches(config, samples, runtime, log)
    settings = config.recipe_settings

    # The network, its optimiser and its moving average, restored when resuming.
    # bfloat16 has float32's range, so autocast needs no loss scaling; weights stay float32.
    bfloat16 = uses_bfloat16(device, config.precision)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(derived_seed(config.seed, "init"))
    model_without_ddp = build_model(config, len(classes)).to(device, memory_format=MEMORY_FORMAT)
    sampler = DistributedSampler(
        range(len(train_cache)),
        num_replicas=runtime.world_size,
        rank=runtime.rank,
        shuffle=True,
        seed=derived_seed(config.seed, "order") % 2**31,
    )
    optimizer, scheduler = build_optimizer(model_without_ddp, config, math.ceil(len(sampler) / config.batch_size))
    model_ema = moving_average(model_without_ddp, settings["ema"]) if settings["ema"] else None
    kept_model = model_ema.module if model_ema is not None else model_without_ddp
    history, best_accuracy, best_confusion, start_epoch = [], -1.0, None, 0
    if state is not None:
        history, best_accuracy, best_confusion, start_epoch = restore(
            state, model_without_ddp, model_ema, optimizer, scheduler
        )
    model = DistributedDataParallel(model_without_ddp) if runtime.enabled else model_without_ddp
    # Draws from torch's global generator, which each epoch seeds, so runs still repeat.
    cutmix = None
    if settings["cutmix"]:
        from torchvision.transforms.v2 import CutMix  # imported only when used: torchvision takes ~2 s to import

        cutmix = CutMix(alpha=settings["cutmix"], num_classes=len(classes))
    val_rows = torch.arange(runtime.rank, len(val_cache), runtime.world_size)

    def validate(network):
        loss_sum, right, top5, confusion = evaluate(
            network, val_cache, val_rows, len(classes), 2 * config.batch_size, runtime, autocast
        )
        top5_accuracy = {} if top5 is None else {"val_top5": round(top5 / len(val_cache), 6)}
        return loss_sum / len(val_cache), right / len(val_cache), top5_accuracy, confusion

    if runtime.is_main:
        atomic_write_text(
            os.path.join(config.out, "class_indices.json"), json.dumps(class_indices(names or classes), indent=4) + "\n"
        )
        if start_epoch:
            log(f"resuming {config.out} after epoch {start_epoch} of {config.epochs}")
        log(
            f"training on {device} ({runtime.world_size} process{'es' if runtime.enabled else ''}, "
            f"{'bfloat16' if bfloat16 else 'float32'}): {len(train_cache)} train / {len(val_cache)} val photos, "
            f"{len(classes)} classes, {config.arch} {config.width} width, "
            f"recipe {recipe_label(config.recipe, config.recipe_settings)}"
        )
        if start_epoch == 0 and 0 in config.snapshot_epochs:
            save_checkpoint(
                model_payload(kept_model, classes, PREPROCESS, 0, names),
                os.path.join(config.out, "snapshots", "epoch_000.pth"),
            )

    for epoch in range(start_epoch + 1, config.epochs + 1):
        # Train one epoch: this epoch's order, crops and dropout follow from the seed alone.
        model.train()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        crops = generator(config.seed, "crops", epoch, runtime.rank)
        torch.manual_seed(derived_seed(config.seed, "dropout", epoch, runtime.rank))
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        started = time.perf_counter()
        bar = tqdm(
            range(0, len(order), config.batch_size),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            leave=False,
            disable=not runtime.is_main,
        )
        for step, start in enumerate(bar):
            rows = order[start : start + config.batch_size]
            inputs = train_inputs(
                train_cache, rows, crops, PREPROCESS, (settings["crop_scale"], 1.0), settings["jitter"]
            )
            inputs = inputs.to(device, non_blocking=True)
            labels = train_cache.labels[rows.to(train_cache.labels.device)].to(device)
            targets = labels
            if cutmix is not None:
                inputs, targets = cutmix(inputs, labels)
                labels = targets.argmax(1)  # the class that covers most of each mixed photo
            logits, loss = train_step(
                model,
                optimizer,
                scheduler,
                inputs,
                targets,
                autocast,
                config.label_smoothing,
                settings["renorm_radius"],
            )
            if model_ema is not None:
                model_ema.update_parameters(model_without_ddp)
            loss_sum += loss * len(rows)
            correct += (logits.argmax(1) == labels).sum()
            if device.type == "cpu" or step % 20 == 0:  # reading the loss waits for the GPU
                bar.set_postfix(loss=f"{loss.item():.3f}")
        train_seconds = time.perf_counter() - started
        seen = runtime.sum(torch.tensor(float(len(order)), device=device)).item()
        train_loss = runtime.sum(loss_sum).item() / seen
        train_accuracy = runtime.sum(correct).item() / seen

        # Validate the kept weights, and the training weights too when they differ, so that a
        # run shows what its average gains.
        val_loss, val_accuracy, top5_accuracy, confusion = validate(kept_model)
        extra = {} if model_ema is None else {"training_weights_val_acc": validate(model_without_ddp)[1]}
        if scheduler.lr_lambdas[0].observe(scheduler, 1 - val_accuracy):
            log(f"the validation error has not fallen for {PLATEAU_PATIENCE} epochs: the rate is divided by 10")
        seconds = time.perf_counter() - started
        log(
            f"epoch {epoch:3d}/{config.epochs}  train loss {train_loss:.4f} acc {train_accuracy:.4f}  "
            f"val loss {val_loss:.4f} acc {val_accuracy:.4f}"
            + "".join(f" top-5 {value:.4f}" for value in top5_accuracy.values())
            + "".join(f" (training weights {value:.4f})" for value in extra.values())
            + f"  {seconds:6.1f} s  {seen / train_seconds:6.1f} img/s"
        )
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                "train_acc": round(train_accuracy, 6),
                "val_loss": round(val_loss, 6),
                "val_acc": round(val_accuracy, 6),
                **top5_accuracy,
                **{name: round(value, 6) for name, value in extra.items()},
                "seconds": round(seconds, 2),
                "images_per_second": round(seen / train_seconds, 1),
            }
        )

        # Save: best.pth when it is the best so far, a snapshot when asked for, last.pth always.
        if runtime.is_main:
            payload = model_payload(kept_model, classes, PREPROCESS, epoch, names)
            if history[-1]["val_acc"] > best_accuracy:
                best_accuracy, best_confusion = history[-1]["val_acc"], confusion
                save_checkpoint({**payload, "val_accuracy": best_accuracy}, os.path.join(config.out, "best.pth"))
            if epoch in config.snapshot_epochs:
                save_checkpoint(payload, os.path.join(config.out, "snapshots", f"epoch_{epoch:03d}.pth"))
            progress = {"history": history, "best_accuracy": best_accuracy, "best_confusion": best_confusion}
            state = run_state(config, model_without_ddp, model_ema, optimizer, scheduler, progress, classes, data)
            save_checkpoint({**payload, **state}, os.path.join(config.out, "last.pth"))
            write_reports(config.out, history, classes, best_confusion)

    if runtime.is_main:
        finish(config, history, classes, best_confusion, start_epoch, log)
    return {"history": history, "best_accuracy": best_accuracy, "out": config.out, "classes": classes}


def uses_bfloat16(device, precision):
    return precision == "bf16" or (precision == "auto" and native_bfloat16(device))


def open_caches(config, samples, runtime, log):
    """The decoded train and val photos, on the training device, in the cache `--cache`
    comes to (recorded in `config.cache_used`). Rank 0 decodes them once; the other
    processes then open its cache files."""
    folder = cache_folder(config.data)
    config.cache_used, why = choose_cache(config.cache, samples, PREPROCESS["input_size"], folder)
    log(f"photo cache: {config.cache_used} ({why})")
    runtime.barrier()  # every process chooses before rank 0's cache takes disk space
    caches = {}
    for turn in ("build", "open"):
        if (turn == "build") == runtime.is_main:
            for side in ("train", "val"):
                caches[side] = open_cache(
                    config.cache_used,
                    samples[side],
                    side,
                    PREPROCESS["input_size"],
                    folder,
                    config.workers,
                    quiet=not runtime.is_main,
                )
        runtime.barrier()
    return caches["train"].to(runtime.device), caches["val"].to(runtime.device)


def train_step(model, optimizer, scheduler, inputs, labels, autocast, label_smoothing, renorm_radius=0.0):
    """One optimisation step; returns the batch's logits and mean loss (detached). `labels`
    are class indices or, for mixed photos, class probabilities."""
    with autocast:
        logits = model(inputs.contiguous(memory_format=MEMORY_FORMAT))
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if renorm_radius:
        renormalize(model, renorm_radius)
    scheduler.step()
    return logits.detach(), loss.detach()


def evaluate(model, cache, indices, num_classes, batch_size, runtime, autocast):
    """Summed loss, correct count, top-5 correct count (None for 5 classes or fewer, where
    it is always all) and confusion matrix over cache rows `indices` (this process's
    share), summed over all processes."""
    loss_sum = torch.zeros((), device=runtime.device)
    top5 = torch.zeros((), dtype=torch.long, device=runtime.device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=runtime.device)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            rows = indices[start : start + batch_size]
            inputs = val_inputs(cache, rows, PREPROCESS).to(runtime.device, non_blocking=True)
            labels = cache.labels[rows.to(cache.labels.device)].to(runtime.device)
            with autocast:
                logits = model(inputs.contiguous(memory_format=MEMORY_FORMAT))
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            confusion.view(-1).index_add_(0, labels * num_classes + logits.argmax(1), torch.ones_like(labels))
            if num_classes > 5:
                top5 += (logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum()
    confusion = runtime.sum(confusion)
    return (
        runtime.sum(loss_sum).item(),
        confusion.diagonal().sum().item(),
        runtime.sum(top5).item() if num_classes > 5 else None,
        confusion.cpu().tolist(),
    )


def class_indices(classes):
    """The index -> class name mapping, as the tutorial's class_indices.json holds it."""
    return {str(index): name for index, name in enumerate(classes)}


def write_reports(out, history, classes, best_confusion):
    """metrics.csv, curves.png and confusion.png from the whole history (so a resumed run's
    files cover every epoch)."""
    atomic_write_text(os.path.join(out, "metrics.csv"), csv_text(history))
    plot_curves(history, os.path.join(out, "curves.png"))
    plot_confusion(
        best_confusion, classes, os.path.join(out, "confusion.png"), title="validation confusion matrix of best.pth"
    )


def megabytes(path):
    """Disk use of a file or a folder tree, in MB."""
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names) / 1e6


def finish(config, history, classes, best_confusion, start_epoch, log):
    """The closing summary. A run stopped between its last checkpoint and its reports gets
    them here, so that every finished run has every file."""
    if start_epoch >= config.epochs:
        if not all(os.path.exists(os.path.join(config.out, name)) for name in REPORTS):
            write_reports(config.out, history, classes, best_confusion)
        more = (
            "pass a larger --epochs to extend it"
            if extendable(config.recipe_settings)
            else f"its {config.recipe} recipe's schedule ended there, so to train longer start a new run "
            f"with another --out and a larger --epochs"
        )
        log(f"{config.out} has already trained {start_epoch} epochs; {more}")
        return
    best = max(history, key=lambda row: row["val_acc"])
    log(
        f"best val accuracy {best['val_acc']:.4f} at epoch {best['epoch']}; "
        f"checkpoints, metrics and figures in {config.out}/"
    )
    files = ["best.pth", "last.pth"] + (["snapshots"] if config.snapshot_epochs else [])
    sizes = ", ".join(f"{name} {megabytes(os.path.join(config.out, name)):.0f} MB" for name in files)
    cache = cache_folder(config.data)
    cache_size = f"; the decoded-photo cache {cache}/ takes {megabytes(cache):.0f} MB" if os.path.isdir(cache) else ""
    log(
        f"disk: {megabytes(config.out):.0f} MB in {config.out}/ ({sizes}; last.pth holds the optimizer "
        f"state a resume needs){cache_size}"
    )
