"""ZFNet (Zeiler & Fergus 2014) and its AlexNet-style sibling.

The stages are named as the paper counts them: `layer1` to `layer5` are convolutional
(conv, ReLU, and max-pooling after layers 1, 2 and 5), `layer6` and `layer7` are fully
connected, then `classifier`. Tools address "layer 5", never `features[10]`.

For a 224x224 input the half-width ZFNet's maps are 110 (conv1), 55 (pool1), 26 (conv2),
13 (pool2, conv3, conv4, conv5) and 6 (pool5) pixels wide, as in the seed.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = {
    "half": {"conv_channels": (48, 128, 192, 192, 128), "fc_features": (2048, 2048)},  # the seed's
    "full": {"conv_channels": (96, 256, 384, 384, 256), "fc_features": (4096, 4096)},  # the paper's
}

# (kernel, stride, padding) of the layers that differ between the two networks. ZFNet's
# first layer is 7x7 stride 2 where AlexNet's was 11x11 stride 4 (the paper's section 4.1).
ARCHS = {
    "zfnet": {
        "conv": [(7, 2, 1), (5, 2, 0), (3, 1, 1), (3, 1, 1), (3, 1, 1)],
        "pool": {1: (3, 2, 1), 2: (3, 2, 1), 5: (3, 2, 0)},
    },
    "alexnet": {
        "conv": [(11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)],
        "pool": {1: (3, 2, 0), 2: (3, 2, 0), 5: (3, 2, 0)},
    },
}
CONV_LAYERS = (1, 2, 3, 4, 5)
FC_LAYERS = (6, 7)
# A network whose weights would take gigabytes comes from a mistake (an absurd input size or
# width), never from a run this project makes: refuse it before allocating anything.
MAX_PARAMETERS = 2**28  # 1 GiB of float32 weights; the full-width paper network has 58 million


class ZFNet(nn.Module):
    """ZFNet with named stages.

    `conv_channels` and `fc_features` override the widths layer by layer; a 0 removes that
    layer (the paper's ablations: `conv_channels=(48, 128, 0, 0, 128)` drops layers 3 and 4,
    `fc_features=(2048, 0)` drops layer 7). `ZFNet(**model.config)` rebuilds the same network.
    """

    def __init__(
        self,
        num_classes=5,
        width="half",
        arch="zfnet",
        conv_channels=None,
        fc_features=None,
        input_size=224,
        init_weights=True,
    ):
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {sorted(WIDTHS)}, not {width!r}")
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, not {arch!r}")
        conv_channels = tuple(conv_channels or WIDTHS[width]["conv_channels"])
        fc_features = tuple(fc_features or WIDTHS[width]["fc_features"])
        if len(conv_channels) != 5 or len(fc_features) != 2 or conv_channels[0] == 0 or conv_channels[4] == 0:
            raise ValueError("conv_channels needs 5 widths (layers 1 and 5 kept), fc_features 2")
        numbers = {
            "num_classes": [num_classes],
            "input_size": [input_size],
            "conv_channels": conv_channels,
            "fc_features": fc_features,
        }
        for name, values in numbers.items():
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
                raise ValueError(f"{name} must be whole numbers, none negative, not {list(values)}")
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        self.config = {
            "num_classes": num_classes,
            "width": width,
            "arch": arch,
            "conv_channels": list(conv_channels),
            "fc_features": list(fc_features),
            "input_size": input_size,
        }

        self.conv_layers = [n for n in CONV_LAYERS if conv_channels[n - 1]]
        self.fc_layers = [n for n in FC_LAYERS if fc_features[n - 6]]
        geometry = ARCHS[arch]
        channels = 3
        for n in self.conv_layers:
            kernel, stride, padding = geometry["conv"][n - 1]
            parts = [
                ("conv", nn.Conv2d(channels, conv_channels[n - 1], kernel, stride, padding)),
                ("relu", nn.ReLU(inplace=True)),
            ]
            if n in geometry["pool"]:
                parts.append(("pool", nn.MaxPool2d(*geometry["pool"][n])))
            setattr(self, f"layer{n}", nn.Sequential(OrderedDict(parts)))
            channels = conv_channels[n - 1]

        features = channels * self._pooled_size(input_size) ** 2
        sizes = [features, *(fc_features[n - 6] for n in self.fc_layers), num_classes]
        parameters = sum(a * b for a, b in zip(sizes, sizes[1:]))
        if parameters > MAX_PARAMETERS:
            raise ValueError(
                f"input_size {input_size} with these widths needs {parameters * 4 / 2**30:.1f} GiB of "
                f"fully connected weights (the most allowed is {MAX_PARAMETERS * 4 / 2**30:.0f} GiB)"
            )
        for n in self.fc_layers:
            setattr(
                self,
                f"layer{n}",
                nn.Sequential(
                    OrderedDict(
                        [
                            ("dropout", nn.Dropout(p=0.5)),
                            ("linear", nn.Linear(features, fc_features[n - 6])),
                            ("relu", nn.ReLU(inplace=True)),
                        ]
                    )
                ),
            )
            features = fc_features[n - 6]
        self.classifier = nn.Linear(features, num_classes)
        if init_weights:
            self._initialize_weights()

    def _pooled_size(self, input_size):
        size = input_size
        for n in self.conv_layers:
            for module in self.stage(n):
                if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
                    k, s, p = (_pair_first(module.kernel_size), _pair_first(module.stride), _pair_first(module.padding))
                    size = (size + 2 * p - k) // s + 1
        if size < 1:
            raise ValueError(f"input_size {input_size} is too small for this network")
        return size

    def _initialize_weights(self):
        for module in self.modules():
            initialize(module)

    def stage(self, n):
        """The module of layer `n` (1 to 7) as the paper counts them."""
        if n not in self.conv_layers + self.fc_layers:
            raise KeyError(f"this network has no layer {n} (it has {self.conv_layers + self.fc_layers})")
        return getattr(self, f"layer{n}")

    def forward(self, x):
        for n in self.conv_layers:
            x = self.stage(n)(x)
        x = torch.flatten(x, 1)
        for n in self.fc_layers:
            x = self.stage(n)(x)
        return self.classifier(x)

    def stages_forward(self, x, upto, with_switches=False):
        """Run layers 1..`upto`, yielding `(layer, rectified output, switches)` for each.

        A convolutional layer's output is its rectified feature maps before pooling, the
        maps the deconvnet projects. `switches` are the flat indices of each pooling
        window's maximum (as `max_pool2d(..., return_indices=True)` gives them), recorded
        only when asked so that the plain forward pass pays nothing for them; None for
        fully connected layers and layers without pooling.
        """
        for n in self.conv_layers + self.fc_layers:
            if n > upto:
                return
            stage = self.stage(n)
            if n in FC_LAYERS:
                x = stage(torch.flatten(x, 1))
                yield n, x, None
                continue
            x = stage.relu(stage.conv(x))
            maps, switches = x, None
            if hasattr(stage, "pool"):
                pool = stage.pool
                if with_switches:
                    # CPU pooling with indices runs faster channels-last and keeps the same
                    # switches (the first maximum of a window in reading order); the next
                    # layer gets the usual layout, so its output is the plain pass's.
                    x, switches = F.max_pool2d(
                        maps.contiguous(memory_format=torch.channels_last),
                        pool.kernel_size,
                        pool.stride,
                        pool.padding,
                        return_indices=True,
                    )
                    x = x.contiguous()
                else:
                    x = pool(maps)
            yield n, maps, switches

    def activations(self, x, layers):
        """Rectified outputs of the given layers (dict layer -> tensor), running only as far
        as the deepest of them."""
        wanted = set(layers)
        for n in wanted:
            self.stage(n)
        return {n: out for n, out, _ in self.stages_forward(x, max(wanted)) if n in wanted}


def initialize(module, generator=None):
    """Give a convolution or linear layer the network's initial weights (He-normal
    convolutions, N(0, 0.01) linear layers, zero biases), drawn from `generator` (torch's
    global one if None); any other module is left as it is."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0, 0.01, generator=generator)
        nn.init.zeros_(module.bias)


def _pair_first(value):
    return value[0] if isinstance(value, tuple) else value
