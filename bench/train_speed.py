"""Training throughput on this machine: the blog tutorial's recipe, train.py's pipeline, and
the ceiling of the same model on random tensors already in memory, on the same data in one run.

    python bench/train_speed.py --data flower_data            # about 4 minutes on 2 CPU cores
    python bench/train_speed.py --data flower_data --steps 10 --no-full-epoch   # a quick look
    python bench/train_speed.py --quick                       # the bundled sample, a few steps
    bench/gpu.sh                                              # the same on a CUDA GPU

(a) tutorial recipe: torchvision ImageFolder's work (zfnet.data.TutorialPhotos), decoding
    JPEGs with PIL in the training process (num_workers=0), RandomResizedCrop and flip per
    image, contiguous float32.
(b) ours: train.py's own data path (the decoded uint8 cache, crops and flips on whole
    batches, on the GPU when there is one) and its own step, channels_last, in float32 and,
    where the hardware runs it natively, bfloat16.
(c) ceiling: train_step on one random batch held in memory, same precision and format.
Then, unless --no-full-epoch, one real epoch of `train.py` in a child process, for its
images per second and its peak resident memory on the whole training split.
"""

import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from torchvision import transforms

from model import ZFNet
from zfnet.arguments import (
    add_batch_size,
    add_data,
    add_device,
    add_workers,
    positive_int,
    script_parser,
)
from zfnet.checkpoint import read_checkpoint
from zfnet.data import PhotoCache, TutorialPhotos, cache_folder, scan_split, train_inputs
from zfnet.errors import run_main
from zfnet.recipes import PREPROCESS
from zfnet.runtime import native_bfloat16, pick_device
from zfnet.splitting import split_sample
from zfnet.training import MEMORY_FORMAT, train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_data(parser)
    add_batch_size(parser, default=32)
    parser.add_argument(
        "--steps", type=positive_int, default=30, help="timed steps per measurement (default: %(default)s)"
    )
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps first (default: %(default)s)")
    parser.add_argument(
        "--no-full-epoch",
        action="store_true",
        help="skip the real train.py epoch (default: train one after the timed steps)",
    )
    add_device(parser)
    add_workers(parser, where="here and in train.py")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the bundled sample split into a temporary folder, batches of 4, 1 timed step after "
        "1 warm-up step, no worker processes, the real epoch in float32 only, to check that the "
        "benchmark runs (default: off)",
    )
    return parser.parse_args(argv)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(make_batch, device, bfloat16, memory_format, steps, warmup):
    """Images per second over `steps` steps of make_batch() and train.py's train_step."""
    torch.manual_seed(0)
    model = ZFNet(num_classes=5).to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16)
    images = 0
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            started = time.perf_counter()
        inputs, labels = make_batch(step)
        train_step(
            model,
            optimizer,
            scheduler,
            inputs.to(device).contiguous(memory_format=memory_format),
            labels.to(device),
            autocast,
            label_smoothing=0.0,
        )
        if step >= warmup:
            images += len(labels)
    synchronize(device)
    return images / (time.perf_counter() - started)


def tutorial_recipe(data, device, batch_size, steps, warmup):
    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )
    dataset = TutorialPhotos(os.path.join(data, "train"), transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)

    def forever():
        while True:
            yield from loader

    batches = forever()
    return timed_steps(lambda step: next(batches), device, False, torch.contiguous_format, steps, warmup)


def our_pipeline(cache, device, batch_size, steps, warmup, bfloat16):
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(cache), generator=generator)

    def batch(step):
        rows = order[(step * batch_size) % len(order) :][:batch_size]
        return train_inputs(cache, rows, generator, PREPROCESS), cache.labels[rows.to(cache.labels.device)]

    return timed_steps(batch, device, bfloat16, MEMORY_FORMAT, steps, warmup)


def ceiling(device, batch_size, steps, warmup, bfloat16, memory_format):
    inputs = torch.randn(batch_size, 3, 224, 224, device=device)
    labels = torch.randint(0, 5, (batch_size,), device=device)
    return timed_steps(lambda step: (inputs, labels), device, bfloat16, memory_format, steps, warmup)


def full_epoch(data, device, precision, workers):
    """images/s of one real train.py epoch on the whole split, and the child's peak RSS in GiB."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "train.py",
            "--data",
            data,
            "--out",
            out,
            "--epochs",
            "1",
            "--precision",
            precision,
            "--device",
            str(device),
            "--workers",
            str(workers),
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        speed = read_checkpoint(os.path.join(out, "last.pth"))["history"][0]["images_per_second"]
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    return speed, peak_gib


def measure(args):
    device = pick_device(args.device)
    data = os.path.abspath(args.data)  # train.py's child process runs in the project folder
    bf16 = native_bfloat16(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{where}; native bfloat16: {bf16}; batch {args.batch_size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up steps each"
    )

    _, samples = scan_split(data)
    started = time.perf_counter()
    cache = PhotoCache.load_or_build(
        samples["train"], "train", PREPROCESS["input_size"], cache_folder(data), workers=args.workers
    )
    print(
        f"train cache ready in {time.perf_counter() - started:.1f} s ({len(cache)} photos; "
        f"built once per split, then memory-mapped)"
    )
    cache = cache.to(device)
    timing = (args.batch_size, args.steps, args.warmup)

    rows = [
        (
            "tutorial recipe: ImageFolder + PIL, workers=0",
            "float32",
            "contiguous",
            tutorial_recipe(data, device, *timing),
            "ceiling float32 contiguous",
        )
    ]
    rows.append(
        (
            "ceiling float32 contiguous",
            "float32",
            "contiguous",
            ceiling(device, *timing, False, torch.contiguous_format),
            None,
        )
    )
    for precision in ["float32", "bfloat16"] if bf16 else ["float32"]:
        use_bf16 = precision == "bfloat16"
        rows.append(
            (
                "train.py pipeline",
                precision,
                "channels_last",
                our_pipeline(cache, device, *timing, use_bf16),
                f"ceiling {precision} channels_last",
            )
        )
        rows.append(
            (
                f"ceiling {precision} channels_last",
                precision,
                "channels_last",
                ceiling(device, *timing, use_bf16, MEMORY_FORMAT),
                None,
            )
        )

    speeds = {name: speed for name, _, _, speed, _ in rows}
    tutorial_speed = rows[0][3]
    print(f"\n{'pipeline':46} {'precision':9} {'format':13} {'img/s':>7} {'x tutorial':>10} {'of ceiling':>10}")
    for name, precision, memory_format, speed, ceiling_name in rows:
        share = f"{speed / speeds[ceiling_name]:10.0%}" if ceiling_name else f"{'':10}"
        print(f"{name:46} {precision:9} {memory_format:13} {speed:7.1f} {speed / tutorial_speed:10.2f} {share}")

    if not args.no_full_epoch:
        print("\none real epoch of train.py on the whole training split (child process):")
        # --quick checks that the child runs: one precision shows that, the other adds a whole epoch
        for precision in ["fp32", "bf16"] if bf16 and not args.quick else ["fp32"]:
            speed, peak = full_epoch(data, device, precision, args.workers)
            print(
                f"  --precision {precision}: {speed:.1f} img/s ({speed / tutorial_speed:.2f}x the tutorial recipe), "
                f"peak resident memory of the children so far {peak:.2f} GiB"
            )


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:  # --quick's split, removed afterwards
        if args.quick:
            args.data = split_sample(os.path.join(folder, "data"))
            args.batch_size, args.steps, args.warmup, args.workers = 4, 1, 1, 0
        measure(args)


if __name__ == "__main__":
    run_main(main)
