"""Output folders a script may write into without harming anything of the user's.

A script writes into a folder it owns: one it creates, an empty one, or one that already
holds only zfnet outputs (it carries a marker file, or, for folders written before the
marker existed, holds only file names the script itself writes). Anything else is refused
in one line, so that `--out` pointed at a photo folder or a thesis never loses a file. Within
its folder a script never writes over one of its own inputs.

One process at a time: the claim locks the folder (an exclusive lock on its marker file,
which names the holder) before it cleans or writes anything, and holds it until the work
ends. A second writer is refused in one line naming the holder; a lock left by a process that
died is free again (the system drops a dead process's locks) and is taken over with a note.
"""

import fcntl
import fnmatch
import os
import sys

from zfnet.errors import UserError, at_end
from zfnet.files import make_folder, remove_debris

MARKER = ".zfnet-outputs"
MARKER_TEXT = "This folder holds outputs of zfnet's scripts; running them again replaces them.\n"
HOLDER = "in use by "
_held = {}  # {real path of a folder: its open, locked marker file}: the folders this process writes


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
        lock(folder, flag)
        remove_debris(folder)  # under the lock: no other process is writing these
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


def lock(folder, flag="--out"):
    """Take `folder` for this process until `release` (or its exit): lock its marker file,
    creating it, and write the holder into it. UserError naming the holder when another
    process has it; a note when a process that died had it."""
    key = os.path.realpath(folder)
    if key in _held:
        return
    try:
        marker = open(os.path.join(folder, MARKER), "a+")  # created if missing, never replaced
    except OSError as error:
        raise UserError(f"cannot write into {folder}: {error.strerror}") from None
    try:
        fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(marker)
        marker.close()
        raise UserError(
            f"{flag} {folder} is in use by {holder or 'another process'}; wait until it ends, or choose another {flag}"
        ) from None
    stale = _holder(marker)
    if stale:
        print(f"note: taking over {folder}, left locked by {stale}, which is no longer running", file=sys.stderr)
    _write_marker(marker, f"{HOLDER}process {os.getpid()} ({' '.join(sys.argv)})\n")
    _held[key] = marker


def release(folder):
    """Give `folder` back: the marker no longer names a holder, and the lock goes."""
    marker = _held.pop(os.path.realpath(folder), None)
    if marker is not None:
        try:
            _write_marker(marker, "")
        finally:
            marker.close()


def release_all():
    for folder in list(_held):
        release(folder)


at_end(release_all)


def _holder(marker):
    """Who the marker says holds the folder: `process N (command)`, or None."""
    marker.seek(0)
    lines = [line for line in marker.read().splitlines() if line.startswith(HOLDER)]
    return lines[-1][len(HOLDER) :] if lines else None


def _write_marker(marker, holder):
    marker.seek(0)
    marker.truncate()
    marker.write(MARKER_TEXT + holder)
    marker.flush()
