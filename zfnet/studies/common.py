"""What the paper's studies share.

For the studies of a trained network (occlusion, invariance, correspondence, features,
evolution, first_layer): the network their --checkpoint and --device name, the class a photo
is judged against, short names for labels, and layer features in batches.

For the studies that train networks (ablation, transfer): their command lines, which pass
train.py's flags on to every run; the output folder they claim; runs of the package's training
function that a rerun skips when finished and continues when interrupted; and split folders
made of links.
"""

import os

import torch
from tqdm import tqdm

from zfnet.arguments import script_parser
from zfnet.checkpoint import load_checkpoint, read_checkpoint
from zfnet.errors import UserError
from zfnet.outputs import OutputFolder, require_outside
from zfnet.recipes import RUN_DEFINING, STUDY_SET, parse_args, saved_settings
from zfnet.runtime import pick_device
from zfnet.training import train

RUN_FLAGS = tuple("--" + name.replace("_", "-") for name in STUDY_SET)


def study_parser(description):
    return script_parser(
        description,
        allow_abbrev=False,  # an abbreviated train.py flag must not be taken for one of the study's
        epilog="Every other flag (--recipe, --lr, --batch-size, --device, --workers, ...) is train.py's and goes "
        "unchanged to every run the study trains; see python train.py --help.",
    )


def parse_study_args(parser, argv, also_set_by_study=()):
    """The study's own arguments, with `train_flags`, the train.py flags to pass on to every
    run, and `training`, the training config those flags make (checked once, before anything
    trains)."""
    args, train_flags = parser.parse_known_args(argv)
    for flag in train_flags:
        name = flag.split("=")[0]
        if name in RUN_FLAGS + tuple(also_set_by_study):
            raise UserError(f"{name} is set by the study for each of its runs (see {parser.prog} --help)")
    args.train_flags, args.training = train_flags, parse_args(train_flags)
    return args


def claim_study_folder(out, inputs, outputs):
    """Claim a study's --out for its tables, figure and run folders (OutputFolder.claim), once
    it and the study's inputs (`{flag: path}`) lie apart: the study rewrites what lies under
    --out, and what it wrote inside --data would be read as data."""
    for flag, path in inputs.items():
        if os.path.commonpath([os.path.realpath(path), os.path.realpath(out)]) == os.path.realpath(out):
            raise UserError(f"{flag} {path} lies inside --out {out}, which the study rewrites; choose another --out")
        if os.path.isdir(path):
            require_outside(out, path, flag)
    return OutputFolder.claim(out, inputs=list(inputs.values()), outputs=outputs)


def train_run(train_argv, out, epochs):
    """Train one run of a study into `out` for `epochs` epochs and return its history.

    A finished run is read back, not trained again; an interrupted one continues from its
    last.pth. Either must have been made with the settings the study asks for now: train.py
    alone would quietly keep a resumed run's settings for the flags the study leaves at
    their defaults."""
    config = parse_args([*train_argv, "--out", out, "--epochs", str(epochs), "--resume"])
    last = os.path.join(out, "last.pth")
    if os.path.exists(last):
        state = read_checkpoint(last)
        saved = saved_settings(state) if state.get("train_config") else {}
        for key in RUN_DEFINING:
            if saved.get(key) != getattr(config, key):
                raise UserError(
                    f"{out} was trained with {key} {saved.get(key)!r}, this study asks for "
                    f"{getattr(config, key)!r}; give the study another --out"
                )
        if saved.get("epochs") == epochs and len(state["history"]) == epochs:
            print(f"{out}: finished earlier, skipped")
            return state["history"]
    return train(config)["history"][:epochs]


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


def load_network(args):
    """`(model, checkpoint)` from the --checkpoint and --device flags, on that device."""
    return load_checkpoint(args.checkpoint, pick_device(args.device))


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
