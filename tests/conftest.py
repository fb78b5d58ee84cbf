"""Fixtures shared by the test files: small image folders made on the fly."""

import pytest

from tests.helpers import COLOURS, write_photos


@pytest.fixture
def colour_split(tmp_path):
    """A split folder (train/ and val/) of three colour classes: 12 train, 4 val photos each."""
    root = tmp_path / "data"
    for offset, (name, colour) in enumerate(COLOURS.items()):
        write_photos(root / "train" / name, colour, 12, seed=offset)
        write_photos(root / "val" / name, colour, 4, seed=100 + offset)
    return root
