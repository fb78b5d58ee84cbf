"""zfnet.studies.sanity where the answers are known: the similarities against naive loops,
the cascade's order, a layer left exactly as it was by the steps above it, a hand-built
network whose deconvnet ignores a layer's biases while its gradient does not, layer 1's
template, and the whole measure against a naive loop of re-initialise and project by
autograd."""

import copy
import math

import pytest
import torch

from model import ZFNet
from tests.helpers import tiny_network
from zfnet.deconv import crop, inside, receptive_fields
from zfnet.studies import sanity

SIZE = 64


def naive_ranks(values):
    """Rank of each value: 1 + how many are smaller + half of the others equal to it."""
    values = values.double()
    smaller = (values[None, :] < values[:, None]).sum(1)
    equal = (values[None, :] == values[:, None]).sum(1)
    return 1 + smaller.double() + (equal.double() - 1) / 2


def naive_spearman(a, b):
    ranks_a, ranks_b = naive_ranks(a.flatten()), naive_ranks(b.flatten())
    return torch.corrcoef(torch.stack([ranks_a, ranks_b]))[0, 1].item()


def naive_ssim(a, b, side=11, sigma=1.5):
    """Wang et al.'s SSIM with the Gaussian weights written out, every window cut out on its
    own (unfold) and its statistics taken one by one."""
    steps = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    weights = torch.exp(-(steps[:, None] ** 2 + steps[None, :] ** 2) / (2 * sigma**2)).flatten()
    weights /= weights.sum()
    x, y = (torch.nn.functional.unfold(p.double()[None, None], side)[0].T for p in (a, b))  # (windows, side*side)
    mx, my = x @ weights, y @ weights
    vx, vy = ((x - mx[:, None]) ** 2) @ weights, ((y - my[:, None]) ** 2) @ weights
    cov = ((x - mx[:, None]) * (y - my[:, None])) @ weights
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean().item()


def test_spearman_equals_the_naive_rank_correlation_with_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (60,), generator=generator).float()  # many ties
    b = a + torch.randn(60, generator=generator) * 2
    assert sanity.spearman(a, b) == pytest.approx(naive_spearman(a, b), abs=1e-12)
    assert sanity.spearman(a, a.exp()) == pytest.approx(1.0)  # ranks, not values
    assert sanity.spearman(a, -a) == pytest.approx(-1.0)
    assert sanity.spearman(a, torch.zeros(60)) == 0.0  # an empty picture shares nothing


def test_ssim_equals_the_naive_window_loop():
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(20, 17, generator=generator)
    b = (a + 0.3 * torch.rand(20, 17, generator=generator)).clamp(0, 1)
    assert sanity.ssim(a, b) == pytest.approx(naive_ssim(a, b), abs=1e-12)
    assert sanity.ssim(a, a) == pytest.approx(1.0)
    assert sanity.ssim(a[:7, :8], b[:7, :8]) == pytest.approx(naive_ssim(a[:7, :8], b[:7, :8], side=7), abs=1e-12)


def test_the_cascade_goes_from_the_classifier_down_and_skips_removed_layers():
    names = [step for step, _ in sanity.cascade(ZFNet())]
    assert names == ["classifier", *(f"layer {n}" for n in (7, 6, 5, 4, 3, 2, 1))]
    removed = ZFNet(conv_channels=(48, 128, 0, 0, 128), fc_features=(64, 0))
    assert [step for step, _ in sanity.cascade(removed)] == ["classifier", "layer 6", "layer 5", "layer 2", "layer 1"]


def weight(network, name):
    return next(value for key, value in network.get_submodule(name).named_parameters() if key.endswith("weight"))


def test_randomised_networks_change_one_more_layer_per_step_and_repeat_with_the_seed():
    model = tiny_network(SIZE)
    before = copy.deepcopy(model.state_dict())
    steps = list(sanity.randomised(model, seed=3))
    order = [name for _, names in sanity.cascade(model) for name in names]
    for k, (_, network) in enumerate(steps):
        for i, name in enumerate(order):
            changed = not torch.equal(weight(network, name), weight(model, name))
            assert changed == (i <= k), (k, name)
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
    again = [network for _, network in sanity.randomised(model, seed=3)]
    other = [network for _, network in sanity.randomised(model, seed=4)]
    assert torch.equal(again[-1].layer1.conv.weight, steps[-1][1].layer1.conv.weight)
    assert not torch.equal(other[-1].layer1.conv.weight, steps[-1][1].layer1.conv.weight)
    # Re-initialised as the network is initialised: He-normal convolutions, zero biases.
    assert not steps[-1][1].layer3.conv.bias.any()
    fan_out = model.layer3.conv.out_channels * 9
    assert steps[-1][1].layer3.conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.15)


@pytest.fixture(scope="module")
def setup():
    model = tiny_network(SIZE, seed=2)
    generator = torch.Generator().manual_seed(5)
    pictures = torch.rand(4, 3, SIZE, SIZE, generator=generator)
    inputs = (pictures - 0.5) / 0.5
    with torch.no_grad():
        found = model.activations(inputs, model.conv_layers)
    requests = []
    for layer, maps in found.items():
        for channel in (0, 1):
            for image in range(len(inputs)):
                y, x = divmod(maps[image, channel].argmax().item(), maps.shape[-1])
                requests.append((image, layer, channel, y, x))
    return model, inputs, pictures, requests


@pytest.fixture(scope="module")
def measured(setup):
    return sanity.measure(*setup, seed=0)


def test_steps_above_a_layer_leave_its_pictures_exactly_as_they_were(measured):
    found = measured
    for rule, scores in found.scores.items():
        for i, (_, layer, _, _, _) in enumerate(found.requests):
            untouched = found.steps.index(f"layer {layer}")  # the steps before this one lie above the layer
            assert (scores["spearman"][:untouched, i] > 1 - 1e-9).all(), (rule, layer)
            assert (scores["ssim"][:untouched, i] > 1 - 1e-9).all(), (rule, layer)
            assert scores["spearman"][untouched:, i].max() < 1 - 1e-6, (rule, layer)


def test_the_deconvnet_ignores_a_layer_the_gradient_depends_on(setup):
    """Layer 3 has no pooling after it, and the deconvnet uses no forward pass's ReLU masks:
    its projections of layers 4 and 5 cannot see layer 3's biases. The gradient passes only
    where layer 3 is positive, which its biases decide."""
    model, inputs, pictures, requests = setup
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        maps = model.activations(inputs, [3])[3]
        shifted.layer3.conv.bias -= maps[maps > 0].median()  # turns about half of what was on in layer 3 off
    found = sanity.measure(model, inputs, pictures, requests, networks=[("layer 3's biases", shifted)])
    deep = torch.tensor([layer >= 4 for _, layer, *_ in requests])
    assert (found.scores["deconvnet"]["spearman"][0, deep] > 1 - 1e-12).all()
    assert (found.scores["deconvnet"]["ssim"][0, deep] > 1 - 1e-9).all()
    assert (found.scores["gradient"]["spearman"][0, deep] < 0.999).all()
    assert (found.scores["guided"]["spearman"][0, deep] < 0.999).all()
    shallow = ~deep  # layers 1 to 3: their projections do not pass layer 3's ReLU
    for rule in sanity.RULES:
        assert (found.scores[rule]["spearman"][0, shallow] > 1 - 1e-12).all()


class RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rule):
        ctx.rule = rule
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return grad.clamp(min=0), None
        if ctx.rule == "guided":
            return grad.clamp(min=0) * (x > 0), None
        return grad * (x > 0), None


def autograd_unit(model, image, layer, channel, y, x, rule):
    """The input gradient by `rule` of one convolution output before its ReLU, by autograd."""
    inputs = image[None].clone().requires_grad_()
    signal = inputs
    for n in model.conv_layers:
        stage = model.stage(n)
        out = stage.conv(signal)
        if n == layer:
            break
        signal = RuleReLU.apply(out, rule)
        if hasattr(stage, "pool"):
            signal = stage.pool(signal)
    (gradient,) = torch.autograd.grad(out[0, channel, y, x], inputs)
    return gradient[0]


def test_measure_equals_a_naive_loop_of_reinitialise_and_project(setup):
    model, inputs, pictures, requests = setup
    requests = requests[::8]  # one of each layer
    found = sanity.measure(model, inputs, pictures, requests, seed=7)
    fields = receptive_fields(model)
    for rule in sanity.RULES:
        trained = [autograd_unit(model, inputs[r[0]], *r[1:], rule).abs().sum(0) for r in requests]
        for s, (step, network) in enumerate(sanity.randomised(model, seed=7)):
            assert found.steps[s] == step
            for i, (image, layer, channel, y, x) in enumerate(requests):
                box = fields[layer].box(y, x)
                a = inside(crop(trained[i][None], box), box, SIZE)[0]
                b = autograd_unit(network, inputs[image], layer, channel, y, x, rule).abs().sum(0)
                b = inside(crop(b[None], box), box, SIZE)[0]
                assert found.scores[rule]["spearman"][s, i] == pytest.approx(naive_spearman(a, b), abs=2e-3)
                scaled = [m / m.max() if m.max() > 0 else m for m in (a, b)]
                side = min(11, *a.shape) - (1 - min(11, *a.shape) % 2)
                assert found.scores[rule]["ssim"][s, i] == pytest.approx(naive_ssim(*scaled, side=side), abs=2e-3)


def test_layer_1s_projections_are_one_template_and_its_photos_are_not(measured):
    """A layer-1 projection is its filter whatever the photo: a map's projections are
    identical (alike 1.0), while random photos' patches are not."""
    found = measured
    for rule in sanity.RULES:
        assert found.alike[rule][(1, 0)] == pytest.approx(1.0)
    assert abs(found.photos_alike[(1, 0)]) < 0.3
    sentences, recommended = sanity.verdicts(found)
    per_map = sum(request[1:3] == (1, 0) for request in found.requests)
    assert f"a map's {per_map} projections are more alike (1.00)" in sentences["deconvnet"][1]
    assert "one template whatever the photo" in sentences["deconvnet"][1]
    assert set(recommended) == {1, 2, 3, 4, 5}
    rule = recommended[5]["rule"]
    assert sanity.survival(found, rule, 5)[0] == min(sanity.survival(found, r, 5)[0] for r in sanity.RULES)


@pytest.mark.parametrize(
    "survives, words",
    [
        (0.67, "it shows the architecture more than the weights"),
        (0.3, "partly the weights, partly the architecture"),
        (0.05, "it shows the weights rather than the architecture"),
    ],
)
def test_a_verdict_quotes_its_numbers_and_says_what_they_mean(survives, words):
    sentence = sanity.verdict("deconvnet", 5, survives, 0.4, alike=0.2, photos_alike=0.15, per_map=9)
    assert sentence.startswith(
        f"layer 5, deconvnet: {survives:.2f} of the picture survives re-initialising every layer"
    )
    assert "SSIM 0.40" in sentence and words in sentence and "template" not in sentence


def test_rows_hold_every_rule_layer_and_step(measured):
    found = measured
    table = sanity.rows(found)
    assert len(table) == 3 * 5 * len(found.steps)
    first = table[0]
    assert (first["rule"], first["layer"], first["reinitialised_down_to"]) == ("deconvnet", 1, "classifier")
    assert first["spearman_mean"] == 1.0 and first["activations"] == 8
