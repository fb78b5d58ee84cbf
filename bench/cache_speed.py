"""The JPEG cache against the raw cache on the same split, in one run: disk per photo, the
time to build each from the photos (same worker processes), how fast the JPEG cache decodes
(one CPU core, or batches on a GPU), and one real train.py epoch from each (images per
second, peak memory of the process).

    python bench/cache_speed.py --data flower_data       # about 7 minutes on 2 CPU cores
    python bench/cache_speed.py --data /tmp/set --device cuda    # bench/gpu.sh runs this
    python bench/cache_speed.py --quick                  # the bundled sample, to check it runs

Goals (issue 22): at most 30 KB a photo at 256 pixels (raw: 196 KB); built at least 4x
faster than the raw cache; training from it at least 0.9x the raw cache's images per second.
The caches are built into temporary folders, so both builds start cold.
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from zfnet.arguments import add_data, add_device, add_workers, script_parser
from zfnet.checkpoint import read_checkpoint
from zfnet.data import CACHE_SIDE, PhotoCache, scan_split
from zfnet.errors import run_main
from zfnet.jpeg_cache import JpegCache
from zfnet.recipes import PREPROCESS
from zfnet.runtime import pick_device
from zfnet.splitting import split_sample
from zfnet.tables import markdown_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOALS = {"kb_per_photo": 30, "build_speedup": 4.0, "training_ratio": 0.9}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_data(parser)
    add_workers(parser, where="for both caches")
    add_device(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the bundled sample split into a temporary folder, no worker processes, to check that the "
        "benchmark runs (default: off)",
    )
    return parser.parse_args(argv)


def build_time(kind, samples, workers):
    """`(seconds, bytes on disk per photo, cache)` of building the training side's cache
    of `kind` into an empty folder."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        if kind == "raw":
            cache = PhotoCache.load_or_build(samples, "train", PREPROCESS["input_size"], folder, workers)
        else:
            cache = JpegCache.load_or_build(samples, "train", CACHE_SIDE, folder, workers)
        seconds = time.perf_counter() - started
        size = sum(entry.stat().st_size for entry in os.scandir(folder))
        if kind == "jpeg":  # read it into memory before its folder goes
            cache = JpegCache(np.fromfile(cache.data, dtype=np.uint8), cache.offsets, cache.labels, cache.sizes)
    return seconds, size / len(samples), cache


def decode_rate(cache, device, batch_size=128, photos=1024):
    """Photos a second that this process decodes from the JPEG cache on `device`: Pillow on
    one CPU core, or nvJPEG a batch at a time on a GPU."""
    cache = cache.to(device)
    rows = torch.arange(min(photos, len(cache)))
    cache.take(rows[:8])
    synchronize(device)
    started = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        cache.take(rows[start : start + batch_size])
    synchronize(device)
    return len(rows) / (time.perf_counter() - started)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_epoch(data, cache, workers, device):
    """`(images a second, peak resident GB)` of one train.py epoch in a child process."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "train.py", "--data", data, "--out", out, "--epochs", "1"]
        command += ["--cache", cache, "--workers", str(workers), "--device", str(device)]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, command)
        speed = read_checkpoint(os.path.join(out, "last.pth"))["history"][0]["images_per_second"]
    return speed, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def measure(args):
    data = os.path.abspath(args.data)  # train.py's child process runs in the project folder
    _, samples = scan_split(data)
    train = samples["train"]
    device = pick_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{len(train)} training photos of {data}, {args.workers} worker processes, {where}")

    raw_seconds, raw_size, _ = build_time("raw", train, args.workers)
    jpeg_seconds, jpeg_size, jpeg = build_time("jpeg", train, args.workers)
    rate = decode_rate(jpeg, device)
    raw_speed, raw_peak = training_epoch(data, "raw", args.workers, device)
    jpeg_speed, jpeg_peak = training_epoch(data, "jpeg", args.workers, device)

    rows = [
        {
            "cache": name,
            "KB/photo": f"{size / 1e3:.1f}",
            "build s": f"{seconds:.1f}",
            "built photos/s": f"{len(train) / seconds:.0f}",
            "train img/s": f"{speed:.1f}",
            "peak RSS GB": f"{peak:.2f}",
        }
        for name, size, seconds, speed, peak in (
            ("raw", raw_size, raw_seconds, raw_speed, raw_peak),
            ("jpeg", jpeg_size, jpeg_seconds, jpeg_speed, jpeg_peak),
        )
    ]
    print("\n" + markdown_table(rows))
    decoder = "in batches of 128 (nvJPEG)" if device.type == "cuda" else "on one core (Pillow)"
    print(f"the JPEG cache decodes {rate:.0f} photos a second {decoder}, {CACHE_SIDE} pixels\n")

    kilobytes, speedup, ratio = jpeg_size / 1e3, raw_seconds / jpeg_seconds, jpeg_speed / raw_speed
    goals = [
        (
            f"JPEG cache at most {GOALS['kb_per_photo']} KB a photo",
            f"{kilobytes:.1f} KB",
            kilobytes <= GOALS["kb_per_photo"],
        ),
        (
            f"built at least {GOALS['build_speedup']:.0f}x faster than raw",
            f"{speedup:.2f}x",
            speedup >= GOALS["build_speedup"],
        ),
        (
            f"training at least {GOALS['training_ratio']}x raw's img/s",
            f"{ratio:.2f}x",
            ratio >= GOALS["training_ratio"],
        ),
    ]
    print(
        markdown_table([{"goal": goal, "measured": value, "met": "yes" if met else "no"} for goal, value, met in goals])
    )


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:  # --quick's split, removed afterwards
        if args.quick:
            args.data, args.workers = split_sample(os.path.join(folder, "data")), 0
        measure(args)


if __name__ == "__main__":
    run_main(main)
