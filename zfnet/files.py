"""Writing files so that an interruption at any moment leaves the old file or the new one,
never a half-written one: write a temporary file in the same folder, flush it to disk,
then rename it over the target (a rename within one file system is atomic).

The temporary files carry a prefix of their own, so that the debris a killed process leaves
(`remove_debris`) can be told from anything else in the folder. Filesystem trouble (a full
disk, a folder that is a file, no permission) is the user's to fix: it ends in one line
naming the path, and the file that was there before stays as it was.
"""

import glob
import os
import tempfile

from zfnet.errors import UserError

PARTIAL_PREFIX = ".zfnet-partial-"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_folder(folder):
    """`os.makedirs(folder, exist_ok=True)`, with filesystem trouble as a UserError."""
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot write into {folder}: it is a file, not a folder") from None
    except OSError as error:
        raise UserError(f"cannot create the folder {folder}: {error.strerror}") from None


def atomic_write(path, write, binary=True):
    """Call `write(file)` on a temporary file beside `path`, then move it into place. The
    file gets the mode a plain `open()` would give it under the user's umask."""
    folder = os.path.dirname(os.path.abspath(path))
    make_folder(folder)
    if os.path.isdir(path):
        raise UserError(f"cannot write {path}: a folder of that name is in the way")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=PARTIAL_PREFIX)
    except OSError as error:
        raise UserError(f"cannot write into {folder}: {error.strerror}") from None
    try:
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb" if binary else "w") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        os.unlink(temporary)
        # torch's zip writer turns the OSError of a full disk into a RuntimeError of its own
        # ("unexpected pos"); the OSError stays behind it as its context.
        cause = error.__context__ if isinstance(error, RuntimeError) else error
        if not isinstance(cause, OSError) or cause.strerror is None:
            raise
        raise UserError(f"cannot write {path}: {cause.strerror}; what was there before is unchanged") from None
    except BaseException:
        os.unlink(temporary)
        raise


def atomic_write_text(path, text):
    atomic_write(path, lambda file: file.write(text), binary=False)


def write_text_if_changed(path, text):
    """atomic_write_text, unless `path` holds `text` already: a rebuild that changes nothing
    writes and syncs nothing (and leaves the files' times alone). Returns whether it wrote."""
    try:
        with open(path) as file:
            if file.read() == text:
                return False
    except (OSError, UnicodeDecodeError):  # missing, unreadable or not text: written afresh
        pass
    atomic_write_text(path, text)
    return True


def remove_debris(folder):
    """Delete the temporary files that killed runs left in `folder` and its sub-folders (a
    kill -9 leaves them, up to a checkpoint's size each). Only one process writes a given
    output folder at a time, so none of them is still being written."""
    for path in glob.glob(os.path.join(glob.escape(folder), "**", PARTIAL_PREFIX + "*"), recursive=True):
        if os.path.isfile(path):
            os.unlink(path)
