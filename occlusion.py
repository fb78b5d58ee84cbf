"""Occlusion sensitivity, the paper's figure 7: which parts of a photo the network relies on.

    python occlusion.py sunflower.jpg
    python occlusion.py samples/flower_photos/daisy/*.jpg --size 25,50,112 --stride 4
    python occlusion.py photo.jpg --class roses --checkpoint runs/long/best.pth --out figures/
    python occlusion.py --summary flower_data/val      # does covering the object lose the class?

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
the positions `tops` and `lefts` of the square and what was measured); with several --size,
OUT/<name>-<size>px.png and .npz for each.

--summary FOLDER measures the paper's point over every photo of FOLDER (searched recursively)
for each --size (default 25, 50 and 112 pixels): the probability of the photo's class with
nothing covered, with the most damaging square covered (the lowest over the slide) and with a
square at a random position of the same slide (drawn with --seed); their mean and spread,
and how often the class is lost. Writes OUT/occlusion_summary.csv (per size),
OUT/occlusion_photos.csv (per photo and size) and OUT/occlusion_summary.png, and names the
photo the most damaging square hurts most (for a figure 7 where the effect exists). OUT is occlusion/
beside the checkpoint unless --out names another folder: a new or empty one, or one that
holds zfnet's outputs only (never a folder of photos). Every photo is decoded before the
work starts: one that cannot be (missing, truncated, too large to decode safely) stops the
run at once, in one line naming it.
"""

import functools
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from zfnet.arguments import (
    add_checkpoint,
    add_device,
    add_max_images,
    add_out,
    add_seed,
    out_folder,
    positive_int,
    positive_ints,
    script_parser,
)
from zfnet.errors import UserError, run_main
from zfnet.files import atomic_write, atomic_write_text
from zfnet.images import find_images, load_input
from zfnet.outputs import OutputFolder
from zfnet.studies import occlusion
from zfnet.studies.common import class_index, judged_class, load_network, short_names
from zfnet.tables import csv_text
from zfnet.top9 import spread_evenly

SUMMARY_SIZES = [25, 50, 112]


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("photos", nargs="*", help="photo files (or give --summary)")
    parser.add_argument(
        "--summary", metavar="FOLDER", help="summarise over every photo of this folder instead (default: none)"
    )
    add_checkpoint(parser)
    add_device(parser)
    parser.add_argument(
        "--size",
        type=positive_ints,
        metavar="S1,S2,...",
        help="sides of the grey square, in pixels of the 224-pixel input (default: 50 per photo, "
        f"{','.join(map(str, SUMMARY_SIZES))} for --summary)",
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
    add_max_images(parser)
    add_seed(parser, what="the random squares of --summary")
    args = parser.parse_args(argv)
    if bool(args.photos) == bool(args.summary):
        parser.error(
            "give photo files or --summary FOLDER, not both" if args.photos else "give photo files or --summary FOLDER"
        )
    args.size = list(dict.fromkeys(args.size or (SUMMARY_SIZES if args.summary else [50])))
    return args


def each_photo(args, model, classes, preprocess):
    names = short_names(args.photos)
    # Every photo is read, and every output path checked, before the long passes start, so
    # that a bad photo (missing, truncated, too large to decode) or a bad --out fails at once.
    inputs = {path: load_input(path, preprocess) for path in args.photos}
    folder = out_folder(args, "occlusion")
    out = OutputFolder.claim(folder, inputs=[*args.photos, args.checkpoint], outputs=occlusion.outputs(folder))
    suffixes = {size: "" if len(args.size) == 1 else f"-{size}px" for size in args.size}
    paths = {size: occlusion.output_paths(out, names, suffix) for size, suffix in suffixes.items()}
    device = next(model.parameters()).device

    for path, x in tqdm(inputs.items(), desc="photos", unit="photo", disable=len(inputs) == 1):
        x = x.to(device)
        for size in args.size:
            result, strongest = occlusion.photo_result(
                model, x, path, classes, args.class_name, size, args.stride, args.batch_size
            )
            figure, maps = paths[size][path]
            atomic_write(maps, functools.partial(np.savez, **result))
            occlusion.plot(figure, names[path], model, x, preprocess, result, strongest)
            lowest, target, offsets = occlusion.lowest_position(result), result["target"], result["tops"]
            print(
                f"{path}, {size}-pixel square: P({classes[target]}) {result['unoccluded_probability'][target]:.3f} "
                f"unoccluded, {result['probability'][lowest]:.3f} at its lowest (square at y={offsets[lowest[0]]}, "
                f"x={offsets[lowest[1]]}); {figure}, {maps}"
            )


def summary(args, model, classes, preprocess):
    paths = find_images(args.summary)
    paths = [paths[i] for i in spread_evenly(len(paths), args.max_images or len(paths))]
    if len(paths) < 2:
        raise UserError(f"--summary {args.summary}: a summary needs at least 2 photos (it has {len(paths)})")
    folder = out_folder(args, "occlusion")
    out = OutputFolder.claim(folder, inputs=[args.summary, *paths, args.checkpoint], outputs=occlusion.outputs(folder))
    table_path, photos_path, figure = (out.path(name) for name in occlusion.SUMMARY_OUTPUTS)
    device, generator = next(model.parameters()).device, torch.Generator().manual_seed(args.seed)
    rows = []
    for path in tqdm(paths, desc="photos", unit="photo"):
        try:
            x = load_input(path, preprocess).to(device)
        except UserError as error:
            print(f"note: skipped {error}", file=sys.stderr)
            continue
        with torch.inference_mode():
            target = judged_class(path, classes, args.class_name, model(x[None]).softmax(1)[0].cpu())
        for size in args.size:
            found = occlusion.damage(model, x, target, size, args.stride, args.batch_size, generator)
            rows.append({"photo": os.path.relpath(path), "class": classes[target], "target": target, **found})
    table = occlusion.summarise(rows)
    occlusion.plot_summary(table, figure, args.stride, os.path.relpath(args.summary))
    named = [{**row, **{k: classes[v] for k, v in row.items() if k.endswith("prediction")}} for row in rows]
    atomic_write_text(photos_path, csv_text([{k: v for k, v in row.items() if k != "target"} for row in named]))
    atomic_write_text(table_path, csv_text(table))
    for entry in table:
        means = ", ".join(
            f"{case} {entry[case + '_mean']:.3f} +- {entry[case + '_sd']:.3f}" for case in occlusion.CASES
        )
        lost = (
            f"class lost on {entry['most_damaging_wrong']:.0%} of photos (random square: {entry['random_wrong']:.0%})"
        )
        print(f"{entry['size']}-pixel square, P(class) over {entry['photos']} photos: {means}; {lost}")
    worst = max(
        rows, key=lambda row: (row["size"] == args.size[len(args.size) // 2], row["unoccluded"] - row["most_damaging"])
    )
    print(
        f"most hurt by a {worst['size']}-pixel square: {worst['photo']} ({worst['class']} {worst['unoccluded']:.3f} -> "
        f"{worst['most_damaging']:.3f}); wrote {table_path}, {photos_path} and {figure}"
    )


def main(argv=None):
    args = parse_args(argv)
    model, checkpoint = load_network(args)
    classes, preprocess = checkpoint["classes"], checkpoint["preprocess"]
    if args.class_name is not None:
        class_index(args.class_name, classes)
    for size in args.size:
        occlusion.square_positions(preprocess["input_size"], size, args.stride)
    (summary if args.summary else each_photo)(args, model, classes, preprocess)


if __name__ == "__main__":
    run_main(main)
