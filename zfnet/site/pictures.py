"""The explorer's pictures: tiles on sheets, JPEG and PNG files written with PIL.

Patches and projections are small (7 to 139 pixels for ZFNet's layers 1 to 5) and there are
thousands of them: one file each would mean thousands of files and a block of disk apiece.
So the tiles of one map (or photo, or layer) share one JPEG, a sheet with a row per kind, and
a page shows each tile through a window onto its sheet (`Sheet.tile` gives the geometry). Tiles
sit on a grid whose pitch is a multiple of 16 pixels, JPEG's colour block, so that no tile
bleeds into its neighbour.
"""

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from zfnet.deconv import crop
from zfnet.figures import filter_pictures, stretched
from zfnet.files import atomic_write
from zfnet.images import make_grid
from zfnet.site.data import one_thread
from zfnet.spectra import faded_filters

JPEG_QUALITY = 80  # the reference run's site (--optimize 9): 73.7 MB on disk, 82.1 at quality 85 (goal: 80)
SMALLEST_TILE = 48  # pixels: a layer-1 patch (7 pixels) is magnified to at least this
BLOCK = 16  # JPEG's colour block with 4:2:0 subsampling


@dataclass(frozen=True)
class Sheet:
    """Tiles of `side` pixels (a patch of `size` pixels magnified `side // size` times) in a
    grid of `pitch` pixels."""

    size: int

    @property
    def side(self):
        return self.size * math.ceil(SMALLEST_TILE / self.size)

    @property
    def pitch(self):
        return math.ceil(self.side / BLOCK) * BLOCK

    def tile(self, row, column):
        """`(left, top)` of tile (row, column) on the sheet, in pixels."""
        return column * self.pitch, row * self.pitch

    def write(self, path, rows):
        """Write `rows` (lists of `size` x `size` tiles as made by the functions below) as one JPEG."""
        columns = max(len(row) for row in rows)
        canvas = np.full((len(rows) * self.pitch, columns * self.pitch, 3), 255, dtype=np.uint8)
        factor = self.side // self.size
        for r, row in enumerate(rows):
            for c, pixels in enumerate(row):
                left, top = self.tile(r, c)
                canvas[top : top + self.side, left : left + self.side] = pixels.repeat(factor, 0).repeat(factor, 1)
        write_image(path, canvas)  # magnified by repeating pixels: crisp, as they are


# Tiles are (H, W, 3) bytes, a quarter of the memory of float pictures: a build holds thousands.


@one_thread
def as_uint8(picture):
    """A (3, H, W) picture in [0, 1] as a tile."""
    return (picture.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@one_thread
def projection_picture(projection):
    """A projection (3, H, W) as shown everywhere in the explorer (zfnet.figures.stretched), as a tile."""
    return as_uint8(stretched(projection))


@one_thread
def small_projection_picture(projection, side):
    """A projection as projection_picture shows it, at side x side pixels (averaged down from a
    larger one, a smaller one's pixels repeated)."""
    picture = stretched(projection)[None].float()
    mode = "area" if picture.shape[-1] >= side else "nearest"
    return as_uint8(F.interpolate(picture, size=(side, side), mode=mode)[0])


@one_thread
def patch_picture(seen, box):
    """The part of a picture in [0, 1] (3, S, S) that a receptive-field box covers (black
    where the box reaches past the edges), as a tile."""
    return as_uint8(crop(seen, box))


def write_image(path, pixels):
    """(H, W, 3) bytes as a JPEG (quality JPEG_QUALITY) or, for a .png path, a PNG, written atomically."""
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if path.endswith(".png"):
        image.save(buffer, format="PNG", optimize=True)
    else:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)  # 5% smaller
    atomic_write(path, lambda file: file.write(buffer.getvalue()))


def write_picture(path, picture, side=None):
    """One (3, H, W) picture in [0, 1] as a file, resized (bilinear) to side x side when given."""
    pixels = as_uint8(picture)
    if side is not None:
        pixels = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR))
    write_image(path, pixels)


def css_colours(name, positions):
    """Colours of a matplotlib colour map as CSS hex strings: whole-number positions pick a
    listed map's entries (tab10's class colours), fractions run along a continuous one."""
    palette = colormaps[name]
    return ["#{:02x}{:02x}{:02x}".format(*(round(255 * v) for v in palette(p)[:3])) for p in positions]


def write_map(path, values, name, low, high):
    """A 2-D array as a small PNG through a colour map, `low` to `high` (the page scales it up
    with crisp pixels)."""
    scaled = (np.asarray(values, dtype=np.float64) - low) / ((high - low) or 1.0)
    write_image(path, (colormaps[name](np.clip(scaled, 0, 1))[..., :3] * 255).round().astype(np.uint8))


def write_classes(path, prediction, count):
    """A 2-D array of class indices as a small PNG in the tab10 colours of the class legend."""
    palette = np.array(colormaps["tab10"].colors[:count]) * 255
    write_image(path, palette[np.asarray(prediction)].round().astype(np.uint8))


def write_filters(path, weights, magnify=6):
    """The layer-1 filters (N, 3, k, k) as one PNG, drawn as visualize.py filters draws them
    (zfnet.figures.filter_pictures, faded ones grey), magnified with crisp pixels."""
    pictures = filter_pictures(weights, faded_filters(weights))
    grid = make_grid(pictures, nrow=math.ceil(math.sqrt(len(weights))), padding=1, pad_value=1)
    write_image(path, as_uint8(grid).repeat(magnify, 0).repeat(magnify, 1))
