import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import ZFNet


def stage_widths(model, x):
    """Spatial width after every conv and pool, in order."""
    widths = []
    for n in model.conv_layers:
        for module in model.stage(n):
            x = module(x)
            if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
                widths.append(x.shape[-1])
    return widths


@pytest.mark.parametrize(
    "width, channels, fc", [("half", (48, 128, 192, 192, 128), 2048), ("full", (96, 256, 384, 384, 256), 4096)]
)
def test_zfnet_shapes_at_every_stage(width, channels, fc):
    model = ZFNet(num_classes=5, width=width).eval()
    x = torch.randn(2, 3, 224, 224)
    # conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5: the seed's 110, 55, 26, 13, 13, 13, 6
    assert stage_widths(model, x) == [110, 55, 26, 13, 13, 13, 13, 6]
    outputs = {n: out.shape[1:] for n, out, _ in model.stages_forward(x, upto=7)}
    assert outputs[1] == (channels[0], 110, 110)
    assert outputs[2] == (channels[1], 26, 26)
    assert [outputs[n][0] for n in (3, 4, 5)] == list(channels[2:])
    assert outputs[6] == (fc,) and outputs[7] == (fc,)
    assert model(x).shape == (2, 5)


def test_alexnet_first_layer_is_11x11_stride_4():
    model = ZFNet(arch="alexnet").eval()
    conv = model.layer1.conv
    assert conv.kernel_size == (11, 11) and conv.stride == (4, 4)
    x = torch.randn(1, 3, 224, 224)
    assert stage_widths(model, x) == [55, 27, 27, 13, 13, 13, 13, 6]
    assert model(x).shape == (1, 5)


def test_initialisation_follows_the_seed():
    torch.manual_seed(0)
    model = ZFNet(width="full")
    conv = model.layer2.conv.weight  # kaiming normal, fan_out: std = sqrt(2 / (out * k * k))
    expected = (2 / (256 * 5 * 5)) ** 0.5
    assert conv.std().item() == pytest.approx(expected, rel=0.02)
    assert model.layer6.linear.weight.std().item() == pytest.approx(0.01, rel=0.02)
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_stages_forward_matches_forward_and_records_the_pooling_switches():
    torch.manual_seed(0)
    model = ZFNet().eval()
    x = torch.randn(2, 3, 224, 224)
    records = list(model.stages_forward(x, upto=7, with_switches=True))
    features = records[-1][1]
    assert torch.allclose(model.classifier(features), model(x), atol=1e-6)
    for n, maps, switches in records:
        if n in (1, 2, 5):
            pool = model.stage(n).pool
            pooled, expected = F.max_pool2d(maps, pool.kernel_size, pool.stride, pool.padding, return_indices=True)
            assert torch.equal(switches, expected)
            assert torch.equal(pooled, pool(maps))
        else:
            assert switches is None
    # without asking, no switches are recorded
    assert all(s is None for _, _, s in model.stages_forward(x, upto=5))


def test_activations_stop_at_the_deepest_layer_asked_for():
    model = ZFNet().eval()
    x = torch.randn(1, 3, 224, 224)
    calls = []
    model.layer6.register_forward_hook(lambda *args: calls.append(6))
    maps = model.activations(x, [1, 5])
    assert sorted(maps) == [1, 5] and maps[5].shape == (1, 128, 13, 13)
    assert calls == []
    assert (maps[1] >= 0).all()  # rectified


def test_config_rebuilds_the_same_network():
    model = ZFNet(num_classes=3, width="full", arch="alexnet")
    clone = ZFNet(**model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(model.eval()(x), clone.eval()(x))


def test_ablation_variants_remove_layers():
    model = ZFNet(conv_channels=(48, 128, 0, 0, 128), fc_features=(2048, 0))
    assert model.conv_layers == [1, 2, 5] and model.fc_layers == [6]
    assert model.layer5.conv.in_channels == 128
    assert model.classifier.in_features == 2048
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)
    with pytest.raises(KeyError):
        model.stage(3)
    with pytest.raises(ValueError):
        ZFNet(width="double")
    with pytest.raises(ValueError):
        ZFNet(conv_channels=(0, 128, 192, 192, 128))
