"""Guided backpropagation and the input gradient (zfnet.projections) against Captum, and the
deconvnet rule against zfnet.deconv.project.

Tolerance: 1e-5 of the reference's largest magnitude, element by element, as in
test_deconv.py (a gradient sums many products of both signs, so its near-zero pixels are
float32 rounding; a wrong mask or rule is off by far more). Activations are the strongest of
their maps, as the explorer projects them.
"""

import warnings

import pytest
import torch
from captum.attr import GuidedBackprop, NeuronGradient, NeuronGuidedBackprop, Saliency

from tests.helpers import assert_close, tiny_network
from zfnet.deconv import paste, project, receptive_fields
from zfnet.projections import class_projections, neuron_projections

NETWORKS = {"zfnet": {"input_size": 64}, "alexnet": {"input_size": 96, "arch": "alexnet"}}


@pytest.fixture(params=list(NETWORKS), scope="module")
def setup(request):
    model = tiny_network(**NETWORKS[request.param])
    size = model.config["input_size"]
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, images


def strongest_requests(model, images):
    """For each image and layer, the strongest activations of the two most active maps."""
    requests = []
    with torch.no_grad():
        found = model.activations(images, model.conv_layers)
    for layer, maps in found.items():
        for image in range(len(images)):
            peaks = maps[image].flatten(1).max(1)
            for channel in peaks.values.topk(2).indices.tolist():
                y, x = divmod(peaks.indices[channel].item(), maps.shape[-1])
                requests.append((image, layer, channel, y, x))
    return requests


def quietly(attribute, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it hooks the ReLUs
        return attribute(*args, **kwargs)


@pytest.mark.parametrize("rule, method", [("guided", NeuronGuidedBackprop), ("gradient", NeuronGradient)])
def test_single_activations_equal_captums(setup, rule, method):
    model, images = setup
    requests = strongest_requests(model, images)
    ours = neuron_projections(model, images, requests, rule, batch_size=4)  # several batches per layer
    for request, projection in zip(requests, ours):
        image, layer, channel, y, x = request
        reference = quietly(
            method(model, model.stage(layer).relu).attribute, images[image : image + 1], neuron_selector=(channel, y, x)
        )[0]
        assert_close(projection, reference)


@pytest.mark.parametrize("rule, method", [("guided", GuidedBackprop), ("gradient", Saliency)])
def test_class_scores_equal_captums(setup, rule, method):
    model, images = setup
    targets = [0, 2, 1]
    ours = class_projections(model, images, targets, rule)
    options = {"abs": False} if method is Saliency else {}
    for image, target in enumerate(targets):
        reference = quietly(method(model).attribute, images[image : image + 1], target=target, **options)[0]
        assert_close(ours[image], reference)


def test_the_deconvnet_rule_times_the_value_is_the_deconvnets_projection(setup):
    model, images = setup
    requests = strongest_requests(model, images)
    fields = receptive_fields(model)
    ours = neuron_projections(model, images, requests, "deconvnet")
    patches = project(model, images, requests)
    with torch.no_grad():
        found = model.activations(images, model.conv_layers)
    for (image, layer, channel, y, x), gradient, patch in zip(requests, ours, patches):
        value = found[layer][image, channel, y, x]
        assert_close(value * gradient, paste(patch, fields[layer].box(y, x), images.shape[-1]))


def test_an_activations_gradient_lies_inside_its_receptive_field(setup):
    model, images = setup
    requests = strongest_requests(model, images)
    fields = receptive_fields(model)
    for (_, layer, _, y, x), gradient in zip(requests, neuron_projections(model, images, requests, "gradient")):
        top, left, bottom, right = fields[layer].box(y, x)
        outside = gradient.clone()
        outside[:, max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = 0
        assert not outside.any()


def test_the_three_rules_give_three_pictures(setup):
    """Guided backpropagation stops the negative signals that the plain gradient passes, and
    keeps the forward pass's mask that the deconvnet ignores: a layer-5 activation, whose
    signal crosses four ReLUs, comes out differently under each rule."""
    model, images = setup
    request = strongest_requests(model, images)[-1]
    guided, gradient, deconvnet = (
        neuron_projections(model, images, [request], rule)[0] for rule in ("guided", "gradient", "deconvnet")
    )
    assert not torch.equal(guided, gradient) and not torch.equal(guided, deconvnet)


def test_an_unknown_rule_is_refused(setup):
    model, images = setup
    with pytest.raises(ValueError, match="rule must be one of"):
        class_projections(model, images, [0, 0, 0], "deconv")


def test_results_stay_where_the_network_is_and_need_no_gradients_of_the_caller(setup):
    model, images = setup
    with torch.no_grad():
        result = neuron_projections(model, images, [(0, 5, 0, 0, 0)], "guided")[0]
    assert result.device == images.device and result.shape == images.shape[1:]
    assert all(parameter.grad is None for parameter in model.parameters())
