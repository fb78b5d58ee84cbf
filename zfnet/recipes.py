"""A run's settings: the recipes (every setting of how a run learns, named), the training
flags and their checks, and what the settings build: the network as its recipe starts it, the
optimiser with its schedule, the moving average of the weights, the paper's filter cap.

train.py, the studies (ablation.py, transfer.py) and the benchmarks parse their training flags
with `parse_args`; zfnet.training runs what they describe.
"""

import argparse
import math

import torch
from torch.optim.swa_utils import AveragedModel

from model import ARCHS, WIDTHS, ZFNet
from zfnet.arguments import (
    DEFAULT_RUN,
    add_data,
    add_device,
    add_seed,
    add_workers,
    int_list,
    parse_noting_given,
    script_parser,
)
from zfnet.data import CACHE_KINDS, RAW_SHARE
from zfnet.errors import UserError

PREPROCESS = {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
# A recipe names every setting of how a run learns, so that a checkpoint records the whole
# recipe it ran (a later change to a named recipe never alters a run being resumed).
# "tutorial" is the recipe of the blog post this project grew from (see the README): Adam at
# a constant 2e-4 and RandomResizedCrop(224). "fast" reaches better accuracy in a fraction of
# the time (bench/time_to_accuracy.py): twice the rate, annealed to zero on a cosine over the
# run, label smoothing, and crops of at least half the photo, closer to the whole photos that
# validation and predict.py see. Its layer 1 starts at a tenth of its scale and learns five
# times faster: from the usual start its filters are still noise after 10 epochs; from this one
# they are smooth, for about a point of accuracy (docs/findings.md).
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
    "fast": {
        **PLAIN,
        "lr": 4e-4,
        "label_smoothing": 0.1,
        "schedule": "cosine",
        "crop_scale": 0.5,
        "layer1_init_scale": 0.1,
        "layer1_lr_scale": 5.0,
    },
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
# Zeiler & Fergus 2014, section 3 ("Training details"): SGD with momentum 0.9 from a rate of
# 1e-2, annealed by hand when the validation error plateaus (here: divided by 10 after
# PLATEAU_PATIENCE epochs without a new lowest error), dropout 0.5 in layers 6 and 7 (every
# recipe's), each filter's RMS capped at 0.1, 224-pixel crops of the 256-pixel photo (here
# crops of (224/256)^2 of it) and flips, batches of 128, 70 epochs, the full widths. The
# paper names no weight decay; the initialisation stays ZFNet's (He-normal convolutions).
RECIPES["paper"] = {
    **PLAIN,
    "lr": 1e-2,
    "label_smoothing": 0.0,
    "schedule": "plateau",
    "crop_scale": (224 / 256) ** 2,
    "optimizer": "sgd",
    "momentum": 0.9,
    "renorm_radius": 0.1,
}
# The flags whose default a recipe sets (a flag given on the command line wins).
RECIPE_DEFAULTS = {"paper": {"epochs": 70, "batch_size": 128, "width": "full"}}
PLATEAU_PATIENCE = 5  # epochs without a new lowest validation error before the rate drops tenfold
PLATEAU_MIN_FALL = 1e-3  # a fall of the validation error smaller than this is no fall
RENAMED_RECIPES = {"seed": "tutorial"}  # runs saved before the rename still resume
# The recipes as runs saved before they recorded their settings ran them: fast's layer 1 then
# started as usual, so such a run resumes as it began.
UNRECORDED_RECIPES = {**RECIPES, "fast": {**RECIPES["fast"], "layer1_init_scale": 1.0, "layer1_lr_scale": 1.0}}
# What --set accepts beyond numbers, and the numbers' bounds (every other one: at least 0).
SETTING_CHOICES = {"optimizer": ("adam", "adamw", "sgd"), "schedule": ("constant", "cosine", "plateau")}
UNIT = ("[0, 1)", lambda number: 0 <= number < 1)
POSITIVE = ("above 0", lambda number: number > 0)
SETTING_BOUNDS = {
    "crop_scale": ("(0, 1]", lambda number: 0 < number <= 1),
    "jitter": UNIT,
    "momentum": UNIT,
    "ema": UNIT,
    "layer1_init_scale": POSITIVE,  # a layer 1 of zeros passes no gradient back to itself
    "layer1_lr_scale": POSITIVE,
}
# --lr and --label-smoothing have flags of their own; the rest of a recipe --set can change.
SETTABLE = sorted(set(RECIPES["fast"]) - {"lr", "label_smoothing"})


def recipe_setting(text):
    """NAME=VALUE of --set, the value of the recipe setting's own type."""
    name, equals, value = text.partition("=")
    if not equals or name not in SETTABLE:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(SETTABLE)}; got {text!r}")
    if name in SETTING_CHOICES:
        if value not in SETTING_CHOICES[name]:
            raise argparse.ArgumentTypeError(f"{name} must be one of {', '.join(SETTING_CHOICES[name])}; got {value!r}")
        return name, value
    kind = type(RECIPES["fast"][name])
    try:
        number = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{name} must be a {'whole ' if kind is int else ''}number; got {value!r}"
        ) from None
    bounds, within = SETTING_BOUNDS.get(name, ("at least 0", lambda number: number >= 0))
    if not (math.isfinite(number) and within(number)):
        raise argparse.ArgumentTypeError(f"{name} must be {bounds}; got {value}")
    return name, number


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


def get_parser(description=__doc__):
    """The training flags."""
    parser = script_parser(description)
    add = parser.add_argument

    add_data(parser)
    add("--out", default=DEFAULT_RUN, help="folder for checkpoints, metrics and figures (default: %(default)s)")
    add("--epochs", default=10, type=int, help="total epochs to train (default: %(default)s)")
    add("--batch-size", default=32, type=int, help="images per step and process (default: %(default)s)")
    add(
        "--recipe",
        default="fast",
        choices=sorted(RECIPES),
        help="fast: Adam at 4e-4 on a cosine schedule, label smoothing 0.1, crops of at least half "
        "the photo, layer 1 started at a tenth of its scale and learning 5x faster; tutorial: the blog "
        "tutorial's Adam at a constant 2e-4 and RandomResizedCrop(224); features: smoother layer-1 filters "
        "and better accuracy in long runs such as 160 epochs (layer 1 learning 10x faster, AdamW, colour "
        "jitter, CutMix); paper: Zeiler & Fergus 2014, section 3: "
        "SGD at 1e-2 with momentum 0.9, divided by 10 when the validation error stops falling, the RMS cap "
        "0.1, and unless given --epochs 70 --batch-size 128 --width full (default: %(default)s)",
    )
    add("--lr", type=float, help="(peak) learning rate (default: the recipe's)")
    add(
        "--set",
        type=recipe_setting,
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="change settings of the recipe, for trying a variant of it; recorded in the run "
        f"(zfnet/recipes.py says what each does): {', '.join(SETTABLE)} (default: none; the recipe as it is)",
    )
    add("--label-smoothing", type=float, help="label smoothing of the loss (default: the recipe's)")
    add(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto: bfloat16 autocast where the hardware runs it natively (CUDA GPUs, CPUs with "
        "AVX512-BF16 or AMX), else float32 (default: %(default)s)",
    )
    add(
        "--cache",
        default="auto",
        choices=CACHE_KINDS,
        help="how the decoded photos are kept: raw: uint8 pixels, 196 KB a training photo, the fastest; "
        "jpeg: JPEG bytes at quality 90, about a tenth of that, decoded again every batch (for sets too "
        f"large for raw); auto: raw while it fits in {RAW_SHARE * 100:.0f}%% of the memory and of the free disk "
        "(default: %(default)s)",
    )
    add(
        "--class-names",
        metavar="FILE",
        help="human-readable names of the class folders, kept in the checkpoints and class_indices.json and shown by "
        "predict.py and explore.py: a JSON object "
        "{folder: name} or lines of `folder name` such as ImageNet's LOC_synset_mapping.txt (default: none, "
        "the folder names; a resumed run keeps the names it had)",
    )
    add_workers(parser)
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
        "a run whose rate has no end (tutorial's constant one, paper's) can also be extended with a larger --epochs",
    )
    return parser


def parse_args(argv=None, description=__doc__):
    """The run's settings from training flags, checked before any work starts; `explicit`
    lists the flags given (a resumed run keeps its saved values for the others)."""
    config, config.explicit = parse_noting_given(get_parser(description), argv)
    for key, value in RECIPE_DEFAULTS.get(config.recipe, {}).items():
        if key not in config.explicit:
            setattr(config, key, value)
    for key in ("lr", "label_smoothing"):
        if getattr(config, key) is None:
            setattr(config, key, RECIPES[config.recipe][key])
    config.recipe_settings = {
        **RECIPES[config.recipe],
        **dict(config.set),
        "lr": config.lr,
        "label_smoothing": config.label_smoothing,
    }
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


def recipe_label(recipe, settings):
    """A run's recipe as its name and the settings in which the run differs from the named
    recipe of today (`fast, layer1_lr_scale=20`): where --set or --lr changed it."""
    named = RECIPES.get(RENAMED_RECIPES.get(recipe, recipe), {})
    changed = [
        f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in settings.items()
        if name in named and value != named[name]
    ]
    return ", ".join([recipe, *changed])


def saved_settings(state):
    """The run-defining settings a last.pth was trained with, recipe names brought up to date."""
    saved = dict(state["train_config"])
    saved["recipe"] = RENAMED_RECIPES.get(saved["recipe"], saved["recipe"])
    return saved


def recorded_settings(state):
    """The recipe settings a last.pth was trained with, every one named. Runs saved before
    recipes were recorded whole ran their named recipe's settings of then; settings added
    since a run was saved were off in it."""
    saved = saved_settings(state)
    recorded = state["train_config"].get("recipe_settings") or {
        **UNRECORDED_RECIPES[saved["recipe"]],
        "lr": saved["lr"],
        "label_smoothing": saved["label_smoothing"],
    }
    return {**PLAIN, **recorded}


def extendable(settings):
    """Whether a finished run of a recipe's `settings` can train on: a cosine spans the run,
    a constant rate or one that drops on plateaus has no end."""
    return settings["schedule"] in ("constant", "plateau")


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
    schedule = RateSchedule(
        settings["schedule"], config.epochs * steps_per_epoch, settings["warmup_epochs"] * steps_per_epoch
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class RateSchedule:
    """The rate's factor at each step: a linear warm-up over `warmup` steps, then constant, a
    cosine to zero over `total` steps, or (plateau) a tenth for each time the validation error
    stopped falling. An object rather than a function, so that LambdaLR's state_dict (in
    last.pth) carries the plateau's count and a resumed run goes on exactly."""

    def __init__(self, kind, total, warmup):
        self.kind, self.total, self.warmup = kind, total, warmup
        self.reductions, self.lowest_error, self.epochs_without_fall = 0, math.inf, 0

    def __call__(self, step):
        ramp = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.kind == "cosine":
            return ramp * 0.5 * (1 + math.cos(math.pi * step / self.total))
        return ramp * 0.1**self.reductions

    def observe(self, scheduler, val_error):
        """After each validation: count an epoch without a new lowest error, and after
        PLATEAU_PATIENCE of them divide the rate by 10 from the next step on; returns
        whether it did."""
        if self.kind != "plateau":
            return False
        if val_error < self.lowest_error - PLATEAU_MIN_FALL:
            self.lowest_error, self.epochs_without_fall = val_error, 0
            return False
        self.epochs_without_fall += 1
        if self.epochs_without_fall < PLATEAU_PATIENCE:
            return False
        self.reductions, self.epochs_without_fall = self.reductions + 1, 0
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * self(scheduler.last_epoch)
        return True


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
