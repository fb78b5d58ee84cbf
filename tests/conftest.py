"""Fixtures shared by the test files: small image folders made on the fly; and one PyTorch
thread per pytest-xdist worker."""

import os

import pytest
import torch

from tests.helpers import COLOURS, write_photos

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs in one worker per core (pytest.ini): each worker, and every script it
    # starts, on one PyTorch thread, else the workers' OpenMP threads wait on each other and
    # the suite runs slower than in one process.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture
def colour_split(tmp_path):
    """A split folder (train/ and val/) of three colour classes: 12 train, 4 val photos each."""
    root = tmp_path / "data"
    for offset, (name, colour) in enumerate(COLOURS.items()):
        write_photos(root / "train" / name, colour, 12, seed=offset)
        write_photos(root / "val" / name, colour, 4, seed=100 + offset)
    return root
