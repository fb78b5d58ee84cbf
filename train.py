"""Train ZFNet on a folder split into train/ and val/ (python split_data.py makes one).

    python train.py                                  # flower_data/ -> runs/zfnet/
    python train.py --epochs 30 --out runs/long --snapshot-epochs 1,2,5,10,30
    python train.py --out runs/long --resume         # continue an interrupted run
    python train.py --recipe tutorial --out runs/tutorial    # the blog tutorial's recipe
    python train.py --set layer1_init_scale=0.1 layer1_lr_scale=5 --out runs/try   # a variant of the recipe
    torchrun --nproc_per_node=2 train.py             # DistributedDataParallel, one process per GPU/CPU share

Writes into --out: best.pth (best validation accuracy), last.pth (everything a resume needs),
snapshots/epoch_NNN.pth (weights only, for visualize.py evolution), class_indices.json,
metrics.csv, curves.png and confusion.png. Every file is written atomically.
"""

from zfnet.errors import run_main
from zfnet.recipes import parse_args
from zfnet.training import train


def main(argv=None):
    train(parse_args(argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
