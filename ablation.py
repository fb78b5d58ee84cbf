"""The paper's ablation (section 5.1, table 3): train the full model and variants with layers
removed or resized, with the same recipe and seeds, and compare their errors.

    python ablation.py --data flower_data --out runs/ablation --epochs 10
    python ablation.py --variants full,no-layer7 --seeds 3 --lr 1e-4    # any train.py flag

Each run trains with train.py's training into OUT/<variant>/seed<k>/, so stopping the study and
running the same command again skips the finished runs and continues the interrupted one.
Writes OUT/ablation.csv, OUT/ablation.md and OUT/ablation.png. OUT is a new or empty folder or
one the study wrote before, outside --data and not holding it: anything else is refused before
any run trains.
"""

from zfnet.arguments import add_data, add_out, positive_int
from zfnet.errors import UserError, run_main
from zfnet.studies import ablation
from zfnet.studies.common import parse_study_args, study_parser


def parse_args(argv=None):
    parser = study_parser(__doc__)
    add_data(parser)
    add_out(parser, default="runs/ablation")
    parser.add_argument(
        "--variants",
        default=",".join(ablation.VARIANTS),
        help=f"comma-separated variants to train, of: {', '.join(ablation.VARIANTS)} (default: all)",
    )
    parser.add_argument("--epochs", default=10, type=positive_int, help="epochs per run (default: %(default)s)")
    parser.add_argument(
        "--seeds", default=1, type=positive_int, help="runs per variant, with seeds 0, 1, ... (default: %(default)s)"
    )
    args = parse_study_args(parser, argv)
    args.variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in args.variants if name not in ablation.VARIANTS]
    if unknown or not args.variants:
        raise UserError(
            f"unknown variant(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ablation.VARIANTS)}"
        )
    return args


def main(argv=None):
    stem = ablation.run(parse_args(argv))
    print(f"table and chart in {stem}.md, {stem}.csv and {stem}.png")


if __name__ == "__main__":
    run_main(main)
