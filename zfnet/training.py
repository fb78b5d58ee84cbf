"""Training as a library: the recipes, a run's settings and their checks, resuming, and the
loop (one function per epoch, one for the checkpoints and reports after it).

train.py is a thin command line over `parse_args` and `train`; the studies (ablation.py,
transfer.py) and the benchmarks call the same functions.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DistributedSampler
from torchvision.transforms.v2 import CutMix
from tqdm import tqdm

from model import ARCHS, WIDTHS, ZFNet
from zfnet.arguments import DEFAULT_RUN, add_data, add_device, add_seed, add_workers, int_list, script_parser
from zfnet.checkpoint import model_payload, read_checkpoint, save_checkpoint
from zfnet.data import PhotoCache, cache_folder, scan_split, train_inputs, val_inputs
from zfnet.errors import UserError
from zfnet.figures import plot_confusion, plot_curves
from zfnet.files import atomic_write_text
from zfnet.outputs import OutputFolder
from zfnet.runtime import Distributed, derived_seed, generator, native_bfloat16
from zfnet.tables import csv_text

PREPROCESS = {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
MEMORY_FORMAT = torch.channels_last  # the layout the fastest oneDNN and cuDNN kernels use; never slower here
# A recipe names every setting of how a run learns, so that a checkpoint records the whole
# recipe it ran (a later change to a named recipe never alters a run being resumed).
# "tutorial" is the recipe of the blog post this project grew from (see the README): Adam at
# a constant 2e-4 and RandomResizedCrop(224). "fast" reaches better accuracy in a fraction of
# the time (bench/time_to_accuracy.py): twice the rate, annealed to zero on a cosine over the
# run, label smoothing, and crops of at least half the photo, closer to the whole photos that
# validation and predict.py see.
PLAIN = {
    "optimizer": "adam",  # adam, adamw (decoupled weight decay) or sgd (with momentum)
    "momentum": 0.0,
    "weight_decay": 0.0,  # on weights only, never biases
    "warmup_epochs": 0,  # linear warm-up of the rate before its schedule
    "jitter": 0.0,  # brightness, contrast and saturation factors drawn from [1 - j, 1 + j]
    "layer1_init_scale": 1.0,  # layer 1's initial weights times this
    "layer1_lr_scale": 1.0,  # layer 1's learning rate times this
    "layer1_decay_scale": 1.0,  # layer 1's weight decay times this
    "renorm_radius": 0.0,  # the paper's cap on each convolutional filter's RMS after a step; 0: off
    "cutmix": 0.0,  # CutMix's Beta(a, a) for every batch (a patch of another photo, labels mixed by area); 0: off
    "ema": 0.0,  # keep an exponential moving average of the weights with this decay per step; 0: off
}
RECIPES = {
    "tutorial": {**PLAIN, "lr": 2e-4, "label_smoothing": 0.0, "schedule": "constant", "crop_scale": 0.08},
    "fast": {**PLAIN, "lr": 4e-4, "label_smoothing": 0.1, "schedule": "cosine", "crop_scale": 0.5},
    # For looking inside: layer 1 starts at a tenth of its scale and learns ten times faster,
    # so that what it learns is not drowned by its random start; decoupled weight decay, colour
    # jitter, smaller crops and CutMix hold back the overfitting of long runs. AdamW decays a
    # weight by rate x decay per step, so layer 1's decay is cut by the factor its rate grows:
    # at ten times the others' it faded 20 of 48 filters to nothing. The run keeps a moving
    # average of its weights, steadier than the last step's. Its filters become smooth colour
    # blobs and oriented edges (docs/findings.md has every recipe tried).
    "features": {
        **PLAIN,
        "lr": 4e-4,
        "label_smoothing": 0.1,
        "schedule": "cosine",
        "crop_scale": 0.35,
        "optimizer": "adamw",
        "weight_decay": 0.5,
        "warmup_epochs": 2,
        "jitter": 0.3,
        "layer1_init_scale": 0.1,
        "layer1_lr_scale": 10.0,
        "layer1_decay_scale": 0.1,
        "cutmix": 1.0,
        "ema": 0.999,
    },
}
RENAMED_RECIPES = {"seed": "tutorial"}  # runs saved before the rename still resume
# Settings that change what a run computes: a resumed run must keep them as they were.
RUN_DEFINING = (
    "data",
    "batch_size",
    "recipe",
    "lr",
    "label_smoothing",
    "seed",
    "width",
    "arch",
    "conv_channels",
    "fc_features",
    "precision",
)
# Settings a study (ablation.py, transfer.py) chooses for each of its runs itself.
STUDY_SET = ("data", "out", "epochs", "seed", "conv_channels", "fc_features", "resume", "snapshot_epochs")


def get_parser(description=__doc__, suppress_defaults=False):
    """The training flags; with `suppress_defaults` the parse holds only the flags given."""
    parser = script_parser(description, argument_default=argparse.SUPPRESS if suppress_defaults else None)

    def add(*names, default=None, **kwargs):
        if not suppress_defaults:
            kwargs["default"] = default
        parser.add_argument(*names, **kwargs)

    add_data(parser)
    add("--out", default=DEFAULT_RUN, help="folder for checkpoints, metrics and figures (default: %(default)s)")
    add("--epochs", default=10, type=int, help="total epochs to train (default: %(default)s)")
    add("--batch-size", default=32, type=int, help="images per step and process (default: %(default)s)")
    add(
        "--recipe",
        default="fast",
        choices=sorted(RECIPES),
        help="fast: Adam at 4e-4 on a cosine schedule, label smoothing 0.1, crops of at least half "
        "the photo; tutorial: the blog tutorial's Adam at a constant 2e-4 and RandomResizedCrop(224); "
        "features: layer-1 filters a person can read (a small layer-1 start learning 10x faster, AdamW, "
        "colour jitter, CutMix), for long runs such as 160 epochs (default: %(default)s)",
    )
    add("--lr", type=float, help="(peak) learning rate (default: the recipe's)")
    add("--label-smoothing", type=float, help="label smoothing of the loss (default: the recipe's)")
    add(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto: bfloat16 autocast where the hardware runs it natively (CUDA GPUs, CPUs with "
        "AVX512-BF16 or AMX), else float32 (default: %(default)s)",
    )
    if suppress_defaults:
        parser.add_argument("--workers", type=int)
    else:
        add_workers(parser)
    if suppress_defaults:
        parser.add_argument("--seed", type=int)
        parser.add_argument("--device")
    else:
        add_seed(parser, "initialisation, order, crops and dropout")
        add_device(parser)
    add(
        "--width",
        default="half",
        choices=sorted(WIDTHS),
        help="half: the tutorial's layer widths; full: the paper's (default: %(default)s)",
    )
    add(
        "--arch",
        default="zfnet",
        choices=sorted(ARCHS),
        help="zfnet: 7x7 stride-2 first layer; alexnet: 11x11 stride 4 (default: %(default)s)",
    )
    add(
        "--conv-channels",
        type=int_list,
        metavar="C1,C2,C3,C4,C5",
        help="override the widths of layers 1-5; 0 removes layers 2-4 (ablations)",
    )
    add(
        "--fc-features",
        type=int_list,
        metavar="F6,F7",
        help="override the widths of layers 6 and 7; 0 removes a layer (ablations)",
    )
    add(
        "--snapshot-epochs",
        default=[],
        type=int_list,
        metavar="E1,E2,...",
        help="also save the weights after these epochs into OUT/snapshots/ (for visualize.py evolution; "
        "0 saves the initial weights)",
    )
    add(
        "--resume",
        default=False,
        action="store_true",
        help="continue an interrupted run in --out from its last.pth (starts a new run if there is none); "
        "a tutorial-recipe run, whose rate is constant, can also be extended with a larger --epochs",
    )
    return parser


def parse_args(argv=None, description=__doc__):
    """The run's settings from training flags, checked before any work starts; `explicit`
    lists the flags given (a resumed run keeps its saved values for the others)."""
    config = get_parser(description).parse_args(argv)
    config.explicit = sorted(vars(get_parser(suppress_defaults=True).parse_args(argv)))
    for key in ("lr", "label_smoothing"):
        if getattr(config, key) is None:
            setattr(config, key, RECIPES[config.recipe][key])
    config.recipe_settings = {**RECIPES[config.recipe], "lr": config.lr, "label_smoothing": config.label_smoothing}
    check_settings(config)
    return config


def check_settings(config):
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise UserError("--epochs and --batch-size must be at least 1, --lr positive")
    if not 0 <= config.label_smoothing < 1:
        raise UserError("--label-smoothing must lie in [0, 1)")
    for flag, widths in (("--conv-channels", config.conv_channels), ("--fc-features", config.fc_features)):
        if widths is not None and any(width < 0 for width in widths):
            raise UserError(f"{flag} must not be negative, got {','.join(map(str, widths))}")
    if not all(0 <= epoch <= config.epochs for epoch in config.snapshot_epochs):
        raise UserError(f"--snapshot-epochs must lie between 0 (the initial weights) and --epochs ({config.epochs})")
    build_model(config, num_classes=2)  # layer widths that make no network fail here, not after decoding


def saved_settings(state):
    """The run-defining settings a last.pth was trained with, recipe names brought up to date."""
    saved = dict(state["train_config"])
    saved["recipe"] = RENAMED_RECIPES.get(saved["recipe"], saved["recipe"])
    return saved


def extendable(settings):
    """Whether a finished run of a recipe's `settings` can train on: only a constant rate has no end."""
    return settings["schedule"] == "constant"


def resume_state(config):
    """The checkpoint to continue from, or None; settles `config` against the saved run."""
    last = os.path.join(config.out, "last.pth")
    if not os.path.exists(last):
        if config.resume:
            print(f"no run to resume in {config.out}; starting a new one")
        return None
    if not config.resume:
        raise UserError(f"{config.out} already holds a run; pass --resume to continue it or --out to start a new one")
    state = read_checkpoint(last)
    if state.get("train_config") is None:
        raise UserError(f"{last} is a model checkpoint without training state; cannot resume from it")
    saved = saved_settings(state)
    # Runs saved before recipes were recorded whole ran their named recipe's settings of today.
    # Settings added since a run was saved were off in it.
    recorded = state["train_config"].get("recipe_settings") or {
        **RECIPES[saved["recipe"]],
        "lr": saved["lr"],
        "label_smoothing": saved["label_smoothing"],
    }
    config.recipe_settings = {**PLAIN, **recorded}
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


def build_model(config, num_classes):
    """The network `config` describes, freshly initialised as its recipe says."""
    try:
        model = ZFNet(
            num_classes=num_classes,
            width=config.width,
            arch=config.arch,
            conv_channels=config.conv_channels,
            fc_features=config.fc_features,
            input_size=PREPROCESS["input_size"],
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    # A small start lets what layer 1 learns stand out of its random initialisation; at the
    # usual scale the filters of a short run stay indistinguishable from noise.
    with torch.no_grad():
        model.layer1.conv.weight.mul_(config.recipe_settings["layer1_init_scale"])
    return model


def build_optimizer(model, config, steps_per_epoch):
    """The recipe's optimizer and its per-step learning-rate schedule (warm-up, then constant
    or a cosine to zero over the run)."""
    settings = config.recipe_settings
    if settings["layer1_lr_scale"] == 1 and settings["weight_decay"] == 0:
        groups = [{"params": list(model.parameters())}]
    else:
        groups = []
        for name, parameter in model.named_parameters():
            layer1 = name.startswith("layer1.")
            decay = settings["weight_decay"] * (settings["layer1_decay_scale"] if layer1 else 1)
            groups.append(
                {
                    "params": [parameter],
                    "lr": config.lr * (settings["layer1_lr_scale"] if layer1 else 1),
                    "weight_decay": decay if parameter.ndim > 1 else 0.0,
                }
            )
    if settings["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=settings["momentum"])
    else:
        kind = torch.optim.AdamW if settings["optimizer"] == "adamw" else torch.optim.Adam
        optimizer = kind(groups, lr=config.lr, weight_decay=0.0)
    total = config.epochs * steps_per_epoch
    warmup = settings["warmup_epochs"] * steps_per_epoch

    def factor(step):
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        if extendable(settings):
            return ramp
        return ramp * 0.5 * (1 + math.cos(math.pi * step / total))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def moving_average(model, decay):
    """A copy of `model` whose weights follow its exponential moving average. The decay ramps
    up from 0.1 over the first steps (as timm's ModelEmaV3 does), so an early average is not
    held at the random start."""

    def step(averages, currents, updates):
        weight = 1 - min(decay, (1 + updates.item()) / (10 + updates.item()))
        torch._foreach_lerp_(averages, currents, weight)

    return AveragedModel(model, multi_avg_fn=step)


def renormalize(model, radius):
    """The paper's filter renormalisation: each convolutional filter whose RMS exceeds
    `radius` is scaled back to it (Zeiler & Fergus 2014, section 3)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                rms = module.weight.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
                module.weight.mul_((radius / rms.clamp_min(1e-12)).clamp(max=1.0))


def uses_bfloat16(device, precision):
    return precision == "bf16" or (precision == "auto" and native_bfloat16(device))


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
    """Summed loss, correct count and confusion matrix over cache rows `indices` (this
    process's share), summed over all processes."""
    loss_sum = torch.zeros((), device=runtime.device)
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
    confusion = runtime.sum(confusion)
    return runtime.sum(loss_sum).item(), confusion.diagonal().sum().item(), confusion.cpu().tolist()


def class_indices(classes):
    """The index -> class name mapping, as the tutorial's class_indices.json holds it."""
    return {str(index): name for index, name in enumerate(classes)}


REPORTS = ("metrics.csv", "curves.png", "confusion.png")
RUN_FILES = ("best.pth", "last.pth", "snapshots", "class_indices.json", *REPORTS)


def write_reports(out, history, classes, best_confusion):
    """metrics.csv, curves.png and confusion.png from the whole history (so a resumed run's
    files cover every epoch)."""
    atomic_write_text(os.path.join(out, "metrics.csv"), csv_text(history))
    plot_curves(history, os.path.join(out, "curves.png"))
    plot_confusion(
        best_confusion, classes, os.path.join(out, "confusion.png"), title="validation confusion matrix of best.pth"
    )


def open_caches(config, samples, runtime):
    """The decoded train and val photos, on the training device. Rank 0 decodes them once;
    the other processes then open its cache files."""
    cache_dir = cache_folder(config.data)
    caches = {}
    for turn in ("build", "open"):
        if (turn == "build") == runtime.is_main:
            for side in ("train", "val"):
                caches[side] = PhotoCache.load_or_build(
                    samples[side], side, PREPROCESS["input_size"], cache_dir, config.workers, quiet=not runtime.is_main
                )
        runtime.barrier()
    return caches["train"].to(runtime.device), caches["val"].to(runtime.device)


def megabytes(path):
    """Disk use of a file or a folder tree, in MB."""
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names) / 1e6


def train(config):
    """Train as `config` (parse_args' namespace) says; returns a summary dict with the
    history, the best validation accuracy, the output folder and the classes."""
    runtime = Distributed(config.device)
    try:
        return Run(config, runtime).train()
    except KeyboardInterrupt:
        if runtime.is_main and os.path.exists(os.path.join(config.out, "last.pth")):
            print(
                f"\nstopped; the last finished epoch is saved: continue with "
                f"`python train.py --out {config.out} --resume`",
                file=sys.stderr,
            )
        raise
    finally:
        runtime.close()


class Run:
    """One training run: its model, optimiser, data and history, from scratch or resumed."""

    def __init__(self, config, runtime):
        self.config, self.runtime = config, runtime
        self.device = device = runtime.device
        self.state = state = resume_state(config)
        self.classes, samples = scan_split(config.data)
        if state is not None and state["classes"] != self.classes:
            raise UserError(f"the classes in {config.data} differ from those of the run being resumed")
        check_settings(config)  # again: a resumed run's saved settings now stand in config
        if runtime.is_main:
            OutputFolder.claim(config.out, own_names=RUN_FILES)
        self.log = print if runtime.is_main else (lambda *args, **kwargs: None)
        self.train_cache, self.val_cache = open_caches(config, samples, runtime)

        # bfloat16 has float32's range, so autocast needs no loss scaling; weights stay float32.
        self.bfloat16 = uses_bfloat16(device, config.precision)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bfloat16)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(derived_seed(config.seed, "init"))
        self.model = build_model(config, len(self.classes)).to(device, memory_format=MEMORY_FORMAT)
        self.sampler = DistributedSampler(
            range(len(self.train_cache)),
            num_replicas=runtime.world_size,
            rank=runtime.rank,
            shuffle=True,
            seed=derived_seed(config.seed, "order") % 2**31,
        )
        steps_per_epoch = math.ceil(len(self.sampler) / config.batch_size)
        self.optimizer, self.scheduler = build_optimizer(self.model, config, steps_per_epoch)
        self.history, self.best_accuracy, self.best_confusion, self.start_epoch = [], -1.0, None, 0
        # With a moving average the run keeps (validates and saves) the average; the weights
        # that train go into last.pth beside it, for resuming.
        ema = config.recipe_settings["ema"]
        self.average = moving_average(self.model, ema) if ema else None
        self.kept = self.average.module if ema else self.model
        if state is not None:
            self.model.load_state_dict(state.get("training_weights", state["model"]))
            if ema:
                self.kept.load_state_dict(state["model"])
                self.average.n_averaged.fill_(state["average_updates"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.history, self.best_accuracy = state["history"], state["best_accuracy"]
            self.best_confusion, self.start_epoch = state["best_confusion"], state["epoch"]
        self.trained = DistributedDataParallel(self.model) if runtime.enabled else self.model
        alpha = config.recipe_settings["cutmix"]
        # Draws from torch's global generator, which each epoch seeds, so runs still repeat.
        self.cutmix = CutMix(alpha=alpha, num_classes=len(self.classes)) if alpha else None
        self.val_rows = torch.arange(runtime.rank, len(self.val_cache), runtime.world_size)

    def train(self):
        config, runtime = self.config, self.runtime
        if runtime.is_main:
            atomic_write_text(
                os.path.join(config.out, "class_indices.json"), json.dumps(class_indices(self.classes), indent=4) + "\n"
            )
            if self.start_epoch:
                self.log(f"resuming {config.out} after epoch {self.start_epoch} of {config.epochs}")
            self.log(
                f"training on {self.device} ({runtime.world_size} process{'es' if runtime.enabled else ''}, "
                f"{'bfloat16' if self.bfloat16 else 'float32'}): {len(self.train_cache)} train / "
                f"{len(self.val_cache)} val photos, {len(self.classes)} classes, {config.arch} "
                f"{config.width} width, {config.recipe} recipe"
            )
        if runtime.is_main and self.start_epoch == 0 and 0 in config.snapshot_epochs:
            save_checkpoint(
                model_payload(self.kept, self.classes, PREPROCESS, 0),
                os.path.join(config.out, "snapshots", "epoch_000.pth"),
            )
        for epoch in range(self.start_epoch + 1, config.epochs + 1):
            row, confusion = self.train_one_epoch(epoch)
            self.history.append(row)
            if runtime.is_main:
                self.save(epoch, row["val_acc"], confusion)
        if runtime.is_main:
            self.finish()
        return {
            "history": self.history,
            "best_accuracy": self.best_accuracy,
            "out": config.out,
            "classes": self.classes,
        }

    def train_one_epoch(self, epoch):
        """Train one epoch and validate; returns its history row and validation confusion matrix."""
        config, runtime, device = self.config, self.runtime, self.device
        self.trained.train()
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler))
        crops = generator(config.seed, "crops", epoch, runtime.rank)
        torch.manual_seed(derived_seed(config.seed, "dropout", epoch, runtime.rank))
        settings = config.recipe_settings
        crop_scale = (settings["crop_scale"], 1.0)
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
            inputs = train_inputs(self.train_cache, rows, crops, PREPROCESS, crop_scale, settings["jitter"])
            inputs = inputs.to(device, non_blocking=True)
            labels = self.train_cache.labels[rows.to(self.train_cache.labels.device)].to(device)
            targets = labels
            if self.cutmix is not None:
                inputs, targets = self.cutmix(inputs, labels)
                labels = targets.argmax(1)  # the class that covers most of each mixed photo
            logits, loss = train_step(
                self.trained,
                self.optimizer,
                self.scheduler,
                inputs,
                targets,
                self.autocast,
                config.label_smoothing,
                settings["renorm_radius"],
            )
            if self.average is not None:
                self.average.update_parameters(self.model)
            loss_sum += loss * len(rows)
            correct += (logits.argmax(1) == labels).sum()
            if device.type == "cpu" or step % 20 == 0:  # reading the loss waits for the GPU
                bar.set_postfix(loss=f"{loss.item():.3f}")
        train_seconds = time.perf_counter() - started
        seen = runtime.sum(torch.tensor(float(len(order)), device=device)).item()
        train_loss = runtime.sum(loss_sum).item() / seen
        train_accuracy = runtime.sum(correct).item() / seen

        def validate(model):
            loss_sum, right, confusion = evaluate(
                model, self.val_cache, self.val_rows, len(self.classes), 2 * config.batch_size, runtime, self.autocast
            )
            return loss_sum / len(self.val_cache), right / len(self.val_cache), confusion

        val_loss, val_accuracy, confusion = validate(self.kept)
        # The training weights' own accuracy too, so a run shows what its average gains.
        training_weights = {} if self.average is None else {"training_weights_val_acc": validate(self.model)[1]}
        seconds = time.perf_counter() - started
        self.log(
            f"epoch {epoch:3d}/{config.epochs}  train loss {train_loss:.4f} acc {train_accuracy:.4f}  "
            f"val loss {val_loss:.4f} acc {val_accuracy:.4f}"
            + "".join(f" (training weights {value:.4f})" for value in training_weights.values())
            + f"  {seconds:6.1f} s  {seen / train_seconds:6.1f} img/s"
        )
        return {
            "epoch": epoch,
            "train_loss": round(train_loss, 6),
            "train_acc": round(train_accuracy, 6),
            "val_loss": round(val_loss, 6),
            "val_acc": round(val_accuracy, 6),
            **{name: round(value, 6) for name, value in training_weights.items()},
            "seconds": round(seconds, 2),
            "images_per_second": round(seen / train_seconds, 1),
        }, confusion

    def save(self, epoch, val_accuracy, confusion):
        """The checkpoints after an epoch (best.pth when it is the best so far, a snapshot
        when asked for, last.pth always), then the reports."""
        config = self.config
        payload = model_payload(self.kept, self.classes, PREPROCESS, epoch)
        if val_accuracy > self.best_accuracy:
            self.best_accuracy, self.best_confusion = val_accuracy, confusion
            save_checkpoint({**payload, "val_accuracy": val_accuracy}, os.path.join(config.out, "best.pth"))
        if epoch in config.snapshot_epochs:
            save_checkpoint(payload, os.path.join(config.out, "snapshots", f"epoch_{epoch:03d}.pth"))
        train_config = {key: getattr(config, key) for key in RUN_DEFINING + ("epochs", "recipe_settings")}
        save_checkpoint(
            {
                **payload,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "history": self.history,
                "best_accuracy": self.best_accuracy,
                "best_confusion": self.best_confusion,
                "train_config": train_config,
                **self.average_state(),
            },
            os.path.join(config.out, "last.pth"),
        )
        write_reports(config.out, self.history, self.classes, self.best_confusion)

    def average_state(self):
        """What resuming a run with a moving average needs beyond the average itself."""
        if self.average is None:
            return {}
        return {
            "training_weights": model_payload(self.model, self.classes, PREPROCESS, 0)["model"],
            "average_updates": int(self.average.n_averaged.item()),
        }

    def finish(self):
        """The closing summary. A run stopped between its last checkpoint and its reports gets
        them here, so that every finished run has every file."""
        config = self.config
        if self.start_epoch >= config.epochs:
            if not all(os.path.exists(os.path.join(config.out, name)) for name in REPORTS):
                write_reports(config.out, self.history, self.classes, self.best_confusion)
            more = (
                "pass a larger --epochs to extend it"
                if extendable(config.recipe_settings)
                else f"its {config.recipe} recipe's schedule ended there, so to train longer start a new run "
                f"with another --out and a larger --epochs"
            )
            self.log(f"{config.out} has already trained {self.start_epoch} epochs; {more}")
            return
        best = max(self.history, key=lambda row: row["val_acc"])
        self.log(
            f"best val accuracy {best['val_acc']:.4f} at epoch {best['epoch']}; "
            f"checkpoints, metrics and figures in {config.out}/"
        )
        files = ["best.pth", "last.pth"] + (["snapshots"] if config.snapshot_epochs else [])
        sizes = ", ".join(f"{name} {megabytes(os.path.join(config.out, name)):.0f} MB" for name in files)
        cache = cache_folder(config.data)
        cache_size = (
            f"; the decoded-photo cache {cache}/ takes {megabytes(cache):.0f} MB" if os.path.isdir(cache) else ""
        )
        self.log(
            f"disk: {megabytes(config.out):.0f} MB in {config.out}/ ({sizes}; last.pth holds the optimizer "
            f"state a resume needs){cache_size}"
        )
