"""The one path from a photo file to the network's input.

Training's validation, predict.py and every analysis tool go through these functions, so
their preprocessing cannot drift apart. The result is bit-identical to torchvision's
`Resize((size, size))`, `ToTensor()`, `Normalize(mean, std)` on the same PIL image, without
importing torchvision (which would add over a second to predict.py's start).
"""

import errno
import os
import stat
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from zfnet.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def find_images(folder):
    """Every photo file under `folder` (sub-folders included), sorted; UserError if there is
    no such folder or no photo in it. A name that only looks like a photo (a symbolic link to
    nowhere or to itself) is listed too: each caller reports it as it reports any photo that
    cannot be read, which open_rgb explains."""
    if not os.path.isdir(folder):
        raise UserError(f"image folder not found: {folder}")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not paths:
        raise UserError(f"no photos in {folder} (looked for {', '.join(IMAGE_SUFFIXES)} files)")
    return paths


TOO_LARGE = "image too large to decode safely"
# PIL refuses images over twice its pixel limit but only warns between the limit and twice
# it; those would still take over a gigabyte to decode. A warnings filter cannot be switched
# per call while threads decode photos (it is global), so refuse_bomb's size check replaces
# the warning for good.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def refuse_bomb(image):
    """Raise Image.DecompressionBombError when an opened (not yet decoded) image has more
    pixels than PIL decodes safely: a "decompression bomb", a small file that would unpack
    to gigabytes."""
    pixels = image.width * image.height
    if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"{image.width} x {image.height} = {pixels} pixels, over PIL's limit of {Image.MAX_IMAGE_PIXELS}"
        )


def not_a_regular_file(path):
    """Whether `path` exists but is a pipe, a socket or a device: opening one can wait forever
    for a writer, or never end. Checked before anything opens a photo."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing, a link to nowhere or a loop: opening it says which
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def open_rgb(path, upright=True):
    """Decode a photo completely and return it as an upright RGB PIL image (with `upright`
    False, as stored: torchvision's loader, which the blog tutorial used, ignores the EXIF
    orientation).

    Grayscale, CMYK, palette and RGBA photos are converted; a missing file, a symbolic link
    that leads to no file, a file that is not an image, a truncated one, or one with more
    pixels than PIL decodes safely raises UserError naming the file, as does a pipe, socket
    or device named like a photo (read, it would wait forever).
    """
    return _decode(path, upright, draft=None)[0]


def open_rgb_reduced(path, side):
    """`(image, (height, width))`: the upright RGB photo decoded at the smallest JPEG scale
    (1, 1/2, 1/4 or 1/8, done inside the decoder, so a large photo decodes several times
    faster) that keeps at least side x side pixels, and the full photo's upright size. Other
    formats decode whole. Errors as open_rgb's."""
    return _decode(path, upright=True, draft=side)


def _decode(path, upright, draft):
    if not_a_regular_file(path):
        raise UserError(f"{path}: not a regular file (a pipe, socket or device), so it is not read")
    try:
        with Image.open(path) as image:
            refuse_bomb(image)
            full_width, full_height = image.size
            if draft is not None:
                image.draft("RGB", (draft, draft))
            image.load()
            stored_width = image.size[0]
            if upright:
                image = ImageOps.exif_transpose(image)
            if image.size[0] != stored_width:  # turned a quarter: the full size turns with it
                full_width, full_height = full_height, full_width
            return image.convert("RGB"), (full_height, full_width)
    except Image.DecompressionBombError as error:
        raise UserError(f"{path}: {TOO_LARGE} ({error})") from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image") from None
    except (OSError, SyntaxError, ValueError) as error:
        if getattr(error, "errno", None) == errno.ELOOP:
            raise UserError(f"{path}: a symbolic link that loops back and never reaches a file") from None
        raise UserError(f"{path}: truncated or corrupt image ({error})") from None


def resize_uint8(image, size):
    """Stretch a PIL image to size x size (bilinear, as torchvision's Resize((size, size)))
    and return it as a uint8 tensor of shape (3, size, size)."""
    resized = image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def normalize(pixels, mean, std):
    """uint8 pixels (..., 3, H, W) to the network's float input, with the same operations
    in the same order as ToTensor + Normalize so that the results match bit for bit."""
    x = pixels.to(torch.float32).div(255)
    shape = (3, 1, 1)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(shape)
    return x.sub_(mean).div_(std)


def load_input(path, preprocess):
    """A photo file as the network's input tensor (3, S, S), using the preprocessing
    (`input_size`, `mean`, `std`) that a checkpoint records."""
    pixels = resize_uint8(open_rgb(path), preprocess["input_size"])
    return normalize(pixels, preprocess["mean"], preprocess["std"])


def unnormalize(x, mean, std):
    """The inverse of `normalize`, as floats in [0, 1], for drawing inputs in figures."""
    shape = (3, 1, 1)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x * std + mean).clamp(0, 1)


def make_grid(pictures, **options):
    """torchvision.utils.make_grid, imported on first use: importing torchvision brings torch's
    compiler stack with it (about 2 s), which explore.py's rebuilds and predict.py do without."""
    from torchvision.utils import make_grid as torchvision_make_grid

    return torchvision_make_grid(pictures, **options)
