"""Split the flower_photos data set (or any folder with one sub-folder of photos per class)
into DEST/train and DEST/val, DEST being --dest (default: flower_data).

    python split_data.py                                   # download flower_photos, split 90/10
    python split_data.py --source ~/photos/flower_photos   # split a folder you already have
    python split_data.py --source photos --dest photo_data --val-ratio 0.2 --seed 1 --link

The source has one sub-folder per class. Every file is decoded first: what is not a usable
photo (LICENSE.txt, empty or truncated files) is skipped and listed, never copied. The split
is stratified per class and depends only on the files' names and contents, the ratio and the
seed. Byte-identical photos always land on the same side, so none leaks from train into val.
Re-running rebuilds train/ and val/ from scratch; manifest.json beside them records the split.
A split of your own folder is kept by a run that gives no --source (make run's), unless
--resplit asks to split flower_photos instead.
A train/ or val/ in DEST that split_data.py did not write (its manifest.json does not list
their class folders) is never replaced: choose another --dest, or move them away yourself.
"""

from pathlib import Path

from zfnet.arguments import DEFAULT_DATA, add_seed, script_parser
from zfnet.errors import run_main
from zfnet.splitting import FLOWER_PHOTOS_URL, SIDES, check_request, find_source, split_folder, split_to_keep, summary


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument(
        "--source",
        help="folder with one sub-folder per class (default: DEST/flower_photos if "
        "present, else flower_photos downloaded from --url)",
    )
    parser.add_argument(
        "--dest",
        default=DEFAULT_DATA,
        help="the split folder DEST: where train/, val/ and manifest.json go (default: %(default)s)",
    )
    parser.add_argument(
        "--val-ratio",
        type=float,
        default=0.1,
        help="share of each class that goes to val, between 0 and 1 (default: %(default)s)",
    )
    add_seed(parser, "the split; the same seed and files give the same split")
    parser.add_argument(
        "--link",
        action="store_true",
        help="hard-link photos instead of copying them (copies where the file system cannot "
        "link); the split then shares its files with the source (default: copy)",
    )
    parser.add_argument(
        "--url", default=FLOWER_PHOTOS_URL, help="where to download flower_photos.tgz from (default: %(default)s)"
    )
    parser.add_argument(
        "--resplit",
        action="store_true",
        help="without --source, split flower_photos even where DEST holds a split of a folder of your own, "
        "which is otherwise kept (default: keep it)",
    )
    parser.add_argument(
        "--no-fallback",
        action="store_true",
        help="fail when the download cannot be made, instead of splitting the small sample "
        "bundled in samples/flower_photos (default: fall back to the sample)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    dest = Path(args.dest)
    check_request(dest, args.val_ratio, None if args.source is None else Path(args.source))
    kept = split_to_keep(dest, args.source, args.resplit)
    if kept is not None:
        count = sum(len(names) for side in SIDES for names in kept[side].values())
        print(
            f"{dest} holds a split of your folder {kept['source']} ({count} photos); kept it "
            f"(give --source to split another folder, or --resplit to split flower_photos instead)"
        )
        return
    source, dataset, how = find_source(args)
    manifest, classes, copied_instead = split_folder(source, dest, args.val_ratio, args.seed, args.link, dataset)
    print(summary(manifest, classes, source, how, dest, copied_instead))


if __name__ == "__main__":
    run_main(main)
