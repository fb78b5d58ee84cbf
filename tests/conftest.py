"""Fixtures shared by the test files: small image folders made on the fly."""
import os

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Clearly different classes: a network that learns anything separates them in a few epochs.
COLOURS = {"blue": (30, 60, 200), "green": (40, 170, 60), "red": (200, 40, 40)}


def write_photos(folder, colour, count, seed, size=(48, 40)):
    """`count` noisy photos of one dominant colour, with random sizes around `size`."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        width, height = size[0] + int(rng.integers(0, 16)), size[1] + int(rng.integers(0, 16))
        noise = rng.normal(0, 25, (height, width, 3))
        pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{index:03d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture
def colour_split(tmp_path):
    """A split folder (train/ and val/) of three colour classes: 12 train, 4 val photos each."""
    root = tmp_path / "data"
    for offset, (name, colour) in enumerate(COLOURS.items()):
        write_photos(root / "train" / name, colour, 12, seed=offset)
        write_photos(root / "val" / name, colour, 4, seed=100 + offset)
    return root
