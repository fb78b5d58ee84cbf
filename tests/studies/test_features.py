import pytest
import torch

from tests.helpers import tiny_network
from zfnet.spectra import noise_smoothness, smoothness
from zfnet.studies.features import NEAR_NOISE, layer1_note


def layer1_of_smoothness(target):
    """A tiny network whose layer 1 blends its random start with wide edges until its
    smoothness is `target`."""
    model = tiny_network(seed=0)
    noise = model.layer1.conv.weight.detach().clone()
    ramp = torch.linspace(-1, 1, 7)
    signs = torch.randn(len(noise), 3, 1, 1, generator=torch.Generator().manual_seed(0))
    edges = signs * ramp[None, None, :, None] * noise.std()
    low, high = 0.0, 1.0
    for _ in range(40):  # smoothness grows with the edges' share of the blend
        share = (low + high) / 2
        low, high = (share, high) if smoothness(share * edges + (1 - share) * noise) < target else (low, share)
    with torch.no_grad():
        model.layer1.conv.weight.copy_(share * edges + (1 - share) * noise)
    return model


@pytest.mark.parametrize("target", [0.38, 0.5])
def test_a_layer_1_still_mostly_speckle_gets_the_noise_note(target):
    # 38%: 20 steps of the small layer-1 start on the 60 bundled photos (make run), speckle to the eye.
    model = layer1_of_smoothness(target)
    note = layer1_note(model)
    assert note and f"smoothness {target:.1%}, white noise {noise_smoothness(7):.1%}" in note


def test_a_layer_1_of_edges_and_blobs_gets_no_note():
    assert layer1_note(layer1_of_smoothness(NEAR_NOISE * noise_smoothness(7) + 0.01)) is None
    assert layer1_note(layer1_of_smoothness(0.79)) is None  # the fast recipe's 10 epochs on flower_photos
