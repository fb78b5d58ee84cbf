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
when each ReLU's backward pass is replaced by a ReLU of the incoming gradient. The same window
loop computes the other two rules of zfnet.projections (`rule="guided"`: that ReLU times the
forward pass's mask of positive activations; `rule="gradient"`: the plain gradient), value
times their gradient, at the deconvnet's speed.

    fields = receptive_fields(model)                # {layer: ReceptiveField(size, stride, offset)}
    patches = project(model, images, [(image, layer, map, y, x), ...])   # rule="deconvnet"
    # patches[i] (3, size, size): request i's projection inside fields[layer].box(y, x)
    full = paste(patches[i], fields[layer].box(y, x), images.shape[-1])   # (3, H, W)
    seen = crop(images[image], fields[layer].box(y, x))   # the image patch it sees

`images` is a batch of network inputs (N, 3, H, W) and `image` an index into it; (y, x) is a
position in the layer's feature map. Projections are zero outside the receptive field, so the
patch is all there is. Speed: one forward pass per image serves all its projections, and each
projection is computed only inside the window its activation reaches at each layer below.
"""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zfnet.projections import RULES


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
    return tuple(
        value[0] if isinstance(value, tuple) else value for value in (module.kernel_size, module.stride, module.padding)
    )


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


def _overlap(box, image_size):
    """The part of `box` inside the image: (rows, cols) slices in image coordinates and in
    the box's own coordinates."""
    top, left, bottom, right = box
    rows = slice(max(top, 0), min(bottom, image_size))
    cols = slice(max(left, 0), min(right, image_size))
    inner = (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
    return (rows, cols), inner


def paste(patch, box, image_size):
    """A patch from `project` placed in a zero image of `image_size` x `image_size` pixels."""
    (rows, cols), (inner_rows, inner_cols) = _overlap(box, image_size)
    full = patch.new_zeros(patch.shape[0], image_size, image_size)
    full[:, rows, cols] = patch[:, inner_rows, inner_cols]
    return full


def inside(patch, box, image_size):
    """The part of a patch from `project` that lies inside the image (what is outside is
    padding, zero in every projection)."""
    _, (inner_rows, inner_cols) = _overlap(box, image_size)
    return patch[:, inner_rows, inner_cols]


def crop(image, box):
    """The part of `image` (C, S, S) inside `box`, zero where the box reaches past its edges."""
    (rows, cols), (inner_rows, inner_cols) = _overlap(box, image.shape[-1])
    patch = image.new_zeros(image.shape[0], box[2] - box[0], box[3] - box[1])
    patch[:, inner_rows, inner_cols] = image[:, rows, cols]
    return patch


def _phases(weight, stride):
    """The weights of one ordinary convolution with stride x stride kernels (one per output
    phase) that, followed by a pixel shuffle, computes `conv_transpose2d(., weight, stride)`."""
    in_channels, out_channels, kernel, _ = weight.shape
    taps = -(-kernel // stride)
    padded = F.pad(weight, (0, taps * stride - kernel, 0, taps * stride - kernel))
    # Output row q * stride + a sums signal[q - t] * weight[t * stride + a] over taps t.
    phases = padded.view(in_channels, out_channels, taps, stride, taps, stride)
    phases = phases.permute(1, 3, 5, 0, 2, 4).flip(-1, -2)
    return phases.reshape(out_channels * stride * stride, in_channels, taps, taps).contiguous()


def _by_phases(signal, phases, kernel, stride):
    """`conv_transpose2d(signal, weight, stride)`, `phases` from _phases(weight, stride)."""
    taps = phases.shape[-1]
    out = F.pixel_shuffle(F.conv2d(signal, phases, padding=taps - 1), stride)
    side = (signal.shape[-1] - 1) * stride + kernel
    return out[:, :, :side, :side]


def _transposed_conv(conv):
    """The transposed convolution of `conv` without bias or padding, as a function of a
    channels-last signal (the faster layout on CPU and GPU). CPU transposed convolutions are
    slow when they write few channels, as the first layer's does (the image's 3): there one
    ordinary convolution per output phase runs about twice as fast; elsewhere
    conv_transpose2d is the faster."""
    kernel, stride, _ = _geometry(conv)
    if conv.in_channels > 3:
        return lambda signal: F.conv_transpose2d(signal, conv.weight, stride=stride)
    phases = _phases(conv.weight, stride)
    return lambda signal: _by_phases(signal, phases, kernel, stride)


def _zero_outside(signal, origin, size):
    """Zero the window positions that lie outside a size x size map: they are padding,
    which the layer below never sees."""
    steps = torch.arange(signal.shape[-1], device=signal.device)
    rows = origin[:, 0, None] + steps
    cols = origin[:, 1, None] + steps
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return signal * inside[:, None]


def _switch_codes(switches, maps_side, pool):
    """Each pooling window's switch as its place inside the window, 0 to kernel * kernel - 1,
    as (N, h, w, C) bytes: found once per image, it makes unpooling any window of the map a
    table look-up, and in this layout each window's codes for all channels are one row to
    gather."""
    kernel, step, padding = pool
    corner = torch.arange(switches.shape[-1], device=switches.device) * step - padding
    # With row = switch // maps_side and column = switch - row * maps_side, the code is
    # (row - corner row) * kernel + column - corner column.
    codes = switches.div(maps_side, rounding_mode="floor").mul_(kernel - maps_side).add_(switches)
    codes.sub_(corner[:, None] * kernel + corner)
    return codes.permute(0, 2, 3, 1).to(torch.uint8, memory_format=torch.contiguous_format)


@functools.cache
def _unpool_places(side, kernel, step, channels, device):
    """For unpooling side x side pooled windows into a channels-last window of side
    `(side - 1) * step + kernel`: the flat place of each switch code relative to its pooling
    window's corner (kernel * kernel,), and each pooled value's corner and channel (side,
    side, channels). They depend on the sizes only, so they are made once."""
    out_side = (side - 1) * step + kernel
    inside = torch.arange(kernel * kernel, device=device)
    inside = (inside // kernel * out_side + inside % kernel) * channels
    steps = torch.arange(side, device=device)
    corner = (steps[:, None] * out_side + steps) * step * channels
    return inside, corner[:, :, None] + torch.arange(channels, device=device)


def _window_rows(origin, side, image, height, width):
    """The flat (image, row, column) places of side x side windows at `origin` (P, 2) of maps
    height x width of the images `image` (P,), clamped to the maps: (P * side * side,)."""
    steps = torch.arange(side, device=origin.device)
    rows = (origin[:, 0, None] + steps).clamp(0, height - 1)
    cols = (origin[:, 1, None] + steps).clamp(0, width - 1)
    return ((image[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]).flatten()


def _positive_window(positive, origin, side, image):
    """The forward pass's mask of positive activations, `positive` (N, h, w, C) bytes, in
    side x side windows at `origin`: (P, C, side, side) bytes."""
    height, width, channels = positive.shape[1:]
    mask = positive.view(-1, channels).index_select(0, _window_rows(origin, side, image, height, width))
    return mask.view(len(origin), side, side, channels).permute(0, 3, 1, 2)


def _unpool(signal, origin, codes, image, pool):
    """Unpool windows of a pooled map: each value goes to its pooling window's switch, and
    values whose windows share a switch add up. `codes` (N, h, w, C) are _switch_codes;
    returns the unpooled windows, channels last, and their origin."""
    kernel, step, padding = pool
    count, channels, side = signal.shape[0], signal.shape[1], signal.shape[-1]
    height, width = codes.shape[1:3]
    # Clamped positions hold zeros (see _zero_outside), so they may add to any valid place.
    windows = _window_rows(origin, side, image, height, width)
    code = codes.view(-1, channels).index_select(0, windows).long()
    inside, base = _unpool_places(side, kernel, step, channels, signal.device)
    places = inside[code].view(count, side, side, channels) + base
    out_side = (side - 1) * step + kernel
    unpooled = signal.new_zeros(count, out_side, out_side, channels)
    unpooled.view(count, -1).scatter_add_(1, places.view(count, -1), signal.permute(0, 2, 3, 1).reshape(count, -1))
    return unpooled.permute(0, 3, 1, 2), origin * step - padding


def _project_layer(model, layer, image_side, forward, deconvs, image, channel, value, position, rule):
    """Projections of the activations `value` (P,) of layer `layer`, maps `channel` (P,), at
    `position` (P, 2) of the images `image` (P,), indices into the batch that `forward`
    ({layer: (maps, switch codes, positive mask)}) ran on, `deconvs` ({layer:
    _transposed_conv}), by `rule`: (P, 3, s, s), s the side of the layer's receptive field."""
    conv = model.stage(layer).conv
    kernel, step, padding = _geometry(conv)
    # The transposed convolution of a map that is zero but for one activation is that
    # activation times its filter.
    signal = value[:, None, None, None] * conv.weight[channel]
    origin = position * step - padding
    for lower in [n for n in model.conv_layers if n < layer][::-1]:
        maps, codes, positive = forward[lower]
        signal = _zero_outside(signal, origin, maps.shape[-1] if codes is None else codes.shape[1])
        if positive is not None:
            # Masking a pooled value masks its switch, where the forward pass had that value.
            signal = signal * _positive_window(positive, origin, signal.shape[-1], image)
        if codes is not None:
            signal, origin = _unpool(signal, origin, codes, image, _geometry(model.stage(lower).pool))
        if rule != "gradient":
            signal = F.relu_(signal)
        signal = deconvs[lower](signal.contiguous(memory_format=torch.channels_last))
        _, step, padding = _geometry(model.stage(lower).conv)
        origin = origin * step - padding
    return _zero_outside(signal, origin, image_side)


def _positive(maps, switches):
    """Where a layer's output (its pooled maps when it pools, as `switches` pick them from
    `maps`) is positive, as (N, h, w, C) bytes: the mask guided backpropagation and the
    gradient apply on the way down."""
    if switches is not None:
        maps = maps.flatten(2).gather(2, switches.flatten(2)).view(switches.shape)
    return (maps > 0).permute(0, 2, 3, 1).to(torch.uint8, memory_format=torch.contiguous_format)


def _check(model, images, requests):
    maps = {n: model.stage(n).conv.out_channels for n in model.conv_layers}
    for image, layer, channel, y, x in requests:
        if layer not in maps:
            raise ValueError(f"no convolutional layer {layer} (the network has {model.conv_layers})")
        if not 0 <= image < len(images) or not 0 <= channel < maps[layer] or min(y, x) < 0:
            raise ValueError(f"request {(image, layer, channel, y, x)} is outside the images or maps")


@torch.no_grad()
def project(model, images, requests, rule="deconvnet", unit=False, images_per_pass=16, projections_per_pass=64):
    """Projections of single activations by `rule` (one of zfnet.projections.RULES; the
    deconvnet is the paper's).

    `images` (N, 3, H, W) are network inputs; `requests` a sequence of
    `(image, layer, map, y, x)`. Returns a list with one (3, size, size) tensor per request,
    on the model's device: its projection inside `receptive_fields(model)[layer].box(y, x)`.
    With `unit`, the projection of a signal of 1 at the activation's place instead of its
    value: the picture's pattern whether the activation is on or off there.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    requests = [tuple(int(value) for value in request) for request in requests]
    _check(model, images, requests)
    device = next(model.parameters()).device
    patches = [None] * len(requests)
    deconvs = {n: _transposed_conv(model.stage(n).conv) for n in model.conv_layers}
    wanted = sorted({request[0] for request in requests})
    for start in range(0, len(wanted), images_per_pass):
        chunk = wanted[start : start + images_per_pass]
        local = {image: i for i, image in enumerate(chunk)}
        rows = [i for i, request in enumerate(requests) if request[0] in local]
        batch = images[chunk].to(device)
        upto = max(requests[i][1] for i in rows)
        forward = {}
        for n, maps, switches in model.stages_forward(batch, upto, with_switches=True):
            codes = positive = None
            # The deepest layer's switches and mask would only serve projections from layers above it.
            if switches is not None and n < upto:
                codes = _switch_codes(switches, maps.shape[-1], _geometry(model.stage(n).pool))
            if rule != "deconvnet" and n < upto:
                positive = _positive(maps, switches)
            forward[n] = maps, codes, positive
        for layer in sorted({requests[i][1] for i in rows}):
            of_layer = [i for i in rows if requests[i][1] == layer]
            for first in range(0, len(of_layer), projections_per_pass):
                part = of_layer[first : first + projections_per_pass]
                image, channel, y, x = torch.tensor(
                    [(local[requests[i][0]], *requests[i][2:]) for i in part], device=device
                ).T
                maps = forward[layer][0]
                if (y >= maps.shape[-2]).any() or (x >= maps.shape[-1]).any():
                    raise ValueError(f"a position lies outside layer {layer}'s {maps.shape[-1]}x{maps.shape[-1]} maps")
                value = torch.ones(len(part), device=device) if unit else maps[image, channel, y, x]
                field = _project_layer(
                    model, layer, batch.shape[-1], forward, deconvs, image, channel, value, torch.stack([y, x], 1), rule
                )
                for i, patch in zip(part, field):
                    patches[i] = patch
    return patches
