"""Split the flower_photos data set into flower_data/train and flower_data/val.

    python split_data.py                                   # download flower_photos, split 90/10
    python split_data.py --source ../shared/flower_photos  # split a folder you already have
    python split_data.py --val-ratio 0.2 --seed 1 --link

The source has one sub-folder per class. Every file is decoded first: what is not a usable
photo (LICENSE.txt, empty or truncated files) is skipped and listed, never copied. The split
is stratified per class and depends only on the files' names and contents, the ratio and the
seed. Byte-identical photos always land on the same side, so none leaks from train into val.
Re-running rebuilds train/ and val/ from scratch; manifest.json beside them records the split.
"""
import argparse
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

from zfnet.errors import UserError, run_main

FLOWER_PHOTOS_URL = "http://download.tensorflow.org/example_images/flower_photos.tgz"
FLOWER_PHOTOS_SIZE = 228_813_984
FLOWER_PHOTOS_SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"
DOWNLOAD_TIMEOUT_S = 30
SAMPLE_DIR = Path(__file__).resolve().parent / "samples" / "flower_photos"
SIDES = ("train", "val")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Split flower_photos (one sub-folder per class) into DEST/train and DEST/val.")
    parser.add_argument("--source", help="folder with one sub-folder per class (default: "
                        "DEST/flower_photos if present, else download flower_photos from --url)")
    parser.add_argument("--dest", default="flower_data",
                        help="where train/, val/ and manifest.json go (default: %(default)s)")
    parser.add_argument("--val-ratio", type=float, default=0.1,
                        help="share of each class that goes to val, between 0 and 1 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split; the same seed and files give the same split (default: %(default)s)")
    parser.add_argument("--link", action="store_true",
                        help="hard-link photos instead of copying them (copies where the file system "
                             "cannot link); the split then shares its files with the source")
    parser.add_argument("--url", default=FLOWER_PHOTOS_URL, help="where to download flower_photos.tgz from")
    parser.add_argument("--no-fallback", action="store_true",
                        help="fail when the download cannot be made, instead of splitting the small "
                             "sample bundled in samples/flower_photos")
    return parser.parse_args(argv)


def shown(path):
    """`path` as a user reads it best: relative to the working directory when it lies below it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


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
            raise UserError(f"{url} gave {size:,} bytes with sha256 {sha256}, expected "
                            f"{FLOWER_PHOTOS_SIZE:,} bytes with sha256 {FLOWER_PHOTOS_SHA256}; "
                            "nothing was extracted")
        archive.seek(0)
        dest.mkdir(parents=True, exist_ok=True)
        # Extract beside the final place and move it there whole, so that a failure or an
        # interruption never leaves a half-extracted flower_photos for the next run to trust.
        with tempfile.TemporaryDirectory(dir=dest, prefix=".split_data-") as scratch:
            try:
                with tarfile.open(fileobj=archive, mode="r:gz") as tar:
                    tar.extractall(scratch, filter="data")
            except tarfile.TarError as error:
                raise UserError(f"could not safely extract {url} ({error}); nothing was extracted") from error
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
        return downloaded, "flower_photos", "downloaded before"
    try:
        download_flower_photos(args.url, dest)
        return downloaded, "flower_photos", f"downloaded from {args.url}"
    except NetworkError as error:
        if args.no_fallback:
            raise UserError(f"could not download {args.url} ({error}) and --no-fallback is set") from error
        photo_count = sum(len(names) for names in list_source(SAMPLE_DIR)[0].values())
        print(f"could not download {args.url} ({error}); using the bundled sample at "
              f"{shown(SAMPLE_DIR)} ({photo_count} photos) instead", file=sys.stderr)
        return SAMPLE_DIR, "bundled sample", "offline fallback"


def check_file(path):
    """Decode the file completely; return its sha256 and why it is no usable photo (None if it is)."""
    try:
        data = path.read_bytes()
    except OSError as error:  # a folder inside a class folder, or no permission to read
        return None, f"unreadable ({error.strerror})"
    if not data:
        return None, "empty file"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # only a full decode finds a truncated JPEG
    except UnidentifiedImageError:
        return None, "not an image"
    except Exception:  # Pillow's decoders raise many kinds of error for a damaged file
        return None, "truncated or corrupt"
    return hashlib.sha256(data).hexdigest(), None


def check_files(source, relative_paths):
    """Check every file on all cores; return {relative path: sha256} of the usable photos and
    the list of skipped files with the reason."""
    with multiprocessing.Pool() as pool:
        results = list(tqdm(pool.imap(check_file, [source / path for path in relative_paths], chunksize=16),
                            total=len(relative_paths), desc="checking", unit="file"))
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

    Identical photos form one unit, so they share a side. Sorting before shuffling and seeding
    with a string (stable across Python runs, unlike hash()) make the result independent of the
    order the file system lists files in."""
    units_by_content = defaultdict(list)
    for name in sorted(names):
        units_by_content[sha256s[f"{class_name}/{name}"]].append(name)
    units = sorted(units_by_content.values())
    random.Random(f"{seed}/{class_name}").shuffle(units)
    target = max(1, round(val_ratio * len(names)))
    val_units, val_size = 0, 0
    while val_size < target and val_units < len(units) - 1:  # at least one unit stays in train
        val_size += len(units[val_units])
        val_units += 1
    return (sorted(name for unit in units[val_units:] for name in unit),
            sorted(name for unit in units[:val_units] for name in unit))


def write_split(source, dest, split, manifest, link):
    """Write train/, val/ and manifest.json into dest; return how many photos were copied
    although linking was asked for.

    Everything is built in a scratch folder first and then swapped in, the manifest last, so an
    interruption never leaves photos of two splits side by side. Nothing else in dest is touched."""
    dest.mkdir(parents=True, exist_ok=True)
    copied_instead_of_linked = 0
    with tempfile.TemporaryDirectory(dir=dest, prefix=".split_data-") as scratch:
        scratch = Path(scratch)
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

        (dest / "manifest.json").unlink(missing_ok=True)
        for side in SIDES:
            if (dest / side).exists():
                (dest / side).rename(scratch / f"old-{side}")
        for side in SIDES:
            (scratch / side).rename(dest / side)
        os.replace(scratch / "manifest.json", dest / "manifest.json")
    return copied_instead_of_linked


def print_summary(manifest, classes, source, how, dest, copied_instead):
    """Say which data set was split, then a table of train/val/skipped counts per class."""
    photo_count = sum(len(files) for files in classes.values())
    print(f"data set: {manifest['dataset']} ({shown(source)}, {photo_count:,} photos) — {how}")
    width = max(len(name) for name in [*classes, "class", "total"])
    print(f"{'class':<{width}}  {'train':>6}  {'val':>6}  {'skipped':>7}")
    totals = [0, 0]
    for name in classes:
        counts = [len(manifest[side].get(name, [])) for side in SIDES]
        totals = [total + count for total, count in zip(totals, counts)]
        skipped_here = sum(entry["file"].startswith(f"{name}/") for entry in manifest["skipped"])
        print(f"{name:<{width}}  {counts[0]:>6}  {counts[1]:>6}  {skipped_here:>7}")
    print(f"{'total':<{width}}  {totals[0]:>6}  {totals[1]:>6}  {len(manifest['skipped']):>7}")
    for entry in manifest["skipped"]:
        print(f"skipped {entry['file']}: {entry['reason']}")
    how_written = "hard-linked" if manifest["link"] else "copied"
    if copied_instead:
        how_written += f", {copied_instead} copied where hard links are impossible"
    print(f"split written to {shown(dest / 'train')} and {shown(dest / 'val')} ({how_written}); "
          f"manifest: {shown(dest / 'manifest.json')}")


def main(argv=None):
    args = parse_args(argv)
    if not 0 < args.val_ratio < 1:
        raise UserError(f"--val-ratio must lie between 0 and 1 (exclusive), got {args.val_ratio}")
    dest = Path(args.dest)
    source, dataset, how = find_source(args)
    for side in SIDES:
        if source.resolve().is_relative_to((dest / side).resolve()):
            raise UserError(f"source {source} lies inside {dest / side}, which every split rebuilds")
    if dest.resolve().is_relative_to(source.resolve()):
        raise UserError(f"--dest {dest} lies inside the source {source}; the source is never modified")

    classes, loose_files = list_source(source)
    relative_paths = [f"{name}/{file}" for name, files in classes.items() for file in files] + loose_files
    sha256s, skipped = check_files(source, relative_paths)

    split = {side: {} for side in SIDES}
    for class_name, names in classes.items():
        usable = [name for name in names if f"{class_name}/{name}" in sha256s]
        if not usable:
            print(f"warning: class {class_name} has no usable photos; it is left out of the split", file=sys.stderr)
            continue
        split["train"][class_name], split["val"][class_name] = split_class(
            class_name, usable, sha256s, args.val_ratio, args.seed)
        if not split["val"][class_name]:
            print(f"warning: class {class_name} has only one distinct photo; val/{class_name} stays empty",
                  file=sys.stderr)

    manifest = {
        "source": str(source.resolve()),
        "dataset": dataset,
        "seed": args.seed,
        "val_ratio": args.val_ratio,
        "link": args.link,
        "classes": sorted(split["train"]),
        **split,
        "skipped": skipped,
    }
    copied_instead = write_split(source, dest, split, manifest, args.link)
    print_summary(manifest, classes, source, how, dest, copied_instead)


if __name__ == "__main__":
    run_main(main)
