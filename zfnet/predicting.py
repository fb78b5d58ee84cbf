"""Classifying photos with a trained network: the photos to classify, their most probable
classes in batches, and the figure of them.

predict.py is a thin command line over these functions; bench/predict_speed.py times
`classify`. Nothing here imports matplotlib or torchvision until a figure is drawn, so that
predict.py starts fast.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from zfnet.errors import UserError
from zfnet.images import find_images, load_input
from zfnet.outputs import require_outside

# The layout training uses (zfnet.training.MEMORY_FORMAT), named here because importing
# zfnet.training would import matplotlib.
MEMORY_FORMAT = torch.channels_last
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def find_photos(arguments):
    """Files as given, and the photos inside folders (recursively, sorted)."""
    paths = []
    for argument in arguments:
        paths.extend(find_images(argument) if os.path.isdir(argument) else [argument])
    return paths


def check_figure_path(path, arguments, inputs):
    """UserError, before any work, where saving the figure as `path` would harm a file: one
    of the `inputs`, an existing file that is not a PNG (a figure only replaces a figure), a
    folder, or a place inside one of the folders among the photo `arguments` (a later run
    would classify the figure)."""
    if os.path.realpath(path) in {os.path.realpath(given) for given in inputs}:
        raise UserError(f"--plot {path} is one of the inputs; choose another file")
    if os.path.isdir(path):
        raise UserError(f"--plot {path} is a folder; name a .png file")
    if os.path.exists(path) and not is_png(path):
        raise UserError(f"--plot {path} exists and is not a PNG, so it is not replaced; choose another file")
    for argument in arguments:
        if os.path.isdir(argument):
            require_outside(path, argument, "the photo folder", flag="--plot")


def is_png(path):
    """Whether `path` is a regular file that starts with the PNG signature."""
    if not os.path.isfile(path):  # a device or a pipe would not even open without waiting
        return False
    try:
        with open(path, "rb") as file:
            return file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:  # unreadable: not known to be a figure
        return False


def decode(path, preprocess):
    """`(input, None)` for a usable photo, `(None, why not)` for any other file."""
    try:
        return load_input(path, preprocess), None
    except UserError as error:
        return None, str(error)


def classify(model, paths, preprocess, classes, device, batch_size, topk):
    """Yield a result dict per path, in order: its `topk` most probable classes, or the error
    that kept it from being classified. Photos are decoded in threads (Pillow releases the
    GIL) one batch ahead, so decoding overlaps with the forward pass."""
    batches = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(decode, path, preprocess) for path in batches[0]] if batches else []
        for index, batch in enumerate(batches):
            decoded = [future.result() for future in pending]
            following = batches[index + 1] if index + 1 < len(batches) else []
            pending = [pool.submit(decode, path, preprocess) for path in following]
            good = [tensor for tensor, _ in decoded if tensor is not None]
            if good:
                inputs = torch.stack(good).to(device).contiguous(memory_format=MEMORY_FORMAT)
                with torch.inference_mode():
                    probabilities = torch.softmax(model(inputs).float(), dim=1).cpu()
                top_probabilities, top_indices = probabilities.topk(min(topk, len(classes)), dim=1)
            row = 0
            for path, (tensor, error) in zip(batch, decoded):
                if tensor is None:
                    yield {"path": path, "error": error}
                    continue
                top = [
                    {"class": classes[i], "probability": round(p, 6)}
                    for p, i in zip(top_probabilities[row].tolist(), top_indices[row].tolist())
                ]
                row += 1
                yield {"path": path, "class": top[0]["class"], "probability": top[0]["probability"], "top": top}


def plot_predictions(results, path):
    """Save a figure of each classified photo beside a bar chart of its top classes."""
    # Imported here: matplotlib adds about half a second to every start, and most runs draw nothing.
    from zfnet.figures import plt, save_figure
    from zfnet.images import open_rgb

    figure, axes = plt.subplots(
        len(results),
        2,
        figsize=(9, 3 * len(results)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 1.3]},
        layout="constrained",
    )
    for (photo_axis, bar_axis), result in zip(axes, results):
        photo_axis.imshow(open_rgb(result["path"]))
        photo_axis.set_title(os.path.basename(result["path"]), fontsize=9)
        photo_axis.axis("off")
        names = [entry["class"] for entry in result["top"]][::-1]
        bar_axis.barh(names, [entry["probability"] for entry in result["top"]][::-1], color="tab:blue")
        bar_axis.set(xlim=(0, 1), xlabel="probability")
        bar_axis.set_title(f"{result['class']} ({result['probability']:.3f})", fontsize=10)
    save_figure(figure, path)
