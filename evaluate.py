"""Top-1 and top-5 error of a trained ZFNet over a folder of class folders, measured as the
paper measured them (Zeiler & Fergus 2014, table 2): the whole photo, its centre crop, and
the 10 crops (4 corners and the centre, each mirrored) with their softmax averaged.

    python evaluate.py                                   # flower_data/val, the newest run
    python evaluate.py --images imagenet/val --checkpoint runs/paper/best.pth --workers 8

The folder's class folders must be among the checkpoint's classes (a subset is fine). A photo
that cannot be used is named on stderr and left out; the exit status is then 1.
"""

import sys
from functools import partial

from tqdm import tqdm

from zfnet.arguments import (
    DEFAULT_IMAGES,
    add_batch_size,
    add_checkpoint,
    add_device,
    non_negative_int,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint
from zfnet.errors import UserError, run_main
from zfnet.evaluation import VIEWS, evaluate_folder, labelled_photos
from zfnet.runtime import pick_device
from zfnet.tables import markdown_table


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(parser)
    parser.add_argument(
        "--images",
        default=DEFAULT_IMAGES,
        help="folder with one sub-folder of photos per class, named as in training (default: %(default)s)",
    )
    add_batch_size(parser, default=32)
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=2,
        help="processes that decode the photos beside the network's (default: %(default)s)",
    )
    add_device(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    samples = labelled_photos(args.images, checkpoint["classes"])
    progress = partial(tqdm, desc="evaluating", unit="batch", leave=False)
    right, counted, errors = evaluate_folder(
        model, samples, checkpoint["preprocess"], device, args.batch_size, args.workers, progress
    )
    if not counted:
        raise UserError(f"none of the {len(samples)} photos in {args.images} could be used")
    print(f"{args.checkpoint} on {counted} photos of {args.images} ({len(checkpoint['classes'])} classes)\n")
    rows = [{"view": view, "top-1 error": f"{1 - right[view][0] / counted:.2%}"} for view in VIEWS]
    if len(checkpoint["classes"]) > 5:  # with 5 or fewer the right class is always among the top 5
        for row, view in zip(rows, VIEWS):
            row["top-5 error"] = f"{1 - right[view][1] / counted:.2%}"
    print(markdown_table(rows), end="")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
