"""Output folders a script may write into without harming anything of the user's.

A script writes into a folder it owns: one it creates, an empty one, or one that already
holds only zfnet outputs (it carries a marker file, or, for folders written before the
marker existed, holds only file names the script itself writes). Anything else is refused
in one line, so that `--out` pointed at a photo folder or a thesis never loses a file. Within
its folder a script never writes over one of its own inputs.
"""

import fnmatch
import os

from zfnet.errors import UserError
from zfnet.files import atomic_write_text, make_folder, remove_debris

MARKER = ".zfnet-outputs"


def _ours(entries, outputs):
    return MARKER in entries or all(any(fnmatch.fnmatch(entry, pattern) for pattern in outputs) for entry in entries)


class OutputFolder:
    """The folder a script writes into, claimed with `claim`; `path(name)` gives the path of
    one output, refusing any that is one of the script's inputs."""

    def __init__(self, folder, inputs=()):
        self.folder = folder
        self.inputs = {os.path.realpath(path) for path in inputs}

    @classmethod
    def claim(cls, folder, inputs=(), outputs=(), flag="--out"):
        """Take `folder` for a script's outputs (creating it and marking it as zfnet's), after
        clearing the debris of killed writers. `outputs` are the file-name patterns the
        script writes, which lets it take back a folder it filled before markers existed."""
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UserError(f"{flag} {folder} is a file, not a folder")
        if os.path.isdir(folder):
            entries = [entry for entry in os.listdir(folder) if not entry.startswith(".zfnet-partial-")]
            if entries and not _ours(entries, outputs):
                raise UserError(
                    f"{flag} {folder} already holds files that zfnet did not write; name a new or empty folder"
                )
            for path in inputs:
                if os.path.realpath(path) == os.path.realpath(folder):
                    raise UserError(f"{flag} {folder} is one of the inputs")
        make_folder(folder)
        remove_debris(folder)
        if not os.path.exists(os.path.join(folder, MARKER)):
            atomic_write_text(
                os.path.join(folder, MARKER),
                "This folder holds outputs of zfnet's scripts; running them again replaces them.\n",
            )
        return cls(folder, inputs)

    def path(self, *names):
        """The path of an output file in the folder; UserError if it is one of the inputs."""
        path = os.path.join(self.folder, *names)
        if os.path.realpath(path) in self.inputs:
            raise UserError(f"writing {path} would replace one of the inputs; choose another --out")
        return path


def require_outside(folder, tree, tree_flag, flag="--out"):
    """UserError if the output folder `folder` is the input folder `tree` or lies inside it:
    a later run would read the outputs as inputs (a figure is a PNG, a photo to every
    folder scan; a sub-folder of a split is a class)."""
    if os.path.commonpath([os.path.realpath(folder), os.path.realpath(tree)]) == os.path.realpath(tree):
        raise UserError(
            f"{flag} {folder} is within {tree_flag} {tree}, whose files are read as inputs "
            f"(a later run would read the outputs too); choose an {flag} outside it"
        )
