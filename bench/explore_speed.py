"""Explorer speed and size: explore.py builds the whole site into a new folder (cold), then
again into the same folder (warm: everything reused from its cache), each timed as a user
runs it, start-up included; then the site's size on disk.

    python bench/explore_speed.py --checkpoint runs/zfnet/best.pth --images flower_data/val
    python bench/explore_speed.py --quick     # a check that it runs: a tiny random network, in seconds

The goals (issue 21): for the half-width network (688 feature maps in layers 1 to 5, each with
its top 9; 20 photo pages; pictures optimised for the 9 most active maps of each layer; every
map's growth when the run has snapshots) over the 310 validation photos, the cold build in at
most 20 minutes on the two-core CPU, the warm one in under 10 seconds, the site at most 80 MB.
The site is written into a temporary folder (deleted afterwards); the snapshots and figures of
the checkpoint's run folder are used as explore.py uses them. --one-thread adds a cold build on
one PyTorch thread. --keep FOLDER builds the cold and warm site there instead and keeps it,
for opening its pages afterwards. --quick builds 3 photo pages and no optimised picture for a narrow
random network of 64-pixel inputs over the bundled sample (the times say nothing then).
"""

import os
import subprocess
import sys
import tempfile
import time

from zfnet.arguments import add_checkpoint, add_device, add_images, non_negative_int, parse_with_quick, script_parser
from zfnet.checkpoint import quick_network
from zfnet.errors import UserError, run_main
from zfnet.recipes import PREPROCESS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUICK = {"images": os.path.join(ROOT, "samples", "flower_photos"), "photos": 3, "optimize": 0}
QUICK_PREPROCESS = {**PREPROCESS, "input_size": 64}  # a quarter of the side: a check in half a minute
GOALS = {"cold": "at most 1200", "warm": "under 10", "megabytes": 80}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(parser)
    add_images(parser)
    add_device(parser)
    parser.set_defaults(device="cpu")  # the goal is for the CPU
    parser.add_argument("--photos", default=20, type=non_negative_int, help="photo pages (default: %(default)s)")
    parser.add_argument(
        "--optimize", default=9, type=non_negative_int, help="optimised maps per layer (default: %(default)s)"
    )
    parser.add_argument(
        "--one-thread", action="store_true", help="also time a cold build on one PyTorch thread (default: off)"
    )
    parser.add_argument(
        "--keep",
        metavar="FOLDER",
        help="build the site into FOLDER, a new folder, and keep it (default: a temporary folder, deleted)",
    )
    args = parse_with_quick(
        parser, argv, QUICK, "on the bundled sample with a narrow random network instead of --checkpoint"
    )
    if args.keep and os.path.exists(args.keep):
        raise UserError(f"--keep {args.keep}: it exists, and a cold build needs a new folder; name another")
    return args


def timed_build(args, out, threads=None):
    """Seconds that `python explore.py` takes to build (or bring up to date) the site in
    `out`; with `threads`, PyTorch runs on that many (OMP_NUM_THREADS)."""
    command = [
        sys.executable,
        os.path.join(ROOT, "explore.py"),
        "--checkpoint",
        args.checkpoint,
        "--images",
        args.images,
        "--out",
        out,
        "--device",
        args.device,
        "--photos",
        str(args.photos),
        "--optimize",
        str(args.optimize),
    ]
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise UserError(f"explore.py failed: {result.stderr.strip().splitlines()[-1]}")
    return seconds


def footprint(folder):
    """`(files, megabytes on disk, megabytes of content)` of a folder tree."""
    sizes = [os.stat(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names]
    return len(sizes), sum(s.st_blocks * 512 for s in sizes) / 1e6, sum(s.st_size for s in sizes) / 1e6


def benchmark(args):
    with tempfile.TemporaryDirectory() as folder:
        out = args.keep or os.path.join(folder, "explore")
        builds = [
            ("cold: a new folder", timed_build(args, out), GOALS["cold"]),
            ("warm: the same folder again (cache reused)", timed_build(args, out), GOALS["warm"]),
        ]
        if args.one_thread:  # PyTorch's threads wait for each other: on a busy machine one can be the faster
            one = timed_build(args, os.path.join(folder, "one"), 1)
            builds.append(("cold, one PyTorch thread (OMP_NUM_THREADS=1)", one, ""))
        files, on_disk, content = footprint(out)
        cache = os.path.getsize(os.path.join(out, "cache.pt")) / 1e6
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\n{os.path.relpath(args.checkpoint)} over {os.path.relpath(args.images)}, {args.photos} photo pages, "
        f"{args.optimize} optimised maps a layer, "
        f"on {args.device} ({os.cpu_count()} cores, load average {load:.1f} at the end)\n"
    )
    print("| build | seconds | goal |")
    print("|---|---|---|")
    for name, seconds, goal in builds:
        print(f"| {name} | {seconds:.1f} | {goal} |")
    print("\n| site | files | MB on disk | MB of content | goal |\n|---|---|---|---|---|")
    print(f"| the whole folder | {files} | {on_disk:.1f} | {content:.1f} | at most {GOALS['megabytes']} MB |")
    print(f"| of which cache.pt | 1 | | {cache:.1f} | |")
    if args.keep:
        print(f"\nthe site, kept: {os.path.join(os.path.relpath(args.keep), 'index.html')}")


def main(argv=None):
    args = parse_args(argv)
    with quick_network(args, QUICK_PREPROCESS):
        benchmark(args)


if __name__ == "__main__":
    run_main(main)
