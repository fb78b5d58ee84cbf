"""Top-1 and top-5 error over a folder of class folders, as the paper measured them (Zeiler &
Fergus 2014, section 5.1 and table 2, after Krizhevsky et al. 2012): each photo at 256 x 256,
then the network's input cut from it three ways:

- whole: the photo stretched to the input size, as validation during training and predict.py see it;
- centre: the central 224 x 224 crop (for another input size, the same share of a square
  8/7 of its side);
- 10 crops: the four corners and the centre, each also mirrored, their softmax averaged.

Our photos are stretched to the square rather than cut to it (as training caches them), so
the crops see the same pixels the training crops were drawn from.
"""

import sys

import torch
from torchvision.transforms.v2.functional import ten_crop

from zfnet.data import scan_classes
from zfnet.errors import UserError
from zfnet.images import normalize, open_rgb, resize_uint8

VIEWS = ("whole", "centre", "10 crops")


def square_side(input_size):
    """The side of the square the crops are cut from: 256 for the input's 224, as in the paper."""
    return round(input_size * 8 / 7)


def labelled_photos(folder, classes):
    """`[(path, label)]` for a folder of class folders, labels the checkpoint's indices of the
    folders' names; UserError naming the folders the checkpoint does not know."""
    photos = scan_classes(folder)
    unknown = sorted(set(photos) - set(classes))
    if unknown:
        raise UserError(
            f"{folder}: class folder(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
            f"are not among the checkpoint's {len(classes)} classes"
        )
    return [(path, classes.index(name)) for name in photos for path in photos[name]]


class PhotoViews(torch.utils.data.Dataset):
    """Per photo its uint8 pixels stretched to the input size (load_input's) and to the
    square the crops are cut from, and its label; or no pixels and the reason it cannot be
    used. Decoded in DataLoader workers."""

    def __init__(self, samples, input_size):
        self.samples, self.input_size = samples, input_size

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        try:
            photo = open_rgb(path)
        except UserError as error:
            return None, None, label, str(error)
        return resize_uint8(photo, self.input_size), resize_uint8(photo, square_side(self.input_size)), label, None


def views(whole, squares, preprocess):
    """The network inputs of a batch: `{view: (N, C, 3, size, size)}` with C = 1, 1 and 10
    crops, from the photos stretched to the input size (`whole`) and to the square."""
    size = preprocess["input_size"]
    crops = torch.stack(ten_crop(squares, [size, size]), dim=1)  # corners and centre, then the same mirrored
    prepared = {"whole": whole[:, None], "centre": crops[:, 4:5], "10 crops": crops}
    return {name: normalize(value, preprocess["mean"], preprocess["std"]) for name, value in prepared.items()}


def _columns(batch):
    return list(zip(*batch))


def evaluate_folder(model, samples, preprocess, device, batch_size, workers, progress=None):
    """`({view: (top-1 right, top-5 right)}, photos counted, [errors])` over `samples`."""
    loader = torch.utils.data.DataLoader(
        PhotoViews(samples, preprocess["input_size"]), batch_size=batch_size, num_workers=workers, collate_fn=_columns
    )
    right = {view: [0, 0] for view in VIEWS}
    counted, errors = 0, []
    model.eval()
    with torch.inference_mode():
        for wholes, squares, labels, problems in progress(loader) if progress else loader:
            errors += [problem for problem in problems if problem]
            good = [index for index, problem in enumerate(problems) if not problem]
            if not good:
                continue
            batch = [torch.stack([pictures[index] for index in good]) for pictures in (wholes, squares)]
            truth = torch.tensor([labels[index] for index in good], device=device)
            for view, inputs in views(*batch, preprocess).items():
                crops = inputs.shape[1]
                logits = model(inputs.flatten(0, 1).to(device)).float()
                probabilities = logits.softmax(1).view(len(good), crops, -1).mean(1)
                top = probabilities.topk(min(5, probabilities.shape[1]), dim=1).indices
                right[view][0] += (top[:, 0] == truth).sum().item()
                right[view][1] += (top == truth[:, None]).any(1).sum().item()
            counted += len(good)
    for problem in errors:
        print(f"note: skipped {problem}", file=sys.stderr)
    return right, counted, errors
