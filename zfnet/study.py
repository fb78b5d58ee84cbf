"""What the studies (ablation.py, transfer.py) share: their command lines, which pass train.py's
flags on to every run; the output folder they claim; runs of the package's training function
that a rerun skips when finished and continues when interrupted; and split folders made of
links."""

import os

from zfnet.arguments import script_parser
from zfnet.checkpoint import read_checkpoint
from zfnet.errors import UserError
from zfnet.outputs import OutputFolder, require_outside
from zfnet.training import RUN_DEFINING, STUDY_SET, parse_args, saved_settings, train

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


def claim_study_folder(out, inputs, own_names):
    """Claim a study's --out for its tables, figure and run folders (OutputFolder.claim), once
    it and the study's inputs (`{flag: path}`) lie apart: the study rewrites what lies under
    --out, and what it wrote inside --data would be read as data."""
    for flag, path in inputs.items():
        if os.path.commonpath([os.path.realpath(path), os.path.realpath(out)]) == os.path.realpath(out):
            raise UserError(f"{flag} {path} lies inside --out {out}, which the study rewrites; choose another --out")
        if os.path.isdir(path):
            require_outside(out, path, flag)
    return OutputFolder.claim(out, inputs=list(inputs.values()), own_names=own_names)


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
