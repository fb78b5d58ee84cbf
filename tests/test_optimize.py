"""Feature visualisation by optimisation (zfnet/optimize.py), against plain references."""

import math

import pytest
import torch

from tests.helpers import COLOURS, PREPROCESS, tiny_network, write_photos
from zfnet import optimize
from zfnet.images import find_images, load_input
from zfnet.top9 import strongest_activations

SMALL = {**PREPROCESS, "input_size": 64}


@pytest.fixture(scope="module")
def network():
    return tiny_network(input_size=64, seed=3)


def test_a_warp_without_change_is_the_identity_and_a_shift_moves_whole_pixels():
    images = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(optimize._warp(images), images, atol=1e-5, rtol=0)
    shifted = optimize._warp(images, shift=(3.0, -2.0))  # right 3, up 2
    torch.testing.assert_close(shifted[..., :14, 3:], images[..., 2:, :13], atol=1e-5, rtol=0)


def test_a_quarter_turn_is_rot90():
    images = torch.rand(1, 3, 12, 12)
    turned = optimize._warp(images, angle=90.0)
    torch.testing.assert_close(turned, torch.rot90(images, 1, (2, 3)), atol=1e-5, rtol=0)


def test_a_doubled_scale_shows_the_middle_twice_as_large():
    images = torch.zeros(1, 1, 16, 16)
    images[..., 6:10, 6:10] = 1  # a 4-pixel square in the middle
    bigger = optimize._warp(images, scale=2.0)
    assert bigger[..., 5:11, 5:11].min() == pytest.approx(1.0, abs=1e-5)  # 8 pixels wide now
    assert bigger[..., 0:2, :].max() == pytest.approx(0.0, abs=1e-5)


def test_random_transformations_keep_the_size_repeat_with_the_seed_and_vary():
    images = torch.rand(3, 3, 40, 40)
    first = optimize.random_transform(images, torch.Generator().manual_seed(1))
    again = optimize.random_transform(images, torch.Generator().manual_seed(1))
    other = optimize.random_transform(images, torch.Generator().manual_seed(2))
    assert first.shape == images.shape
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_colour_matrix_is_the_square_root_of_the_photos_colour_covariance():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.5, 0.7]])
    pictures = torch.einsum("ij,njhw->nihw", mixing, torch.rand(4, 3, 8, 8, generator=generator))
    root = optimize.colour_matrix(pictures).double()
    pixels = pictures.permute(1, 0, 2, 3).reshape(3, -1).double()
    covariance = torch.cov(pixels)
    squared = root @ root.T
    torch.testing.assert_close(squared / squared[0, 0], covariance / covariance[0, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(root, root.T)
    assert root.norm(dim=0).max().item() == pytest.approx(1.0)
    assert torch.equal(optimize.colour_matrix(None), torch.eye(3))


def test_a_spectrum_of_zeros_is_grey_and_every_frequency_is_scaled_by_its_inverse():
    assert torch.equal(optimize.to_pictures(torch.zeros(1, 3, 8, 5, 2), torch.eye(3), 8), torch.full((1, 3, 8, 8), 0.5))
    scale = optimize.frequency_scale(8, 8)
    assert scale.shape == (8, 5)
    assert scale[0, 1].item() == pytest.approx(8.0)  # 1/8 cycle per pixel
    assert scale[3, 4].item() == pytest.approx(1 / math.hypot(3 / 8, 4 / 8))
    assert scale[0, 0].item() == pytest.approx(8.0)  # the constant: as the lowest frequency


def test_the_optimised_pictures_excite_their_maps_more_than_the_strongest_photo(network, tmp_path):
    for colour, seed in (("red", 0), ("green", 1), ("blue", 2)):
        write_photos(tmp_path / colour, COLOURS[colour], 4, seed)
    inputs = torch.stack([load_input(path, SMALL) for path in find_images(str(tmp_path))])
    layer, maps = 3, [0, 5, 9]
    best = strongest_activations(network, [(0, inputs)], [layer], "cpu", k=1)[layer][0][maps, 0]
    pictures, strengths = optimize.optimise(network, layer, maps, SMALL, steps=48, seed=0)
    assert pictures.shape == (3, 3, 64, 64) and 0 <= pictures.min() and pictures.max() <= 1
    assert (strengths > best).all(), (strengths, best)
    # The strength reported is the rectified map's largest value on the picture as it is.
    normalised = (pictures - 0.5) / 0.5
    again = network.activations(normalised, [layer])[layer][torch.arange(3), maps].flatten(1).amax(1)
    torch.testing.assert_close(strengths, again)


def test_the_same_seed_gives_the_same_pictures_and_the_network_is_left_as_it_was(network):
    before = {name: value.clone() for name, value in network.state_dict().items()}
    first, _ = optimize.optimise(network, 5, [1, 2], SMALL, steps=6, seed=4)
    again, _ = optimize.optimise(network, 5, [1, 2], SMALL, steps=6, seed=4)
    other, _ = optimize.optimise(network, 5, [1, 2], SMALL, steps=6, seed=5)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert all(torch.equal(value, before[name]) for name, value in network.state_dict().items())
    assert all(parameter.requires_grad and parameter.grad is None for parameter in network.parameters())


def test_a_map_s_picture_does_not_depend_on_the_maps_optimised_beside_it(network):
    together, strengths = optimize.optimise(network, 4, [0, 3, 7], SMALL, steps=8, seed=2)
    alone, strength = optimize.optimise(network, 4, [3], SMALL, steps=8, seed=2)
    torch.testing.assert_close(alone[0], together[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(strength[0], strengths[1], atol=1e-4, rtol=1e-4)


def test_style_similarity_is_each_picture_s_mean_gram_cosine_to_its_map_s_others():
    outputs = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(0))  # 2 maps x 3 pictures
    grams = [(o.flatten(1) @ o.flatten(1).T).flatten() for o in outputs]
    expected = []
    for i in range(6):
        group = range(i // 3 * 3, i // 3 * 3 + 3)
        others = [torch.nn.functional.cosine_similarity(grams[i], grams[j], dim=0) for j in group if j != i]
        expected.append(sum(others) / 2)
    torch.testing.assert_close(optimize.style_similarity(outputs, 3), torch.stack(expected))


def test_diverse_pictures_of_a_map_differ_in_style_more_than_the_same_starts_without_the_penalty(network, monkeypatch):
    def similarity_of(pictures):
        with torch.no_grad():
            return optimize.style_similarity(optimize.pre_activation(network, 3, (pictures - 0.5) / 0.5), 3)

    diverse, strengths = optimize.optimise(network, 3, [0, 5], SMALL, steps=24, seed=1, per_map=3)
    assert diverse.shape == (6, 3, 64, 64) and strengths.shape == (6,)
    monkeypatch.setattr(optimize, "DIVERSITY", 0.0)
    alike, _ = optimize.optimise(network, 3, [0, 5], SMALL, steps=24, seed=1, per_map=3)
    assert similarity_of(diverse).mean() < similarity_of(alike).mean() - 0.05, (
        similarity_of(diverse),
        similarity_of(alike),
    )
    # Without the penalty each picture is the one its own start gives alone: the first is the map's usual one.
    usual, _ = optimize.optimise(network, 3, [5], SMALL, steps=24, seed=1)
    torch.testing.assert_close(alike[3], usual[0], atol=1e-4, rtol=0)


def test_a_map_s_diverse_pictures_do_not_depend_on_the_maps_optimised_beside_it(network):
    together, _ = optimize.optimise(network, 4, [0, 3], SMALL, steps=8, seed=2, per_map=2)
    alone, _ = optimize.optimise(network, 4, [3], SMALL, steps=8, seed=2, per_map=2)
    torch.testing.assert_close(alone, together[2:], atol=1e-4, rtol=0)
