"""Occlusion sensitivity, the paper's figure 7: which parts of a photo the network relies on.

    python occlusion.py sunflower.jpg
    python occlusion.py samples/flower_photos/daisy/*.jpg --size 40 --stride 4
    python occlusion.py photo.jpg --class roses --checkpoint runs/long/best.pth --out figures/

A grey square (the normalisation mean, so it carries no signal) slides over each photo as
the network sees it (224 x 224 pixels). For every position of the square the network
gives (a) the total activation of the layer-5 feature map that responds most strongly to
the unoccluded photo, (b) the probability of the photo's class and (c) its most probable
class. The class is --class when given, else the photo's folder when that is named after
a class, else the class the network predicts for the unoccluded photo.

The square starts at the top-left corner and moves by --stride until it has covered the
whole input, as in Captum's Occlusion; where (224 - size) is not a multiple of the stride,
the last row and column of positions hang over the edge and the square is cut off there
(23 x 23 positions with the defaults, the last ones 48 pixels wide). Every position is
exact, as if the square were painted on the photo and the whole network run, but only what
the square can change is computed (zfnet/studies/occlusion.py), in batches of --batch-size positions.

Writes, per photo, OUT/<name>.png (the photo; map (a); that feature map's strongest
activation on the unoccluded photo projected to pixels by the deconvnet, inside its
receptive field; map (b); map (c)) and OUT/<name>.npz
(the maps as arrays `feature`, `probability`, `prediction`, one cell per position, with
the positions `tops` and `lefts` of the square and what was measured). OUT is occlusion/
beside the checkpoint unless --out names another folder: a new or empty one, or one that
holds zfnet's outputs only (never a folder of photos). Every photo is decoded before the
work starts: one that cannot be (missing, truncated, too large to decode safely) stops the
run at once, in one line naming it.
"""

import functools

import numpy as np
from tqdm import tqdm

from zfnet.arguments import add_checkpoint, add_device, add_out, out_folder, positive_int, script_parser
from zfnet.errors import run_main
from zfnet.files import atomic_write
from zfnet.images import load_input
from zfnet.outputs import OutputFolder
from zfnet.studies.common import class_index, load_network, short_names
from zfnet.studies.occlusion import lowest_position, output_paths, outputs, photo_result, plot, square_positions


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("photos", nargs="+", help="photo files")
    add_checkpoint(parser)
    add_device(parser)
    parser.add_argument(
        "--size",
        type=positive_int,
        default=50,
        help="side of the grey square, in pixels of the 224-pixel input (default: %(default)s)",
    )
    parser.add_argument(
        "--stride", type=positive_int, default=8, help="step between square positions, in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="class whose probability map (b) shows (default: the photo's folder "
        "when it is a class name, else the predicted class)",
    )
    add_out(parser)
    # Not photos, as the shared --batch-size counts: one photo is occluded at a time.
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="square positions per forward pass (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model, checkpoint = load_network(args)
    classes, preprocess = checkpoint["classes"], checkpoint["preprocess"]
    if args.class_name is not None:
        class_index(args.class_name, classes)
    offsets = square_positions(preprocess["input_size"], args.size, args.stride)
    names = short_names(args.photos)
    # Every photo is read, and every output path checked, before the long passes start, so
    # that a bad photo (missing, truncated, too large to decode) or a bad --out fails at once.
    inputs = {path: load_input(path, preprocess) for path in args.photos}
    folder = out_folder(args, "occlusion")
    out = OutputFolder.claim(folder, inputs=[*args.photos, args.checkpoint], outputs=outputs(folder))
    paths = output_paths(out, names)
    device = next(model.parameters()).device

    for path, x in tqdm(inputs.items(), desc="photos", unit="photo", disable=len(inputs) == 1):
        x = x.to(device)
        result, strongest = photo_result(
            model, x, path, classes, args.class_name, args.size, args.stride, args.batch_size
        )
        figure, maps = paths[path]
        atomic_write(maps, functools.partial(np.savez, **result))
        plot(figure, names[path], model, x, preprocess, result, strongest)
        lowest = lowest_position(result)
        target = result["target"]
        print(
            f"{path}: P({classes[target]}) {result['unoccluded_probability'][target]:.3f} unoccluded, "
            f"{result['probability'][lowest]:.3f} at its lowest (square at y={offsets[lowest[0]]}, "
            f"x={offsets[lowest[1]]}); {figure}, {maps}"
        )


if __name__ == "__main__":
    run_main(main)
