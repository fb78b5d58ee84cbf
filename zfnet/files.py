"""Writing files so that an interruption at any moment leaves the old file or the new one,
never a half-written one: write a temporary file in the same folder, flush it to disk,
then rename it over the target (a rename within one file system is atomic)."""
import os
import tempfile


def atomic_write(path, write, binary=True):
    """Call `write(file)` on a temporary file beside `path`, then move it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb" if binary else "w") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def atomic_write_text(path, text):
    atomic_write(path, lambda file: file.write(text), binary=False)
