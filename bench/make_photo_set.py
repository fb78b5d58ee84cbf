"""Write a synthetic split of JPEG photos shaped like flower_photos, for benchmarks on a
machine the real photos cannot travel to (bench/gpu.sh).

    python bench/make_photo_set.py --out /tmp/photo_set --photos 3094

Five class folders split 90/10 into train/ and val/. Sizes follow flower_photos: the long
side is 240, 320 or 500 pixels (21%, 42% and 37% of the photos), landscape or portrait at
4:3. Content is smooth colour fields with fine grain, so that the files (about 60 KB on average, as the real ones)
cost about what real photos cost to decode.
"""
import argparse
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
LONG_SIDES = (240, 320, 500)
LONG_SIDE_SHARES = (0.21, 0.42, 0.37)


def write_photo(job):
    path, seed = job
    rng = np.random.default_rng(seed)
    long_side = int(rng.choice(LONG_SIDES, p=LONG_SIDE_SHARES))
    width, height = (long_side, long_side * 3 // 4) if rng.random() < 0.7 else (long_side * 3 // 4, long_side)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    grain = rng.normal(0, 18, (height, width, 3))
    pixels = np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write train/ and val/ into")
    parser.add_argument("--photos", type=int, default=3094, help="photos in all (default: flower_photos' 3,094)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    jobs = []
    for index in range(args.photos):
        side = "val" if (index // len(CLASSES)) % 10 == 0 else "train"
        folder = os.path.join(args.out, side, CLASSES[index % len(CLASSES)])
        os.makedirs(folder, exist_ok=True)
        jobs.append((os.path.join(folder, f"{index:05d}.jpg"), args.seed * 1_000_003 + index))
    with ProcessPoolExecutor() as pool:
        list(pool.map(write_photo, jobs, chunksize=64))
    total = sum(os.path.getsize(path) for path, _ in jobs)
    print(f"{args.photos} photos, {total / 2**20:.0f} MiB, in {args.out}/train and {args.out}/val")


if __name__ == "__main__":
    main()
