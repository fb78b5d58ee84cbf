"""Invariance to translation, scale and rotation, the paper's figure 5.

    python invariance.py                              # one photo per class from flower_data/val
    python invariance.py sunflower.jpg samples/flower_photos/daisy/*.jpg
    python invariance.py --translate=-60:60:5 --scale 0.5:1.5:0.05 --rotate 0:360:5

Each photo, as the network sees it (224 x 224), is moved vertically (pixels, positive moves
it down), scaled about its centre (factors above 1 enlarge it) and rotated about its centre
(degrees anticlockwise), each over a range of steps START:STOP:STEP (STOP included; at most
1000 steps, scale factors above 0, shifts short of the input's side). The transformations
resample the network's input by bilinear interpolation; what they uncover (the strip a
translation leaves, the border around a shrunken photo, the corners a rotation exposes) is
filled with the normalisation mean: grey, 0 in input space, the grey of occlusion.py's
square. Enlarging crops the photo, as a zoom does.

For every transformed photo the script measures the Euclidean distance between its feature
vector and the original's at layer 1 (rectified maps, before pooling) and at layer 7, and
the probability of the true class (--class, else the photo's folder when it is named after a
class, else the class predicted for the original). It writes OUT/invariance.png (rows:
translation, scale, rotation; columns: layer-1 distance, layer-7 distance, probability of
the true class; one curve per photo), OUT/invariance.csv (every value) and OUT/summary.txt,
the findings it prints: measured, for each of the paper's claims. OUT is invariance/ beside
the checkpoint unless --out names another folder: a new or empty one, or one that holds
zfnet's outputs only. Every photo is decoded before the work starts: one that cannot be
(missing, truncated, too large to decode safely) stops the run at once, in one line naming it.
"""

from zfnet.arguments import add_batch_size, add_checkpoint, add_device, add_images, add_out, out_folder, script_parser
from zfnet.errors import UserError, run_main
from zfnet.files import atomic_write_text
from zfnet.images import load_input
from zfnet.outputs import OutputFolder
from zfnet.studies import invariance
from zfnet.studies.common import class_index, load_network, short_names
from zfnet.studies.invariance import (
    LAYERS,
    check_translation,
    closeness,
    default_photos,
    findings,
    measure_photos,
    plot,
    scale_steps,
    steps,
    table_rows,
)
from zfnet.tables import csv_text
from zfnet.top9 import require_layers

RANGE_FLAGS = {"translation": "--translate", "scale": "--scale", "rotation": "--rotate"}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("photos", nargs="*", help="photo files (default: the first photo of each class in --images)")
    add_checkpoint(parser)
    add_device(parser)
    add_images(parser, help="folder with one sub-folder of photos per class, that the default photos come from")
    parser.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="true class of every photo (default: the photo's folder when it is a class name, "
        "else the class predicted for the original)",
    )
    # String defaults go through `steps` as given ones do, so the help shows the real ones.
    parser.add_argument(
        "--translate",
        type=steps,
        default="-60:60:10",
        metavar="START:STOP:STEP",
        help="vertical shifts in pixels, positive moves down (default: %(default)s; write "
        "--translate=-40:40:5 when START is negative)",
    )
    parser.add_argument(
        "--scale",
        type=scale_steps,
        default="0.6:1.4:0.1",
        metavar="START:STOP:STEP",
        help="scale factors about the centre, above 0 (default: %(default)s)",
    )
    parser.add_argument(
        "--rotate",
        type=steps,
        default="0:360:10",
        metavar="START:STOP:STEP",
        help="anticlockwise rotations about the centre in degrees (default: %(default)s)",
    )
    add_out(parser)
    add_batch_size(parser)
    args = parser.parse_args(argv)
    args.ranges = {"translation": args.translate, "scale": args.scale, "rotation": args.rotate}
    for kind, amounts in args.ranges.items():
        if all(closeness(kind, amount) == 0 for amount in amounts):
            raise UserError(f"{RANGE_FLAGS[kind]} needs at least one step that changes the photo")
    return args


def main(argv=None):
    args = parse_args(argv)
    model, checkpoint = load_network(args)
    classes, preprocess = checkpoint["classes"], checkpoint["preprocess"]
    require_layers(model, LAYERS, args.checkpoint)
    if args.class_name is not None:
        class_index(args.class_name, classes)
    check_translation(args.translate, preprocess["input_size"])
    photos = args.photos or default_photos(args.images, classes)
    labels = short_names(photos)
    # Every photo is read, and every output path checked, before the long passes start, so
    # that a bad photo (missing, truncated, too large to decode) or a bad --out fails at once.
    inputs = {path: load_input(path, preprocess) for path in photos}
    out = OutputFolder.claim(
        out_folder(args, "invariance"), inputs=[*photos, args.checkpoint], outputs=invariance.OUTPUTS
    )
    figure, table, summary_path = (out.path(name) for name in invariance.OUTPUTS)
    results, targets, originals = measure_photos(
        model, inputs, labels, classes, args.class_name, args.ranges, args.batch_size
    )

    plot(results, targets, classes, figure)
    atomic_write_text(table, csv_text(table_rows(results, targets, classes)))
    summary = "\n".join(findings(results, targets, originals, classes)) + "\n"
    atomic_write_text(summary_path, summary)
    print(summary + f"figure, values and summary in {out.folder}/")


if __name__ == "__main__":
    run_main(main)
