"""Prediction speed: predict.py over a folder against the model's in-memory inference
ceiling, and the cold-start time of classifying one photo against the blog tutorial's
predict.py.

    python bench/predict_speed.py --checkpoint runs/zfnet/best.pth --images flower_data/val
    python bench/predict_speed.py --quick    # the bundled sample and a random small network: seconds

(a) predict.py's own classify() (zfnet.predicting) over --max-images photos spread over
    --images (decoding in threads one batch ahead, float32 channels_last), after one warm-up
    batch;
(b) ceiling: the same model on random tensors already in memory, same batch and format;
(c) cold start, median of --repeats runs each: `python -c "import torch"`, the blog
    tutorial's predict.py (torchvision transforms and matplotlib imported, one photo), and
    `python predict.py PHOTO`.
All on the CPU.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from model import ZFNet
from zfnet.arguments import (
    add_batch_size,
    add_checkpoint,
    add_images,
    add_max_images,
    positive_int,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint, model_payload, save_checkpoint
from zfnet.data import scan_classes
from zfnet.errors import UserError, run_main
from zfnet.images import open_rgb
from zfnet.predicting import MEMORY_FORMAT, classify, find_photos
from zfnet.recipes import PREPROCESS
from zfnet.splitting import SAMPLE_DIR
from zfnet.top9 import spread_evenly

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The blog tutorial's predict.py, reduced to what runs without a display: the same imports
# (torchvision transforms, matplotlib), the same transform, one photo, the class and its probability.
TUTORIAL_PREDICT = """
import sys, torch
from PIL import Image
from torchvision import transforms
import matplotlib.pyplot as plt
from model import ZFNet
transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
img = torch.unsqueeze(transform(Image.open(sys.argv[1]).convert("RGB")), dim=0)
checkpoint = torch.load(sys.argv[2], weights_only=True)
model = ZFNet(**checkpoint["model_config"])
model.load_state_dict(checkpoint["model"])
model.eval()
with torch.no_grad():
    predict = torch.softmax(torch.squeeze(model(img)), dim=0)
print(checkpoint["classes"][int(torch.argmax(predict))], predict.max().item())
"""


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(parser)
    add_images(parser, help="folder of photos for the throughput test, searched recursively")
    parser.add_argument(
        "--photo",
        default=os.path.join(ROOT, "sunflower.jpg"),
        help="the photo for the cold-start test (default: the project's sunflower.jpg)",
    )
    add_max_images(parser, default=300)
    add_batch_size(parser)
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="cold starts of each kind, of which the median counts (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few photos of the bundled sample, a random small network and one cold start "
        "each, to check that the benchmark runs (default: off)",
    )
    return parser.parse_args(argv)


def wall_time(command, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def random_checkpoint(folder):
    """A small network with random weights for the sample's classes, saved in `folder`."""
    torch.manual_seed(0)
    classes = list(scan_classes(SAMPLE_DIR))
    path = os.path.join(folder, "random.pth")
    save_checkpoint(model_payload(ZFNet(num_classes=len(classes), fc_features=(64, 64)), classes, PREPROCESS, 0), path)
    return path


def measure(args):
    checkpoint_path, photo = os.path.abspath(args.checkpoint), os.path.abspath(args.photo)
    model, checkpoint = load_checkpoint(checkpoint_path)
    model = model.to(memory_format=MEMORY_FORMAT)
    paths = find_photos([args.images])
    paths = [paths[i] for i in spread_evenly(len(paths), args.max_images)]  # every class folder

    def classify_all(batch):
        return list(
            classify(
                model, batch, checkpoint["preprocess"], checkpoint["classes"], torch.device("cpu"), args.batch_size, 1
            )
        )

    open_rgb(photo)  # the cold starts' photo: one line now if it cannot be used, not a child's traceback
    classify_all(paths[: args.batch_size])
    started = time.perf_counter()
    results = classify_all(paths)
    ours = len(results) / (time.perf_counter() - started)
    failed = [result["error"] for result in results if "error" in result]
    if failed:  # a photo that is not decoded is no measure of speed
        raise UserError(f"{len(failed)} of the photos cannot be used (the first: {failed[0]}); choose another --images")

    inputs = torch.randn(args.batch_size, 3, 224, 224).contiguous(memory_format=MEMORY_FORMAT)
    with torch.inference_mode():
        model(inputs)
        started = time.perf_counter()
        rounds = max(1, len(paths) // args.batch_size)
        for _ in range(rounds):
            model(inputs)
    ceiling = rounds * args.batch_size / (time.perf_counter() - started)

    print(
        f"threads: {torch.get_num_threads()}; {len(paths)} photos from {args.images}, batch {args.batch_size}, "
        f"float32 channels_last\n"
    )
    print(f"{'throughput':46} {'img/s':>8} {'of ceiling':>10}")
    print(f"{'predict.py classify() over the folder':46} {ours:8.1f} {ours / ceiling:10.0%}")
    print(f"{'ceiling: random tensors in memory':46} {ceiling:8.1f} {1:10.0%}")

    python = sys.executable
    starts = [
        ("python -c 'import torch' (floor)", [python, "-c", "import torch"]),
        ("the blog tutorial's predict.py, one photo", [python, "-c", TUTORIAL_PREDICT, photo, checkpoint_path]),
        ("python predict.py PHOTO", [python, "predict.py", photo, "--checkpoint", checkpoint_path]),
    ]
    print(f"\n{'cold start, median of ' + str(args.repeats):46} {'seconds':>8}")
    for name, command in starts:
        print(f"{name:46} {wall_time(command, args.repeats):8.2f}")


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:  # --quick's network, removed afterwards
        if args.quick:
            args.checkpoint, args.images = random_checkpoint(folder), str(SAMPLE_DIR)
            args.max_images, args.batch_size, args.repeats = 8, 4, 1
        measure(args)


if __name__ == "__main__":
    run_main(main)
