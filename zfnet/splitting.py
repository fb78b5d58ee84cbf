"""Splitting a folder of photos, one sub-folder per class, into train/ and val/: finding the
source (a folder, flower_photos downloaded and verified, or the bundled sample), checking every
file, a stratified split that keeps byte-identical photos together, and writing it all or
nothing.

split_data.py is a thin command line over `check_request`, `find_source`, `split_folder` and
`summary`; the benchmarks split the bundled sample with `split_sample`.
"""

import fcntl
import hashlib
import http.client
import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from zfnet.errors import UserError, at_end
from zfnet.files import make_folder
from zfnet.images import TOO_LARGE, not_a_regular_file, refuse_bomb

FLOWER_PHOTOS_URL = "http://download.tensorflow.org/example_images/flower_photos.tgz"
FLOWER_PHOTOS_SIZE = 228_813_984
FLOWER_PHOTOS_SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"
DOWNLOAD_TIMEOUT_S = 30
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "samples" / "flower_photos"
SIDES = ("train", "val")
SCRATCH_PREFIX = ".split_data-"
_locked = {}  # {real path of a split folder: its open, locked descriptor}, held until the process ends


def shown(path):
    """`path` as a user reads it best: relative to the working directory when it lies below it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def lock_dest(dest):
    """Take the folder `dest` for this process until `release_dests`: an exclusive lock on the
    folder itself (nothing is added to it), taken before anything in it is cleaned or written. UserError,
    naming the holder, when another split_data run has it; the lock of a run that died is
    free again (the system drops a dead process's locks)."""
    key = os.path.realpath(dest)
    if key in _locked:
        return
    descriptor = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise UserError(
            f"--dest {dest} is being split by {split_holder(dest) or 'another process'}; wait until it ends"
        ) from None
    _locked[key] = descriptor


def release_dests():
    """Give back the split folders this process locked (run_main does, when a script ends)."""
    while _locked:
        os.close(_locked.popitem()[1])


at_end(release_dests)


def split_holder(dest):
    """`process N (command)` of a split_data run writing into `dest`, from its scratch folder's
    name, which carries its process id."""
    for entry in os.scandir(dest):
        pid = entry.name[len(SCRATCH_PREFIX) :].split("-")[0]
        if entry.name.startswith(SCRATCH_PREFIX) and pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as file:
                    command = file.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                command = "command unknown"
            return f"process {pid} ({command})"
    return None


def scratch_folder(dest):
    """A new scratch folder in `dest` (its name carries this process's id), removed when its
    `with` block ends, made under the lock on `dest`. Those of runs killed before they could
    remove theirs are gone already: every run starts with `check_request`, which finishes
    or removes them."""
    lock_dest(dest)
    try:
        return tempfile.TemporaryDirectory(dir=dest, prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    except OSError as error:  # no permission to write there
        raise disk_trouble(dest, error) from None


def disk_trouble(dest, error):
    """A UserError for a split that could not be written; `dest` is as it was."""
    return UserError(f"cannot write the split into {dest}: {error.strerror or error}; {dest} is as it was")


class NetworkError(Exception):
    """The download could not be made: no network, refused, timed out or cut short."""


def download(url, archive):
    """Write what `url` serves into the open file `archive`; return its sha256."""
    sha256 = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            announced = response.headers.get("Content-Length")
            expected = int(announced) if announced else FLOWER_PHOTOS_SIZE
            with tqdm(total=expected, unit="B", unit_scale=True, desc="downloading") as progress:
                while chunk := response.read(1 << 20):
                    archive.write(chunk)
                    sha256.update(chunk)
                    progress.update(len(chunk))
    except ValueError as error:  # not a URL at all
        raise UserError(f"cannot download --url {url}: {error}") from error
    except (OSError, http.client.HTTPException) as error:
        # A plain URLError only wraps the socket's own error (refused, DNS, timeout) in .reason.
        reason = error.reason if type(error) is urllib.error.URLError else error
        raise NetworkError(str(reason) or type(error).__name__) from error
    # http.client ends a read quietly when the server closes early, so count what arrived.
    if archive.tell() < expected:
        raise NetworkError(f"transfer cut short after {archive.tell():,} of {expected:,} bytes")
    return sha256.hexdigest()


def download_flower_photos(url, dest):
    """Download flower_photos.tgz, verify it and extract it to dest/flower_photos, all or nothing."""
    with tempfile.TemporaryFile() as archive:
        sha256 = download(url, archive)
        size = archive.tell()
        if (size, sha256) != (FLOWER_PHOTOS_SIZE, FLOWER_PHOTOS_SHA256):
            raise UserError(
                f"{url} gave {size:,} bytes with sha256 {sha256}, expected "
                f"{FLOWER_PHOTOS_SIZE:,} bytes with sha256 {FLOWER_PHOTOS_SHA256}; "
                "nothing was extracted"
            )
        archive.seek(0)
        make_folder(dest)
        # Extract beside the final place and move it there whole, so that a failure or an
        # interruption never leaves a half-extracted flower_photos for the next run to trust.
        with scratch_folder(dest) as scratch:
            try:
                with tarfile.open(fileobj=archive, mode="r:gz") as tar:
                    tar.extractall(scratch, filter="data")
            except tarfile.TarError as error:
                raise UserError(f"could not safely extract {url} ({error}); nothing was extracted") from error
            except OSError as error:  # a full disk
                raise disk_trouble(dest, error) from None
            extracted = Path(scratch) / "flower_photos"
            if not extracted.is_dir():
                raise UserError(f"{url} holds no flower_photos/ folder; nothing was extracted")
            extracted.rename(dest / "flower_photos")


def list_source(source):
    """Return {class: sorted file names} and the sorted names of the files beside the class
    folders. Hidden entries (names starting with '.') are left out quietly."""
    classes, loose_files = {}, []
    for name in sorted(os.listdir(source)):
        if name.startswith("."):
            continue
        if (source / name).is_dir():
            classes[name] = sorted(f for f in os.listdir(source / name) if not f.startswith("."))
        else:
            loose_files.append(name)
    if not classes:
        raise UserError(f"{source} has no class folders (one sub-folder per class is expected)")
    return classes, loose_files


def find_source(args):
    """Return the folder to split, which data set it is, and how it was found."""
    dest = Path(args.dest)
    if args.source is not None:
        source = Path(args.source)
        if not source.exists():
            raise UserError(f"source folder {source} does not exist")
        if not source.is_dir():
            raise UserError(f"source {source} is not a folder")
        return source, "user folder", "given with --source"
    downloaded = dest / "flower_photos"
    if downloaded.is_dir():
        return downloaded, "flower_photos", "downloaded earlier"
    if os.path.lexists(downloaded):
        raise UserError(f"{downloaded} is in the way of the download and not a folder; move it away or give --source")
    try:
        download_flower_photos(args.url, dest)
        return downloaded, "flower_photos", f"downloaded from {args.url}"
    except NetworkError as error:
        if args.no_fallback:
            raise UserError(f"could not download {args.url} ({error}) and --no-fallback is set") from error
        photo_count = sum(len(names) for names in list_source(SAMPLE_DIR)[0].values())
        print(
            f"could not download {args.url} ({error}); using the bundled sample at "
            f"{shown(SAMPLE_DIR)} ({photo_count} photos) instead",
            file=sys.stderr,
        )
        return SAMPLE_DIR, "bundled sample", "offline fallback"


def check_file(path):
    """Decode the file completely; return its sha256 and why it is no usable photo (None if it is)."""
    if not_a_regular_file(path):
        return None, "not a regular file (a pipe, socket or device)"
    try:
        data = path.read_bytes()
    except OSError as error:  # a folder inside a class folder, or no permission to read
        if path.is_symlink() and not path.exists():  # to a file that is gone, or to itself
            return None, "a symbolic link that leads to no file"
        return None, f"unreadable ({error.strerror})"
    if not data:
        return None, "empty file"
    try:
        with Image.open(io.BytesIO(data)) as image:
            refuse_bomb(image)
            image.load()  # only a full decode finds a truncated JPEG
    except UnidentifiedImageError:
        return None, "not an image"
    except Image.DecompressionBombError as error:
        return None, f"{TOO_LARGE} ({error})"
    except Exception:  # Pillow's decoders raise many kinds of error for a damaged file
        return None, "truncated or corrupt"
    return hashlib.sha256(data).hexdigest(), None


def check_files(source, relative_paths):
    """Check every file on all cores; return {relative path: sha256} of the usable photos and
    the list of skipped files with the reason."""
    with multiprocessing.Pool() as pool:
        results = list(
            tqdm(
                pool.imap(check_file, [source / path for path in relative_paths], chunksize=16),
                total=len(relative_paths),
                desc="checking",
                unit="file",
            )
        )
    sha256s, skipped = {}, []
    for path, (sha256, problem) in zip(relative_paths, results):
        if problem is None and "/" not in path:
            problem = "not in a class folder"
        if problem is None:
            sha256s[path] = sha256
        else:
            skipped.append({"file": path, "reason": problem})
    return sha256s, skipped


def split_class(class_name, names, sha256s, val_ratio, seed):
    """Return the sorted train and val names of one class.

    Identical photos form one unit, so they share a side. The units are put in name order before
    the shuffle, and the shuffle is seeded with a string (stable across Python runs, unlike
    hash()), so the split does not depend on the order the file system lists files in."""
    units_by_content = defaultdict(list)
    for name in sorted(names):
        units_by_content[sha256s[f"{class_name}/{name}"]].append(name)
    units = list(units_by_content.values())  # in order of each unit's first name
    random.Random(f"{seed}/{class_name}").shuffle(units)
    target = max(1, round(val_ratio * len(names)))
    val_units, val_size = 0, 0
    while val_size < target and val_units < len(units) - 1:  # at least one unit stays in train
        val_size += len(units[val_units])
        val_units += 1
    return (
        sorted(name for unit in units[val_units:] for name in unit),
        sorted(name for unit in units[:val_units] for name in unit),
    )


def write_split(source, dest, split, manifest, link):
    """Write train/, val/ and manifest.json into dest; return how many photos were copied
    although linking was asked for.

    Everything is built in a scratch folder first and then swapped in, the manifest last, so an
    interruption never leaves photos of two splits side by side, a full disk leaves the
    earlier split as it was, and a kill during the swap leaves one that the next run finishes.
    Nothing else in dest is touched."""
    make_folder(dest)
    copied_instead_of_linked = 0
    with scratch_folder(dest) as scratch:
        scratch = Path(scratch)
        try:
            jobs = []
            for side in SIDES:
                for class_name, names in split[side].items():
                    (scratch / side / class_name).mkdir(parents=True)
                    jobs += [(source / class_name / name, scratch / side / class_name / name) for name in names]
            for photo, target in tqdm(jobs, desc="linking" if link else "copying", unit="photo"):
                if link:
                    try:
                        os.link(photo, target)
                        continue
                    except OSError:  # another file system (EXDEV), or one without hard links
                        copied_instead_of_linked += 1
                shutil.copy2(photo, target)
            (scratch / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        except OSError as error:
            raise disk_trouble(dest, error) from None

        swap_in(scratch, dest)
    return copied_instead_of_linked


def swap_in(scratch, dest):
    """Move the split built whole in `scratch` (train/, val/, manifest.json written last) into
    `dest`, the earlier sides into scratch/old-*. Each step can be redone after a kill cut the
    others off: a scratch folder holding a manifest holds a split built whole, and the next
    run finishes its swap (`finish_interrupted_swaps`)."""
    (dest / "manifest.json").unlink(missing_ok=True)  # train/ and val/ change: no manifest vouches for them
    for side in SIDES:
        if (scratch / side).exists():
            if (dest / side).exists() and not (scratch / f"old-{side}").exists():
                (dest / side).rename(scratch / f"old-{side}")
            (scratch / side).rename(dest / side)
    os.replace(scratch / "manifest.json", dest / "manifest.json")


def finish_interrupted_swaps(dest):
    """Finish the swap of every split that a killed split_data run built whole in a scratch
    folder of `dest` but did not get to move in, so that `dest` holds one whole split again;
    then remove the scratch folders killed runs left (each can hold a whole split)."""
    if not dest.is_dir():
        return
    lock_dest(dest)
    for entry in sorted(os.scandir(dest), key=lambda entry: entry.name):
        if not (entry.name.startswith(SCRATCH_PREFIX) and entry.is_dir(follow_symlinks=False)):
            continue
        scratch = Path(entry.path)
        if (scratch / "manifest.json").is_file():
            try:
                swap_in(scratch, dest)
            except OSError as error:
                raise disk_trouble(dest, error) from None
            print(f"note: finished moving in the split an interrupted run left in {shown(dest)}", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)


def summary(manifest, classes, source, how, dest, copied_instead):
    """What was split, as text: the data set, then a table of train/val/skipped counts per
    class, the skipped files and where the split went."""
    photo_count = sum(len(files) for files in classes.values())
    lines = [f"data set: {manifest['dataset']} ({shown(source)}, {photo_count:,} photos) — {how}"]
    width = max(len(name) for name in [*classes, "class", "total"])
    lines.append(f"{'class':<{width}}  {'train':>6}  {'val':>6}  {'skipped':>7}")
    totals = [0, 0]
    for name in classes:
        counts = [len(manifest[side].get(name, [])) for side in SIDES]
        totals = [total + count for total, count in zip(totals, counts)]
        skipped_here = sum(entry["file"].startswith(f"{name}/") for entry in manifest["skipped"])
        lines.append(f"{name:<{width}}  {counts[0]:>6}  {counts[1]:>6}  {skipped_here:>7}")
    lines.append(f"{'total':<{width}}  {totals[0]:>6}  {totals[1]:>6}  {len(manifest['skipped']):>7}")
    lines += [f"skipped {entry['file']}: {entry['reason']}" for entry in manifest["skipped"]]
    how_written = "hard-linked" if manifest["link"] else "copied"
    if copied_instead:
        how_written += f", {copied_instead} copied where hard links are impossible"
    lines.append(
        f"split written to {shown(dest / 'train')} and {shown(dest / 'val')} ({how_written}); "
        f"manifest: {shown(dest / 'manifest.json')}"
    )
    return "\n".join(lines)


def check_request(dest, val_ratio, source=None):
    """The checks made before anything is downloaded or written: the ratio, where --dest is
    (and where --source is, when given) and whether its train/ and val/ may be replaced."""
    if not 0 < val_ratio < 1:
        raise UserError(f"--val-ratio must lie between 0 and 1 (exclusive), got {val_ratio}")
    if dest.exists() and not dest.is_dir():
        raise UserError(f"--dest {dest} is not a folder")
    finish_interrupted_swaps(dest)
    if source is not None:
        check_places(source, dest)
    require_own_sides(dest)


def check_places(source, dest):
    """UserError where a split would rebuild its own source, or write into it."""
    for side in SIDES:
        if source.resolve().is_relative_to((dest / side).resolve()):
            raise UserError(f"source {source} lies inside {dest / side}, which every split rebuilds")
    if dest.resolve().is_relative_to(source.resolve()):
        raise UserError(f"--dest {dest} lies inside the source {source}; the source is never modified")


def earlier_manifest(dest):
    """The manifest.json an earlier split_data run left in dest, or None if there is none."""
    try:
        manifest = json.loads((dest / "manifest.json").read_text())
    except (OSError, ValueError):  # missing, unreadable, or not JSON: not one of ours
        return None
    if isinstance(manifest, dict) and all(isinstance(manifest.get(side), dict) for side in SIDES):
        return manifest
    return None


def split_to_keep(dest, source, resplit):
    """The manifest of the split of the user's own folder that `dest` already holds, when a
    run that names no --source should keep it (as make run's does): such a split is never
    replaced by flower_photos or the bundled sample unless --resplit asks for it."""
    if source is not None or resplit:
        return None
    manifest = earlier_manifest(dest)
    return manifest if manifest is not None and manifest.get("dataset") == "user folder" else None


def require_own_sides(dest):
    """UserError unless dest/train and dest/val, where they exist, are what an earlier
    split_data run wrote: a split replaces them whole, so only folders whose every class
    folder the manifest beside them lists may go (a photo added to one of those classes
    goes too, as a stale one)."""
    manifest = earlier_manifest(dest)
    for side in SIDES:
        folder = dest / side
        if not os.path.lexists(folder):
            continue
        if manifest is None:
            why = "no manifest.json of split_data.py beside it"
        elif folder.is_symlink() or not folder.is_dir():
            why = "it is not a folder"
        else:
            foreign = sorted(
                entry.name
                for entry in os.scandir(folder)
                if entry.name not in manifest[side] or not entry.is_dir(follow_symlinks=False)
            )
            why = f"its manifest.json does not list {', '.join(foreign)}" if foreign else None
        if why:
            raise UserError(
                f"--dest {dest} holds a {side}/ that split_data.py did not write ({why}); a split "
                f"replaces {side}/ whole, so choose another --dest or move {folder} away yourself"
            )


def split_folder(source, dest, val_ratio, seed, link, dataset):
    """Split `source` (one sub-folder per class) into dest/train, dest/val and
    dest/manifest.json; returns the manifest, the source's {class: file names} and how many
    photos were copied although linking was asked for."""
    check_request(dest, val_ratio, source)

    classes, loose_files = list_source(source)
    relative_paths = loose_files + [f"{name}/{file}" for name, files in classes.items() for file in files]
    sha256s, skipped = check_files(source, relative_paths)

    split = {side: {} for side in SIDES}
    for class_name, names in classes.items():
        usable = [name for name in names if f"{class_name}/{name}" in sha256s]
        if not usable:
            print(f"warning: class {class_name} has no usable photos; it is left out of the split", file=sys.stderr)
            continue
        split["train"][class_name], split["val"][class_name] = split_class(class_name, usable, sha256s, val_ratio, seed)
        if not split["val"][class_name]:
            print(
                f"warning: class {class_name} has only one distinct photo; val/{class_name} stays empty",
                file=sys.stderr,
            )

    manifest = {
        "source": str(source.resolve()),
        "dataset": dataset,
        "seed": seed,
        "val_ratio": val_ratio,
        "link": link,
        "classes": sorted(split["train"]),
        **split,
        "skipped": skipped,
    }
    return manifest, classes, write_split(source, dest, split, manifest, link)


def split_sample(dest):
    """Split the bundled sample into dest/train and dest/val as split_data.py does by default
    (for the benchmarks' quick runs); returns dest."""
    try:
        split_folder(SAMPLE_DIR, Path(dest), val_ratio=0.1, seed=0, link=True, dataset="bundled sample")
    finally:
        release_dests()
    return dest
