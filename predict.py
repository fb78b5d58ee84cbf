"""Classify photos with a trained ZFNet.

    python predict.py sunflower.jpg
    python predict.py a.jpg b.jpg photos/ --topk 3
    python predict.py photos/ --json > predictions.json
    python predict.py sunflower.jpg --plot prediction.png

Folders are searched recursively for photos. A photo that cannot be read is reported on
stderr (and in --json output) and the others are still classified; the exit status is then 2.
"""
import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from zfnet.checkpoint import load_checkpoint
from zfnet.errors import UserError, report, run_main
from zfnet.images import IMAGE_SUFFIXES, load_input
from zfnet.runtime import pick_device


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", help="photo files and/or folders of photos")
    parser.add_argument("--checkpoint", default="runs/zfnet/best.pth",
                        help="checkpoint written by train.py (default: %(default)s)")
    parser.add_argument("--topk", type=int, default=1, help="how many of the most probable classes to show (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON list with an object per photo")
    parser.add_argument("--plot", metavar="FILE", help="save a figure of each photo beside a bar chart of its top classes")
    parser.add_argument("--batch-size", type=int, default=64, help="photos per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    return parser


def find_photos(arguments):
    """Files as given, and the photos inside folders (recursively, sorted)."""
    paths = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(argument)
                           for name in names if name.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise UserError(f"{argument}: no photos in this folder")
            paths.extend(found)
        else:
            paths.append(argument)
    return paths


def decode(path, preprocess):
    try:
        return load_input(path, preprocess), None
    except UserError as error:
        return None, str(error)


def classify(model, paths, preprocess, classes, device, batch_size, topk):
    """Yield a result dict per path, in order. Photos are decoded in threads (Pillow releases
    the GIL) one batch ahead, so decoding overlaps with the forward pass."""
    batches = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(decode, path, preprocess) for path in batches[0]] if batches else []
        for index, batch in enumerate(batches):
            decoded = [future.result() for future in pending]
            following = batches[index + 1] if index + 1 < len(batches) else []
            pending = [pool.submit(decode, path, preprocess) for path in following]
            good = [tensor for tensor, _ in decoded if tensor is not None]
            if good:
                inputs = torch.stack(good).to(device).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    probabilities = torch.softmax(model(inputs).float(), dim=1).cpu()
                top_probabilities, top_indices = probabilities.topk(min(topk, len(classes)), dim=1)
            row = 0
            for path, (tensor, error) in zip(batch, decoded):
                if tensor is None:
                    yield {"path": path, "error": error}
                    continue
                top = [{"class": classes[i], "probability": round(p, 6)}
                       for p, i in zip(top_probabilities[row].tolist(), top_indices[row].tolist())]
                row += 1
                yield {"path": path, "class": top[0]["class"], "probability": top[0]["probability"], "top": top}


def plot_predictions(results, path, preprocess):
    # Imported here: matplotlib adds about half a second to every start, and most runs draw nothing.
    from zfnet.figures import plt, save_figure
    from zfnet.images import open_rgb

    figure, axes = plt.subplots(len(results), 2, figsize=(9, 3 * len(results)), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 1.3]}, layout="constrained")
    for (photo_axis, bar_axis), result in zip(axes, results):
        photo_axis.imshow(open_rgb(result["path"]))
        photo_axis.set_title(os.path.basename(result["path"]), fontsize=9)
        photo_axis.axis("off")
        names = [entry["class"] for entry in result["top"]][::-1]
        bar_axis.barh(names, [entry["probability"] for entry in result["top"]][::-1], color="tab:blue")
        bar_axis.set(xlim=(0, 1), xlabel="probability")
        bar_axis.set_title(f"{result['class']} ({result['probability']:.3f})", fontsize=10)
    save_figure(figure, path)


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        raise UserError("--topk and --batch-size must be at least 1")
    paths = find_photos(args.photos)
    device = pick_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    model = model.to(memory_format=torch.channels_last)
    classes, preprocess = checkpoint["classes"], checkpoint["preprocess"]
    # Plots show at least the five most probable classes, whatever --topk prints.
    shown = max(args.topk, min(5, len(classes))) if args.plot else args.topk

    results, failures = [], 0
    for result in classify(model, paths, preprocess, classes, device, args.batch_size, shown):
        results.append(result)
        if "error" in result:
            failures += 1
            report(result["error"])
        elif not args.json:
            ranked = " | ".join(f"{entry['class']} {entry['probability']:.3f}" for entry in result["top"][:args.topk])
            print(f"{result['path']}: {ranked}", flush=True)
    if args.json:
        json.dump([{**result, "top": result["top"][:args.topk]} if "top" in result else result
                   for result in results], sys.stdout, indent=2)
        print()
    classified = [result for result in results if "error" not in result]
    if args.plot and classified:
        plot_predictions(classified, args.plot, preprocess)
    if failures:
        sys.exit(2)


if __name__ == "__main__":
    run_main(main)
