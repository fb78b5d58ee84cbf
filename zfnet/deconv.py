"""The deconvnet of Zeiler & Fergus (2014, section 2.1): what one activation of a
convolutional layer responds to, projected down to pixel space.

A layer's feature maps are its rectified convolution outputs, before pooling. To project one
activation, every other activation of its layer is set to zero and the signal goes down layer
by layer: filter with the transpose of the layer's own filters (same stride and padding, no
bias), then for the layer below unpool with the switches its max-pooling recorded in the
forward pass, rectify, filter with its filters, and so on down to the pixels. Pooling windows
overlap (3x3, stride 2), so several windows can share one maximum: unpooling is the exact
transpose of the pooling's selection and adds up what lands on a shared switch
(nn.MaxUnpool2d would keep only one of them).

A projection equals the activation's value times its gradient with respect to the input image
when each ReLU's backward pass is replaced by a ReLU of the incoming gradient.

    fields = receptive_fields(model)                # {layer: ReceptiveField(size, stride, offset)}
    patches = project(model, images, [(image, layer, map, y, x), ...])
    # patches[i] (3, size, size): request i's projection inside fields[layer].box(y, x)
    full = paste(patches[i], fields[layer].box(y, x), images.shape[-1])   # (3, H, W)

`images` is a batch of network inputs (N, 3, H, W) and `image` an index into it; (y, x) is a
position in the layer's feature map. Projections are zero outside the receptive field, so the
patch is all there is. Speed: one forward pass per image serves all its projections, and each
projection is computed only inside the window its activation reaches at each layer below.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ReceptiveField:
    """The input patch one activation of a layer sees: `size` pixels square; activation
    (y, x)'s patch starts at row `offset + y * stride`, column `offset + x * stride`. A patch
    may reach past the image's edges, into the zero padding."""
    size: int
    stride: int
    offset: int

    def box(self, y, x):
        """`(top, left, bottom, right)` of activation (y, x)'s patch, bottom and right exclusive."""
        top, left = self.offset + y * self.stride, self.offset + x * self.stride
        return top, left, top + self.size, left + self.size


def _geometry(module):
    return tuple(value[0] if isinstance(value, tuple) else value
                 for value in (module.kernel_size, module.stride, module.padding))


def receptive_fields(model):
    """`{layer: ReceptiveField}` for each convolutional layer of `model`, from the kernels,
    strides and paddings of its convolutions and poolings."""
    fields = {}
    size, stride, offset = 1, 1, 0
    for n in model.conv_layers:
        stage = model.stage(n)
        for module in (stage.conv, getattr(stage, "pool", None)):
            if module is None:
                continue
            kernel, step, padding = _geometry(module)
            size += (kernel - 1) * stride
            offset -= padding * stride
            stride *= step
            if module is stage.conv:
                fields[n] = ReceptiveField(size, stride, offset)
    return fields


def paste(patch, box, image_size):
    """A patch from `project` placed in a zero image of `image_size` x `image_size` pixels."""
    top, left, bottom, right = box
    full = patch.new_zeros(patch.shape[0], image_size + patch.shape[1] * 2, image_size + patch.shape[2] * 2)
    margin = patch.shape[1]
    full[:, top + margin:bottom + margin, left + margin:right + margin] = patch
    return full[:, margin:margin + image_size, margin:margin + image_size]


def _transposed_conv(signal, weight, stride):
    """`conv_transpose2d(signal, weight, stride)` without padding, computed as one ordinary
    convolution with stride x stride kernels (one per output phase) and a pixel shuffle:
    CPU convolution kernels run several times faster than transposed ones."""
    in_channels, out_channels, kernel, _ = weight.shape
    taps = -(-kernel // stride)
    padded = F.pad(weight, (0, taps * stride - kernel, 0, taps * stride - kernel))
    # Output row q * stride + a sums signal[q - t] * weight[t * stride + a] over taps t.
    phases = padded.view(in_channels, out_channels, taps, stride, taps, stride)
    phases = phases.permute(1, 3, 5, 0, 2, 4).flip(-1, -2)
    phases = phases.reshape(out_channels * stride * stride, in_channels, taps, taps)
    out = F.pixel_shuffle(F.conv2d(signal, phases, padding=taps - 1), stride)
    side = (signal.shape[-1] - 1) * stride + kernel
    return out[:, :, :side, :side]


def _zero_outside(signal, origin, size):
    """Zero the window positions that lie outside a size x size map: they are padding,
    which the layer below never sees."""
    steps = torch.arange(signal.shape[-1], device=signal.device)
    rows = origin[:, 0, None] + steps
    cols = origin[:, 1, None] + steps
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return signal * inside[:, None]


def _unpool(signal, origin, switches, image, pool, maps_size):
    """Unpool windows of a pooled map: each value goes to its window's switch, and values
    whose windows share a switch add up. `switches` (N, C, h, w) are the flat indices of the
    maxima in the maps_size x maps_size maps; returns the unpooled windows and their origin."""
    kernel, step, padding = pool
    count, channels, side = signal.shape[0], signal.shape[1], signal.shape[-1]
    steps = torch.arange(side, device=signal.device)
    rows = (origin[:, 0, None] + steps).clamp(0, switches.shape[-2] - 1)
    cols = (origin[:, 1, None] + steps).clamp(0, switches.shape[-1] - 1)
    # Clamped positions hold zeros (see _zero_outside), so their switches only need to be valid.
    chosen = switches[image[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    out_origin = origin * step - padding
    out_side = (side - 1) * step + kernel
    local = ((chosen // maps_size - out_origin[:, 0, None, None, None]) * out_side
             + chosen % maps_size - out_origin[:, 1, None, None, None])
    local = local.clamp(0, out_side * out_side - 1)
    unpooled = signal.new_zeros(count, channels, out_side * out_side)
    unpooled.scatter_add_(2, local.view(count, channels, -1), signal.reshape(count, channels, -1))
    return unpooled.view(count, channels, out_side, out_side), out_origin


def _project_layer(model, layer, image_side, forward, image, channel, value, position):
    """Projections of the activations `value` (P,) of layer `layer`, maps `channel` (P,), at
    `position` (P, 2) of the images `image` (P,), indices into the batch that `forward` ran
    on: (P, 3, s, s), s the layer's receptive field."""
    layers = [n for n in model.conv_layers if n <= layer]
    signal = value.new_zeros(len(value), model.stage(layer).conv.out_channels, 1, 1)
    signal[torch.arange(len(value)), channel, 0, 0] = value
    origin = position
    for n, lower in zip(layers[::-1], [*layers[-2::-1], None]):
        conv = model.stage(n).conv
        kernel, step, padding = _geometry(conv)
        signal = _transposed_conv(signal, conv.weight, step)
        origin = origin * step - padding
        if lower is None:
            return _zero_outside(signal, origin, image_side)
        maps, switches = forward[lower]
        if switches is None:
            signal = _zero_outside(signal, origin, maps.shape[-1])
        else:
            signal = _zero_outside(signal, origin, switches.shape[-1])
            signal, origin = _unpool(signal, origin, switches, image,
                                     _geometry(model.stage(lower).pool), maps.shape[-1])
        signal = F.relu(signal)


def _check(model, images, requests):
    maps = {n: model.stage(n).conv.out_channels for n in model.conv_layers}
    for image, layer, channel, y, x in requests:
        if layer not in maps:
            raise ValueError(f"no convolutional layer {layer} (the network has {model.conv_layers})")
        if not 0 <= image < len(images) or not 0 <= channel < maps[layer] or min(y, x) < 0:
            raise ValueError(f"request {(image, layer, channel, y, x)} is outside the images or maps")


@torch.no_grad()
def project(model, images, requests, images_per_pass=16, projections_per_pass=64):
    """Deconvnet projections of single activations.

    `images` (N, 3, H, W) are network inputs; `requests` a sequence of
    `(image, layer, map, y, x)`. Returns a list with one (3, size, size) tensor per request,
    on the model's device: its projection inside `receptive_fields(model)[layer].box(y, x)`.
    """
    requests = [tuple(int(value) for value in request) for request in requests]
    _check(model, images, requests)
    device = next(model.parameters()).device
    patches = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: requests[i][0])
    wanted = sorted({requests[i][0] for i in order})
    for start in range(0, len(wanted), images_per_pass):
        chunk = wanted[start:start + images_per_pass]
        local = {image: i for i, image in enumerate(chunk)}
        rows = [i for i in order if requests[i][0] in local]
        batch = images[chunk].to(device).contiguous(memory_format=torch.channels_last)
        upto = max(requests[i][1] for i in rows)
        forward = {n: (maps, switches) for n, maps, switches in model.stages_forward(batch, upto, with_switches=True)}
        for layer in sorted({requests[i][1] for i in rows}):
            of_layer = [i for i in rows if requests[i][1] == layer]
            for first in range(0, len(of_layer), projections_per_pass):
                part = of_layer[first:first + projections_per_pass]
                image, _, channel, y, x = torch.tensor([requests[i] for i in part], device=device).T
                image = torch.tensor([local[requests[i][0]] for i in part], device=device)
                maps = forward[layer][0]
                if (y >= maps.shape[-2]).any() or (x >= maps.shape[-1]).any():
                    raise ValueError(f"a position lies outside layer {layer}'s {maps.shape[-1]}x{maps.shape[-1]} maps")
                value = maps[image, channel, y, x]
                field = _project_layer(model, layer, batch.shape[-1], forward, image, channel, value,
                                       torch.stack([y, x], 1))
                for i, patch in zip(part, field):
                    patches[i] = patch
    return patches
