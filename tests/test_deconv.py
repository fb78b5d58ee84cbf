"""The deconvnet against independent references.

Exactness is checked as the issue states it: a projection equals the activation's value times
the gradient of that activation with respect to the input, with every ReLU's backward pass
replaced by a ReLU of the incoming gradient. Two references compute that gradient: a small
autograd version written here, and captum's NeuronDeconvolution.

Tolerance: 1e-5 of the projection's largest magnitude, element by element. A per-element
relative test would be meaningless: a projection sums thousands of products of both signs,
so its near-zero pixels are differences of large numbers whose float32 rounding depends on
the order of summation. Measured against float64, our projections and the autograd ones
are both within about 2e-6 of this scale; a wrong switch, a missing rectification or an
off-by-one window would be off by far more than 1e-5.

Activations are the strongest of their map (or of their position), as the tools project
them: a projection scales with its activation's value, and a value near zero is itself a
difference of large numbers, ill-conditioned in any float32 implementation.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import NeuronDeconvolution
from torch import nn

from model import ZFNet
from tests.helpers import assert_close
from zfnet.deconv import ReceptiveField, crop, paste, project, receptive_fields

VARIANTS = {
    "zfnet-half": {},
    "zfnet-full": {"width": "full"},
    "alexnet-half": {"arch": "alexnet"},
    "layers-3-4-removed": {"conv_channels": (48, 128, 0, 0, 128)},
}


class DeconvnetReLU(torch.autograd.Function):
    """ReLU forward; backward passes the ReLU of the incoming gradient (the deconvnet rule)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def autograd_projection(model, image, layer, channel, y, x):
    """Value times the deconvnet-rule gradient of one activation, by autograd over the
    network's own convolutions and poolings (whose backward adds at shared switches)."""
    inputs = image[None].clone().requires_grad_()
    signal = inputs
    for n in model.conv_layers:
        stage = model.stage(n)
        signal = DeconvnetReLU.apply(stage.conv(signal))
        if n == layer:
            break
        if hasattr(stage, "pool"):
            signal = stage.pool(signal)
    activation = signal[0, channel, y, x]
    (gradient,) = torch.autograd.grad(activation, inputs)
    return activation.detach() * gradient[0]


def captum_projection(model, image, layer, channel, y, x):
    value = model.activations(image[None], [layer])[layer][0, channel, y, x]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it sets hooks on the ReLUs
        gradient = NeuronDeconvolution(model, model.stage(layer).relu).attribute(
            image[None], neuron_selector=(channel, y, x)
        )
    return value * gradient[0]


def strong_requests(model, images, maps_per_layer=2):
    """Per layer: the strongest activations of its most active maps, and at the map corners
    the strongest map there (to exercise windows that reach into the padding)."""
    requests = []
    with torch.no_grad():
        outputs = model.activations(images, model.conv_layers)
    for layer, maps in outputs.items():
        image = layer % len(images)
        peaks = maps[image].flatten(1).max(1).values
        for channel in peaks.topk(maps_per_layer).indices.tolist():
            y, x = divmod(maps[image, channel].argmax().item(), maps.shape[-1])
            requests.append((image, layer, channel, y, x))
        last = maps.shape[-1] - 1
        for y, x in ((0, 0), (last, last)):
            requests.append((image, layer, maps[image, :, y, x].argmax().item(), y, x))
    return requests


def full_projections(model, images, requests):
    fields = receptive_fields(model)
    patches = project(model, images, requests, images_per_pass=2, projections_per_pass=3)
    return [
        paste(patch, fields[layer].box(y, x), images.shape[-1]) for patch, (_, layer, _, y, x) in zip(patches, requests)
    ]


def trained_model():
    """A network after a few Adam steps on images whose class is their dominant colour:
    weights with the structure training gives, not just the initial distribution."""
    torch.manual_seed(1)
    model = ZFNet(num_classes=3)
    images = torch.rand(12, 3, 224, 224) * 0.5
    labels = torch.arange(12) % 3
    images[torch.arange(12), labels] += 0.5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(4):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_projections_equal_the_autograd_deconvnet_rule(variant):
    torch.manual_seed(0)
    model = ZFNet(**VARIANTS[variant]).eval()
    images = torch.randn(3, 3, 224, 224)
    requests = strong_requests(model, images)
    for request, projection in zip(requests, full_projections(model, images, requests)):
        assert_close(projection, autograd_projection(model, images[request[0]], *request[1:]), request)


def test_trained_projections_equal_autograd_and_captum():
    model = trained_model()
    torch.manual_seed(2)
    images = torch.rand(2, 3, 224, 224) * 2 - 1
    requests = strong_requests(model, images, maps_per_layer=1)
    for request, projection in zip(requests, full_projections(model, images, requests)):
        image = images[request[0]]
        assert_close(projection, autograd_projection(model, image, *request[1:]), request)
        assert_close(projection, captum_projection(model, image, *request[1:]), request)


def test_random_projections_equal_captum_on_both_archs():
    for variant in ("zfnet-full", "alexnet-half"):
        torch.manual_seed(3)
        model = ZFNet(**VARIANTS[variant]).eval()
        images = torch.randn(2, 3, 224, 224)
        requests = strong_requests(model, images, maps_per_layer=1)
        for request, projection in zip(requests, full_projections(model, images, requests)):
            assert_close(projection, captum_projection(model, images[request[0]], *request[1:]), (variant, request))


def test_tied_maxima_are_broken_as_the_models_own_forward_pass_breaks_them():
    """Flat regions give many pooling windows equal maxima (windows of zeros after the ReLU
    above all): the switches must be those of the network's plain forward pass, as autograd's."""
    torch.manual_seed(8)
    model = ZFNet().eval()
    images = torch.randn(2, 3, 224, 224)
    images[:, :, :, :150] = 0.3
    requests = strong_requests(model, images, maps_per_layer=3)
    for request, projection in zip(requests, full_projections(model, images, requests)):
        assert_close(projection, autograd_projection(model, images[request[0]], *request[1:]), request)


def shared_switch_model():
    """A network whose layer 1 copies the input's red channel at even pixels (channel 0 only)
    and whose layer-2 map 0 sums channel 0 of the pooled layer 1 with weights of one."""
    model = ZFNet(init_weights=False).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.layer1.conv.weight[0, 0, 1, 1] = 1  # stride 2, padding 1: map (i, j) = pixel (2i, 2j)
        model.layer2.conv.weight[0, 0] = 1
    return model


def test_unpooling_adds_up_contributions_to_a_shared_switch():
    model = shared_switch_model()
    image = torch.zeros(1, 3, 224, 224)
    image[0, 0, 2, 2] = 1  # layer-1 map 0 is 1 at (1, 1) only
    _, switches = model.stages_forward(image, 1, with_switches=True).__next__()[1:]
    # Pooling 3x3 with stride 2 and padding 1: the windows of pooled (0,0), (0,1), (1,0) and
    # (1,1) all hold map position (1, 1) and take it as their maximum.
    assert (switches[0, 0, :2, :2] == 1 * 110 + 1).all()

    value = model.activations(image, [2])[2][0, 0, 0, 0]
    assert value == 4  # the four pooled maxima of one, summed by map 0 of layer 2
    (patch,) = project(model, image, [(0, 2, 0, 0, 0)])
    projection = paste(patch, receptive_fields(model)[2].box(0, 0), 224)
    # The four windows each send the value down to the shared switch: 4 x 4 lands on pixel (2, 2).
    assert projection[0, 2, 2] == 16
    torch.testing.assert_close(projection, autograd_projection(model, image[0], 2, 0, 0, 0), rtol=0, atol=0)

    # nn.MaxUnpool2d keeps one of the four contributions instead of their sum.
    top_signal = torch.zeros(1, 128, 1, 1)
    top_signal[0, 0] = value
    pooled_signal = F.pad(F.conv_transpose2d(top_signal, model.layer2.conv.weight, stride=2), (0, 50, 0, 50))
    unpooled = nn.MaxUnpool2d(3, 2, 1)(pooled_signal, switches, output_size=(110, 110))
    overwritten = F.conv_transpose2d(unpooled.relu(), model.layer1.conv.weight, stride=2, padding=1, output_padding=1)
    assert overwritten[0, 0, 2, 2] == 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_receptive_fields_match_the_gradient_support(variant):
    """The input pixels that reach one activation: the union over random images of where its
    gradient is non-zero (one image's switches may miss a patch's edge rows)."""
    torch.manual_seed(4)
    model = ZFNet(**VARIANTS[variant]).eval()
    fields = receptive_fields(model)
    images = torch.randn(4, 3, 224, 224, requires_grad=True)
    outputs = model.activations(images, model.conv_layers)
    for layer, maps in outputs.items():
        side = maps.shape[-1]
        for y, x in ((side // 2, side // 2 - 1), (0, side - 1)):
            (gradient,) = torch.autograd.grad(maps[:, :, y, x].sum(), images, retain_graph=True)
            rows, cols = torch.nonzero(gradient.abs().sum((0, 1))).unbind(1)
            top, left, bottom, right = fields[layer].box(y, x)
            assert (rows.min().item(), cols.min().item()) == (max(top, 0), max(left, 0)), (layer, y, x)
            assert (rows.max().item() + 1, cols.max().item() + 1) == (min(bottom, 224), min(right, 224)), (layer, y, x)


def test_receptive_field_geometry():
    assert receptive_fields(ZFNet())[5] == ReceptiveField(size=139, stride=16, offset=-59)
    assert receptive_fields(ZFNet(arch="alexnet"))[1] == ReceptiveField(size=11, stride=4, offset=-2)
    assert sorted(receptive_fields(ZFNet(conv_channels=(48, 128, 0, 0, 128)))) == [1, 2, 5]


def test_patches_have_the_receptive_field_size_and_crop_matches_paste():
    torch.manual_seed(5)
    model = ZFNet().eval()
    images = torch.randn(2, 3, 224, 224)
    fields = receptive_fields(model)
    requests = [(1, layer, 0, 0, 3) for layer in model.conv_layers]
    for (_, layer, _, y, x), patch in zip(requests, project(model, images, requests)):
        box = fields[layer].box(y, x)
        assert patch.shape == (3, fields[layer].size, fields[layer].size)
        assert torch.equal(crop(paste(patch, box, 224), box), patch)  # nothing outside the image
        assert torch.equal(paste(crop(images[1], box), box, 224) != 0, paste(torch.ones_like(patch), box, 224) != 0)


def test_model_is_left_as_it_was():
    torch.manual_seed(6)
    model = ZFNet().eval()
    images = torch.randn(2, 3, 224, 224)
    before = model(images)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    project(model, images, strong_requests(model, images, maps_per_layer=1))
    assert torch.equal(model(images), before)
    assert all(torch.equal(tensor, state[name]) for name, tensor in model.state_dict().items())
    assert model.layer1.relu.inplace and not model.training
    assert not model._forward_hooks and not model.layer1.relu._backward_hooks


def test_bad_requests_raise_value_error():
    model = ZFNet(conv_channels=(48, 128, 0, 0, 128)).eval()
    images = torch.zeros(1, 3, 224, 224)
    for request in ((0, 3, 0, 0, 0), (1, 1, 0, 0, 0), (0, 1, 48, 0, 0), (0, 1, 0, 110, 0), (0, 5, 0, -1, 0)):
        with pytest.raises(ValueError):
            project(model, images, [request])
    with pytest.raises(ValueError, match="rule must be one of"):
        project(model, images, [(0, 1, 0, 0, 0)], rule="deconv")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_projections_on_cuda_equal_those_on_cpu():
    torch.manual_seed(7)
    model = ZFNet().eval()
    images = torch.randn(2, 3, 224, 224)
    requests = strong_requests(model, images)
    on_cpu = project(model, images, requests)
    on_gpu = project(model.cuda(), images, requests)
    for request, cpu, gpu in zip(requests, on_cpu, on_gpu):
        assert_close(gpu.cpu(), cpu, request)
