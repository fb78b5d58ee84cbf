"""AlexNet's first layer against ZFNet's, measured (the paper's section 4.1 and figure 6).

    python train.py --arch alexnet --out runs/alexnet && python train.py --out runs/zfnet
    python compare_arch.py --checkpoint runs/alexnet/best.pth runs/zfnet/best.pth --data flower_data

The paper replaced AlexNet's 11x11 stride-4 first layer by 7x7 stride 2 because the former
(a) leaves dead filters, (b) covers low and high spatial frequencies but few middle ones, and
(c) aliases in layer 2. For two checkpoints (any architectures) this measures, side by side:

- validation accuracy on DATA/val;
- dead layer-1 filters: weights below a tenth of the layer's median filter norm, or never
  active (rectified output 0 everywhere) on any validation photo;
- how layer 1's filter energy spreads over spatial frequency (2-D FFT of each filter, in
  cycles per input pixel): low below 1/8, middle 1/8 to 1/4, high above 1/4. A stride of s
  samples the layer's output every s pixels, so filter energy above 1/(2s) aliases: above 1/8
  for stride 4, above 1/4 for stride 2;
- aliasing in layer 2: the deconvnet projections of each layer-2 map's strongest activation
  on --max-images validation photos, and their power at the frequencies of the first layer's
  stride grid (k/s cycles per pixel) over the power in the ring around each: about 1 for a
  smooth spectrum, more for a pattern that repeats every s pixels.

Writes OUT/compare.md (the table and what it shows), OUT/compare.csv and OUT/compare.png;
OUT defaults to compare_arch/ beside the first checkpoint. It must be a new or empty folder,
or one compare_arch.py wrote, outside DATA.
"""

from zfnet.arguments import (
    DEFAULT_CHECKPOINT,
    add_batch_size,
    add_checkpoint,
    add_data,
    add_device,
    add_max_images,
    add_out,
    add_workers,
    out_folder,
    script_parser,
)
from zfnet.checkpoint import load_checkpoint
from zfnet.data import scan_split
from zfnet.errors import run_main
from zfnet.files import atomic_write_text
from zfnet.outputs import OutputFolder, require_outside
from zfnet.runtime import pick_device
from zfnet.studies import first_layer
from zfnet.tables import csv_text

ALEXNET_CHECKPOINT = "runs/alexnet/best.pth"  # where the docstring's first command trains it


def parse_args(argv=None):
    parser = script_parser(__doc__)
    add_checkpoint(
        parser,
        nargs=2,
        help="the two networks, AlexNet's and ZFNet's",
        default=[ALEXNET_CHECKPOINT, DEFAULT_CHECKPOINT],
    )
    add_data(parser)
    add_max_images(parser, default=64)
    add_batch_size(parser)
    add_workers(parser)
    add_device(parser)
    add_out(parser, beside="the first checkpoint")
    return parser.parse_args(argv)


def claim_outputs(args, samples):
    """`{name: path}` of the outputs, in the output folder claimed before the long work."""
    folder = out_folder(args, "compare_arch", beside=args.checkpoint[0])
    require_outside(folder, args.data, "--data")  # in train/ or val/ the figures would be photos of a class
    photos = [path for side in samples.values() for path, _ in side]
    out = OutputFolder.claim(folder, inputs=[*args.checkpoint, args.data, *photos], outputs=first_layer.OUTPUTS)
    return {name: out.path(name) for name in first_layer.OUTPUTS}


def main(argv=None):
    args = parse_args(argv)
    classes, samples = scan_split(args.data)
    device = pick_device(args.device)
    # Both checkpoints are read and checked before any photo is decoded, so a wrong one fails at once.
    loaded = [(path, *load_checkpoint(path, device)) for path in args.checkpoint]
    for net in loaded:
        first_layer.require_comparable(*net, classes, args.data)
    paths = claim_outputs(args, samples)
    nets = [first_layer.measure(*net, samples["val"], args, device) for net in loaded]
    table, text = first_layer.report(nets, args.data)
    atomic_write_text(paths["compare.csv"], csv_text(table))
    atomic_write_text(paths["compare.md"], text)
    first_layer.plot(nets, paths["compare.png"])
    print("\n".join(f"- {line}" for line in first_layer.findings(nets)))
    print(f"report in {paths['compare.md']}, compare.csv and compare.png")


if __name__ == "__main__":
    run_main(main)
