"""A browsable microscope of a trained network: a static site of plain HTML, CSS and pictures
(no JavaScript, nothing fetched from the network) that opens from file://.

    python explore.py                                      # runs/zfnet/best.pth over flower_data/val
    python explore.py --photos 40                          # 40 photo pages instead of 20
    python explore.py --photos sunflower.jpg my/rose.jpg   # pages for these photos too
    python explore.py --photos 5 --fresh                   # only 5 photo pages, the earlier ones dropped
    python explore.py --optimize 9                         # what the 9 most active maps a layer want to see
    python explore.py --serve                              # also serve it on 127.0.0.1 (Ctrl-C stops)

Pages: the overview (index.html: the run and its settings, training curves and confusion
matrix, accuracy per class on --images, the architecture, the misclassified photos with their
top 3); a page per convolutional layer (every feature map as a card, most active first, with
its mean activation per class; layer 1 also its filters and their smoothness); a page per
feature map (layerN/mapNNN.html: its top 9 projected by the deconvnet beside their image
patches, the paper's figure 2, then by guided backpropagation and the gradient; the classes
that drive it; the maps of the layer below it is most strongly wired to; for the --optimize
most active maps of each layer, a picture optimised to excite it; with snapshots, how it
grew); the sanity checks (sanity.html: how much of each rule's pictures survives
re-initialising the network's layers, measured on the top 9 of each layer's 4 most active
maps); a page per chosen photo (its top 5, the three occlusion maps of figure 7, and each
layer's most active maps on it projected by the deconvnet, guided backpropagation and the
plain gradient); with training snapshots in the run folder, figure 4 (evolution.html); and
links to the other tools' figures in the run folder.

By default --photos 20 picks 20 photos of --images, half of them misclassified ones where
there are that many. Pages built earlier for the same checkpoint and photos are kept: --photos
adds pages, and --fresh starts the photo pages afresh. The site goes into --out (default:
explore/ beside the checkpoint), a new or empty folder or one explore.py wrote, outside
--images. A re-run for the same checkpoint and photos reuses what it computed before
(cache.pt in the folder) and rewrites only the pages. A photo that cannot be decoded is skipped with a note.
"""

import os

from zfnet.arguments import (
    add_batch_size,
    add_checkpoint,
    add_device,
    add_images,
    add_out,
    non_negative_int,
    script_parser,
)
from zfnet.errors import run_main
from zfnet.site.build import build, serve

DEFAULT_PHOTOS = 20
DEFAULT_OPTIMISED = 3


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(parser)
    add_images(
        parser,
        help="folder of photos, searched recursively; class folders named after the checkpoint's "
        "classes give the accuracy per class",
    )
    add_out(parser)
    add_device(parser)
    add_batch_size(parser, default=32)
    parser.add_argument(
        "--photos",
        nargs="+",
        default=[str(DEFAULT_PHOTOS)],
        metavar="N_OR_PHOTO",
        help=f"how many photos of --images get a page, or the photo files that do (default: {DEFAULT_PHOTOS})",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="drop the photo pages of earlier builds that --photos does not ask for again (default: keep them, "
        "so that --photos adds pages)",
    )
    parser.add_argument(
        "--optimize",
        default=DEFAULT_OPTIMISED,
        type=non_negative_int,
        metavar="N",
        help="the N most active maps of each layer get a picture optimised to excite them, about 10 s a map "
        "on a 2-core CPU, kept for later builds (default: %(default)s)",
    )
    parser.add_argument(
        "--serve", action="store_true", help="after building, serve the site on 127.0.0.1 until Ctrl-C (default: off)"
    )
    parser.add_argument(
        "--port",
        default=8000,
        type=non_negative_int,
        help="port for --serve; 0 picks a free one (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    count = args.photos[0] if len(args.photos) == 1 and args.photos[0].isdigit() else None
    args.photo_count = non_negative_int(count) if count is not None else None
    args.photo_files = [] if count is not None else args.photos
    return args


def main(argv=None):
    args = parse_args(argv)
    folder = build(args)
    print(f"wrote the site; open {os.path.abspath(os.path.join(folder, 'index.html'))} in a browser")
    if args.serve:
        serve(folder, args.port, os.path.dirname(args.checkpoint) or ".")


if __name__ == "__main__":
    run_main(main)
