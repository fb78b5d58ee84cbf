"""zfnet.spectra: frequency bands of filters, the stride-grid contrast, and the verdicts."""

import math

import pytest
import torch

from zfnet.spectra import (
    BANDS,
    band_areas,
    band_shares,
    energy_shares,
    faded_filters,
    grid_contrast,
    noise_oriented_share,
    noise_smoothness,
    orientation_coherence,
    oriented_filters,
    power_spectra,
    smoothness,
    verdict,
)


def test_frequency_bands_of_known_filters():
    y, x = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
    constant = torch.ones(1, 3, 7, 7)
    checkerboard = ((-1) ** (y + x)).expand(1, 3, 7, 7)
    middle = torch.cos(2 * math.pi * 3 / 16 * x).expand(1, 3, 7, 7)
    assert band_shares(constant)["low"] > 0.75  # a 7-pixel box still leaks past 1/8 cycles/px
    assert band_shares(checkerboard)["high"] > 0.99
    shares = band_shares(middle)
    assert shares["middle"] > 0.7 and sum(shares.values()) == pytest.approx(1)


def test_energy_shares_of_the_bands_are_the_band_shares():
    weights = torch.randn(4, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    assert energy_shares(weights, BANDS.values()) == list(band_shares(weights).values())


def test_grid_contrast_finds_a_pattern_that_repeats_at_the_stride():
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((y - 16) ** 2 + (x - 16) ** 2) / 50).expand(1, 3, 32, 32)
    dots = blob * ((y % 4 == 0) & (x % 4 == 0))  # the blob sampled every 4 pixels: a stride-4 grid
    smooth = power_spectra(blob, 64)[0]
    gridded = power_spectra(dots, 64)[0]
    # The blob's own spectrum (power sigma about 1.4 bins) still reaches into the 2-4 bin ring,
    # so a perfect grid scores about 8, not infinity; a smooth patch stays below 1.
    assert grid_contrast(gridded, 4, 2) > 5
    assert grid_contrast(smooth, 4, 2) < 1
    assert grid_contrast(gridded, 4, 2) > 10 * grid_contrast(gridded, 3, 2)


def test_verdicts_need_a_clear_difference():
    assert verdict(5, 1, "more") == "in line with the paper's claim"
    assert verdict(0.10, 0.20, "more") == "unlike the paper's claim"
    assert verdict(0.143, 0.150, "fewer").startswith("too close to call")
    assert band_areas()["middle"] == pytest.approx(math.pi * (1 / 16 - 1 / 64), abs=0.01)


# 80: larger than the filters' 64-point spectrum, as a picture is (8 draws of 80x80 are many pixels)
@pytest.mark.parametrize(
    "kernel_size, below, count",
    [(7, 1 / 4, 1000), (7, 1 / 8, 1000), (11, 1 / 4, 1000), (3, 1 / 4, 1000), (80, 1 / 8, 8)],
)
def test_noise_smoothness_is_the_share_many_white_noise_filters_give(kernel_size, below, count):
    drawn = torch.randn(count, 3, kernel_size, kernel_size, generator=torch.Generator().manual_seed(2))
    assert noise_smoothness(kernel_size, below) == pytest.approx(smoothness(drawn, below), abs=0.005)


def test_smoothness_of_a_picture_larger_than_the_filter_spectrum_measures_all_of_it():
    y, x = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    smooth = torch.cos(2 * math.pi * (x + y) / 48).expand(1, 3, 96, 96).clone()
    beyond_the_corner = smooth.clone()
    beyond_the_corner[..., 64:, :] = torch.randn(1, 3, 32, 96, generator=torch.Generator().manual_seed(3))
    assert smoothness(smooth, 1 / 8) > 0.99
    assert smoothness(beyond_the_corner, 1 / 8) < 0.6


def test_smoothness_tells_noise_from_smooth_filters():
    noise = torch.randn(48, 3, 7, 7, generator=torch.Generator().manual_seed(1))
    assert 0.16 < smoothness(noise) < 0.20
    assert abs(noise_smoothness(7) - smoothness(noise)) < 0.02
    assert 0.16 < noise_smoothness(7) < 0.20 and noise_smoothness(7, below=1 / 8) < 0.05
    y, x = (torch.arange(7, dtype=torch.float64) - 3).view(7, 1), (torch.arange(7, dtype=torch.float64) - 3)
    blob = torch.exp(-(x**2 + y**2) / (2 * 1.5**2))
    colour_blob = torch.stack([blob, -blob, 0.5 * blob])[None]  # a colour-opponent blob
    edge = x * blob  # a wide vertical edge (a derivative of the blob)
    oriented = (x + y) * blob  # the same edge at 45 degrees, light to dark in red, the reverse in blue
    # Removing a filter's mean leaves a pedestal that ends at the 7x7 border, so even a
    # perfect blob keeps a tenth of its energy above 1/4 cycle per pixel.
    assert smoothness(colour_blob) > 0.88
    for smooth in (torch.stack([edge] * 3)[None], torch.stack([oriented, oriented, -oriented])[None]):
        assert smoothness(smooth) > 0.95
    assert smoothness(torch.cat([colour_blob, noise[:1].double()])) < smoothness(colour_blob)


def test_filters_far_below_the_median_norm_have_faded():
    torch.manual_seed(0)
    weights = torch.randn(8, 3, 7, 7)
    weights[2] *= 0.05  # decayed away
    weights[5] *= 0.5  # weaker, still alive
    assert faded_filters(weights).tolist() == [False, False, True, False, False, False, False, False]


def test_edges_and_bars_are_oriented_and_blobs_and_noise_are_not():
    y, x = torch.meshgrid(torch.arange(7.0) - 3, torch.arange(7.0) - 3, indexing="ij")
    diagonal_edge = torch.tanh(x + y)
    horizontal_bar = torch.exp(-(y**2))
    blob = torch.exp(-(x**2 + y**2) / 4)
    filters = torch.stack(
        [
            torch.stack([diagonal_edge, diagonal_edge, -diagonal_edge]),  # colour-opponent edge
            torch.stack([horizontal_bar] * 3) + 5,  # its mean colour does not matter
            torch.stack([blob, -blob, blob]),  # a colour-opponent centre-surround blob
            torch.stack([blob] * 3),
        ]
    )
    coherence = orientation_coherence(filters)
    assert coherence[0] > 0.9 and coherence[1] > 0.99
    assert coherence[2] < 0.01 and coherence[3] < 0.01
    torch.testing.assert_close(orientation_coherence(7 * filters), coherence)  # nor does its scale
    assert oriented_filters(filters).tolist() == [True, True, False, False]
    assert noise_oriented_share(7) < 0.01 and noise_oriented_share(11) < 0.01


def test_a_faded_edge_is_not_counted_as_oriented():
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
    edge = torch.stack([torch.tanh(x - 3)] * 3)
    weights = torch.stack([edge] * 4 + [0.01 * edge])
    assert oriented_filters(weights).tolist() == [True, True, True, True, False]
