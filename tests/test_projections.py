"""Guided backpropagation and the input gradient (zfnet.projections) against Captum, and each
rule against zfnet.deconv.project's window loop.

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
from zfnet.projections import RULES, class_projections, neuron_projections

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


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_times_the_value_is_the_window_loops_projection(setup, rule):
    model, images = setup
    requests = strongest_requests(model, images)
    fields = receptive_fields(model)
    ours = neuron_projections(model, images, requests, rule)
    patches = project(model, images, requests, rule=rule, projections_per_pass=5)
    units = project(model, images, requests, rule=rule, unit=True)
    with torch.no_grad():
        found = model.activations(images, model.conv_layers)
    for (image, layer, channel, y, x), gradient, patch, unit in zip(requests, ours, patches, units):
        value = found[layer][image, channel, y, x]
        assert value > 0
        assert_close(value * gradient, paste(patch, fields[layer].box(y, x), images.shape[-1]))
        # A positive activation's own ReLU passes a signal of 1 by every rule.
        assert_close(gradient, paste(unit, fields[layer].box(y, x), images.shape[-1]))


def test_a_unit_projection_is_drawn_where_the_activation_is_off(setup):
    """With `unit`, an activation that is zero still gets the pattern its rule draws: the
    deconvnet's ignores the activation's own ReLU, so it is the same as when it is on."""
    model, images = setup
    with torch.no_grad():
        maps = model.activations(images, [2])[2]
    image, channel, y, x = (maps[:, :, 1:-1, 1:-1] == 0).nonzero()[0].tolist()
    request = [(image, 2, channel, y + 1, x + 1)]
    assert not project(model, images, request)[0].any()
    (unit,) = project(model, images, request, unit=True)
    reference = neuron_projections(model, images, request, "deconvnet")[0]
    assert unit.any()
    assert_close(paste(unit, receptive_fields(model)[2].box(y + 1, x + 1), images.shape[-1]), reference)


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
