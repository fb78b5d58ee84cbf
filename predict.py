"""Classify photos with a trained ZFNet.

    python predict.py sunflower.jpg
    python predict.py a.jpg b.jpg photos/ --topk 3
    python predict.py photos/ --json > predictions.json
    python predict.py sunflower.jpg --topk 5 --plot prediction.png

Folders are searched recursively for photos. A photo that cannot be used (not an image,
truncated, too large to decode safely, a link to nowhere) is reported on stderr (and in --json
output) and the others are still classified; the exit status is then 1. Anything that stops
the whole run (a bad flag, checkpoint or --plot) is one line on stderr and exit status 2.
--plot never replaces one of the inputs or a file that is not a PNG.
"""

import json
import sys

from zfnet.arguments import add_batch_size, add_checkpoint, add_device, positive_int, script_parser
from zfnet.checkpoint import load_checkpoint
from zfnet.errors import report, run_main
from zfnet.predicting import MEMORY_FORMAT, check_figure_path, classify, find_photos, plot_predictions
from zfnet.runtime import pick_device


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("photos", nargs="+", help="photo files and/or folders of photos, searched recursively")
    add_checkpoint(parser)
    parser.add_argument(
        "--topk",
        type=positive_int,
        default=1,
        help="how many of the most probable classes to show; more than the checkpoint has "
        "shows them all (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON list with an object per photo (default: a line per photo)"
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="save a figure of each photo beside a bar chart of its --topk classes (default: no figure)",
    )
    add_batch_size(parser)
    add_device(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    paths = find_photos(args.photos)
    if args.plot:
        check_figure_path(args.plot, args.photos, [*paths, args.checkpoint])
    device = pick_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    model = model.to(memory_format=MEMORY_FORMAT)
    # The run's human-readable names where it has them (train.py --class-names), else its folders'.
    classes, preprocess = checkpoint.get("class_names", checkpoint["classes"]), checkpoint["preprocess"]
    if args.topk > len(classes):
        print(
            f"note: --topk {args.topk} cut to the {len(classes)} classes that {args.checkpoint} knows", file=sys.stderr
        )
        args.topk = len(classes)

    results, failures = [], 0
    for result in classify(model, paths, preprocess, classes, device, args.batch_size, args.topk):
        results.append(result)
        if "error" in result:
            failures += 1
            report(result["error"])
        elif not args.json:
            ranked = " | ".join(f"{entry['class']} {entry['probability']:.3f}" for entry in result["top"])
            print(f"{result['path']}: {ranked}", flush=True)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    classified = [result for result in results if "error" not in result]
    if args.plot and classified:
        plot_predictions(classified, args.plot)
        # stdout stays one JSON document with --json
        print(f"figure saved to {args.plot}", file=sys.stderr if args.json else sys.stdout)
    if failures:
        sys.exit(1)  # the others were classified: not the one-line failure of exit status 2


if __name__ == "__main__":
    run_main(main)
