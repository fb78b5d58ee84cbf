"""Part correspondence, the paper's section 5.2 and table 7: does masking the same part of
different photos change the network's features in the same way?

    python correspondence.py                            # the shipped example, samples/correspondence.json
    python correspondence.py parts.json --draws 50 --seed 1 --out runs/my-parts

For each part, its box is painted grey (the normalisation mean) in every photo as the network
sees it (224 x 224), and for photo i, eps_i = x_i - x~_i is the change of its feature vector
at layer l (layer 5: rectified maps before pooling; layer 7: the second fully connected
layer). Delta_l = sum over pairs i < j of H(sign(eps_i), sign(eps_j)), H the Hamming
distance: the number of features whose change goes in different directions in two photos.
Lower means more consistent. The baseline masks a random box of the same size in each photo
(each photo's own box size, at a uniformly random position), averaged over --draws draws.

The parts file (JSON), paths relative to it, boxes in each photo's own pixels as
[left, top, right, bottom] with right and bottom excluded, the same parts in every photo:

    {"photos": [{"photo": "flower_photos/sunflowers/a.jpg",
                 "parts": {"disc": [75, 85, 162, 175], "petals": [22, 105, 68, 145]}}, ...]}

A box holds whole numbers of pixels, none negative, with left < right and top < bottom, and
lies inside its photo; anything else stops the run in one line naming the file, the photo
and the part, as does a photo that cannot be decoded (missing, truncated, too large to
decode safely).

Prints the table and writes OUT/correspondence.csv and OUT/correspondence.png (the photos
with their boxes, and Delta per part against random boxes); OUT is correspondence/ beside the
checkpoint unless --out names another folder: a new or empty one, or one that holds zfnet's
outputs only.
"""

import torch

from zfnet.arguments import (
    add_batch_size,
    add_checkpoint,
    add_device,
    add_out,
    add_seed,
    out_folder,
    positive_int,
    script_parser,
)
from zfnet.errors import run_main
from zfnet.files import atomic_write_text
from zfnet.outputs import OutputFolder
from zfnet.studies import correspondence
from zfnet.studies.common import load_network, short_names
from zfnet.studies.correspondence import LAYERS, csv_rows, load_photos, measure, plot, read_parts, table
from zfnet.tables import csv_text
from zfnet.top9 import require_layers


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument(
        "parts",
        nargs="?",
        default="samples/correspondence.json",
        help="JSON file of photos and part boxes (default: %(default)s)",
    )
    add_checkpoint(parser)
    add_device(parser)
    parser.add_argument(
        "--draws", type=positive_int, default=10, help="random-box draws to average (default: %(default)s)"
    )
    add_seed(parser, "the random boxes")
    add_out(parser)
    add_batch_size(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    entries = read_parts(args.parts)
    model, checkpoint = load_network(args)
    require_layers(model, LAYERS, args.checkpoint)
    preprocess = checkpoint["preprocess"]
    photos = [photo for photo, _ in entries]
    labels = short_names(photos)
    inputs, boxes = load_photos(entries, preprocess, args.parts)
    out = OutputFolder.claim(
        out_folder(args, "correspondence"),
        inputs=[args.parts, args.checkpoint, *photos],
        outputs=correspondence.OUTPUTS,
    )
    table_path, figure = (out.path(name) for name in correspondence.OUTPUTS)

    generator = torch.Generator().manual_seed(args.seed)
    results, sizes = measure(model, inputs, boxes, args.draws, generator, args.batch_size)
    rows, text = table(results, list(boxes[0]), sizes, len(inputs), args.draws)
    atomic_write_text(table_path, csv_text(csv_rows(rows)))
    plot(inputs, boxes, [labels[photo] for photo in photos], rows, preprocess, figure)
    print(text)
    print(f"table and figure in {out.folder}/")


if __name__ == "__main__":
    run_main(main)
