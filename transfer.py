"""How well a trained network's features serve a new task (section 5.2, tables 4 to 6): keep
its layers 1 to 7 fixed, train only a new softmax on N photos per class, and compare with the
same network trained from scratch on the same photos.

    python transfer.py --checkpoint runs/zfnet/best.pth --data caltech_data --per-class 15,30,45,60
    python transfer.py --checkpoint runs/flowers3/best.pth --data flower_data

--data is the new task's split folder: train/ and val/, one sub-folder of photos per class
(split_data.py --source FOLDER --dest DATA makes one). Each of --draws random draws picks N
photos of every class of DATA/train to train on (a draw's smaller N are the first photos of
its larger N); every draw is tested on all of DATA/val. The softmax sees layer 7's outputs in
eval mode (no dropout). The from-scratch runs train with train.py's training (--epochs each)
into OUT/scratch/, so a rerun skips the finished ones. Writes OUT/transfer.csv,
OUT/transfer.md and OUT/transfer.png; OUT is transfer/ beside the checkpoint unless --out says.
OUT is a new or empty folder or one the study wrote before, outside --data, and holds neither
--data nor the checkpoint: anything else is refused before any work.
"""

from zfnet.arguments import add_checkpoint, add_data, add_out, add_seed, int_list, out_folder, positive_int
from zfnet.errors import UserError, run_main
from zfnet.studies import transfer
from zfnet.studies.common import parse_study_args, study_parser


def parse_args(argv=None):
    parser = study_parser(__doc__)
    add_checkpoint(parser, help="the trained network whose layers 1-7 are kept")
    add_data(parser)
    parser.add_argument(
        "--per-class",
        default=[5, 10, 20, 40],
        type=int_list,
        metavar="N1,N2,...",
        help="training photos per class to try (default: 5,10,20,40)",
    )
    parser.add_argument(
        "--draws", default=3, type=positive_int, help="random draws of the photos per N (default: %(default)s)"
    )
    parser.add_argument(
        "--epochs", default=30, type=positive_int, help="epochs of each from-scratch run (default: %(default)s)"
    )
    add_out(parser, beside="the checkpoint")
    add_seed(parser, "the draws and the from-scratch runs")
    args = parse_study_args(parser, argv, also_set_by_study=("--width", "--arch"))  # the checkpoint decides these
    if not args.per_class or min(args.per_class) < 1:
        raise UserError(f"--per-class needs positive numbers, got {','.join(map(str, args.per_class)) or 'none'}")
    args.per_class = sorted(set(args.per_class))
    args.out = out_folder(args, "transfer")
    return args


def main(argv=None):
    stem = transfer.run(parse_args(argv))
    print(f"table and plot in {stem}.md, {stem}.csv and {stem}.png")


if __name__ == "__main__":
    run_main(main)
