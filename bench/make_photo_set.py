"""Write a synthetic split of JPEG photos shaped like flower_photos or like ImageNet, for
benchmarks on a machine the real photos cannot travel to (bench/gpu.sh) or of a size we do
not have (bench/cache_memory.py).

    python bench/make_photo_set.py --out /tmp/photo_set --photos 3094
    python bench/make_photo_set.py --out /tmp/imagenet_like --photos 20000 --shape imagenet --classes 1000
    python bench/make_photo_set.py --quick     # 10 photos into a temporary folder, then removed

Class folders split 90/10 into train/ and val/: flower_photos' five names, or with
`--classes` other than 5 ImageNet-style synset names (n00000000, ...). Sizes: flowers, the
long side 240, 320 or 500 pixels (21%, 42% and 37% of the photos); imagenet, 375, 500 or
1024 (15%, 75%, 10%: most ImageNet photos are 500 x 375 or 500 x 333, a few far larger);
landscape or portrait at 4:3. Content is smooth colour fields with fine grain, so that the
files (about 60 KB on average at flower sizes, as the real ones) cost about what real photos
cost to decode.
"""

import os
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from zfnet.arguments import add_seed, positive_int, script_parser
from zfnet.errors import UserError, run_main
from zfnet.files import make_folder
from zfnet.outputs import OutputFolder

FLOWERS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
LONG_SIDES = {"flowers": ((240, 320, 500), (0.21, 0.42, 0.37)), "imagenet": ((375, 500, 1024), (0.15, 0.75, 0.10))}


def class_names(count):
    return FLOWERS if count == len(FLOWERS) else tuple(f"n{index:08d}" for index in range(count))


def write_photo(job):
    path, seed, shape = job
    rng = np.random.default_rng(seed)
    sides, shares = LONG_SIDES[shape]
    long_side = int(rng.choice(sides, p=shares))
    width, height = (long_side, long_side * 3 // 4) if rng.random() < 0.7 else (long_side * 3 // 4, long_side)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    grain = rng.normal(0, 18, (height, width, 3))
    pixels = np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--out", help="folder to write train/ and val/ into (default: none, required unless --quick)")
    parser.add_argument(
        "--photos", type=positive_int, default=3094, help="photos in all (default: flower_photos' %(default)s)"
    )
    parser.add_argument(
        "--classes", type=positive_int, default=5, help="class folders (default: flower_photos' %(default)s)"
    )
    parser.add_argument(
        "--shape",
        choices=sorted(LONG_SIDES),
        default="flowers",
        help="photo sizes like flower_photos' or like ImageNet's (default: %(default)s)",
    )
    add_seed(parser, "the photos' sizes and content")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10 photos into a temporary folder that is removed afterwards, to check that the "
        "script runs (default: off)",
    )
    args = parser.parse_args(argv)
    if not args.out and not args.quick:
        raise UserError("--out is required (or --quick)")
    return args


def write_photo_set(out, photos, seed, classes, shape):
    """Write the photos into out/train and out/val (a folder of the user's is refused), and
    say so."""
    claimed = OutputFolder.claim(out, outputs=("train", "val"))
    names = class_names(classes)
    jobs = []
    for index in range(photos):
        side = "val" if (index // len(names)) % 10 == 0 else "train"
        folder = claimed.path(side, names[index % len(names)])
        make_folder(folder)
        jobs.append((os.path.join(folder, f"{index:07d}.jpg"), seed * 1_000_003 + index, shape))
    try:
        with ProcessPoolExecutor() as pool:
            list(pool.map(write_photo, jobs, chunksize=64))
    except OSError as error:  # a full disk
        raise UserError(f"cannot write the photos into {out}: {error.strerror or error}") from None
    total = sum(os.path.getsize(job[0]) for job in jobs)
    print(f"{photos} photos, {total / 2**20:.1f} MiB, {classes} classes, in {out}/train and {out}/val")


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:  # --quick's photos, removed afterwards
        if args.quick:
            args.out, args.photos = folder, 10
        write_photo_set(args.out, args.photos, args.seed, args.classes, args.shape)


if __name__ == "__main__":
    run_main(main)
