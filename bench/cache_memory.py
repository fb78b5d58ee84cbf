"""Does a training run's memory grow with its data set? One epoch of train.py with the JPEG
cache on synthetic ImageNet-shaped sets of two sizes (bench/make_photo_set.py --shape
imagenet), same classes, photo sizes and batch, each run's peak resident memory measured.

    python bench/cache_memory.py                   # 5,000 and 20,000 photos, about 10 minutes on 2 cores
    python bench/cache_memory.py --quick           # 60 and 240 photos, to check it runs

The network is narrowed (layers of 8-16 maps, 32 features) so that an epoch of 20,000 photos
takes minutes on a CPU: what is measured is the data path, whose memory is what could grow.
Goal (issue 22): the larger set's peak within 10% of the smaller's.
"""

import os
import subprocess
import sys
import tempfile
import time

from zfnet.arguments import add_workers, positive_ints, script_parser
from zfnet.errors import UserError, run_main
from zfnet.tables import markdown_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL = 1.10
NARROW = ["--conv-channels", "8,16,16,16,16", "--fc-features", "32,32"]


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument(
        "--photos",
        type=positive_ints,
        default=[5000, 20000],
        metavar="N1,N2",
        help="the two set sizes (default: 5000,20000)",
    )
    parser.add_argument("--classes", type=int, default=100, help="class folders in each set (default: %(default)s)")
    add_workers(parser, where="for the cache and the sets")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="sets of 60 and 240 photos, 10 classes, to check that the benchmark runs (default: off)",
    )
    args = parser.parse_args(argv)
    if len(args.photos) != 2:
        raise UserError("--photos takes two set sizes, such as 5000,20000")
    return args


def run(command):
    """`(seconds, peak resident MB)` of a child process that must succeed."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    errors = child.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise UserError(f"{' '.join(command[1:3])} failed: {errors.strip().splitlines()[-1:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def measure(photos, classes, workers, folder):
    data, out = os.path.join(folder, "data"), os.path.join(folder, "run")
    python = sys.executable
    run(
        [python, "bench/make_photo_set.py", "--out", data, "--photos", str(photos), "--classes", str(classes)]
        + ["--shape", "imagenet"]
    )
    command = [python, "train.py", "--data", data, "--out", out, "--epochs", "1", "--cache", "jpeg"]
    seconds, peak = run(command + ["--workers", str(workers), "--device", "cpu", *NARROW])
    cache = sum(entry.stat().st_size for entry in os.scandir(os.path.join(data, ".cache"))) / 1e6
    return {
        "photos": photos,
        "classes": classes,
        "JPEG cache MB": f"{cache:.0f}",
        "train.py s (build + epoch)": f"{seconds:.0f}",
        "peak RSS MB": f"{peak:.0f}",
    }, peak


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.photos, args.classes, args.workers = [60, 240], 10, 0
    rows, peaks = [], []
    for photos in args.photos:
        with tempfile.TemporaryDirectory() as folder:
            row, peak = measure(photos, args.classes, args.workers, folder)
        rows.append(row)
        peaks.append(peak)
        print(f"{photos} photos: peak {peak:.0f} MB", flush=True)
    print("\n" + markdown_table(rows))
    ratio = peaks[1] / peaks[0]
    met = "yes" if ratio <= GOAL else "no"
    print(f"peak RSS of {args.photos[1]} photos / {args.photos[0]} photos: {ratio:.3f} (goal at most {GOAL}: {met})")


if __name__ == "__main__":
    run_main(main)
