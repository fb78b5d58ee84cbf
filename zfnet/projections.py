"""Three ways to take a single activation, or a class score, down to pixel space, computed
exactly with autograd over the network's own layers; they differ only in what each ReLU
passes back (x is the ReLU's input in the forward pass, g the signal coming down):

    deconvnet  relu(g)            the deconvnet of Zeiler & Fergus 2014 (zfnet.deconv.project
                                  computes it faster, for activations: value x this gradient)
    guided     relu(g) * (x > 0)  guided backpropagation (Springenberg et al. 2015): the
                                  deconvnet's rule combined with the forward pass's ReLU mask
    gradient   g * (x > 0)        the plain gradient of the activation or score

    maps = neuron_projections(model, images, [(image, layer, map, y, x), ...], "guided")
    saliency = class_projections(model, images, targets, "gradient")

Each result is a full-size (3, H, W) gradient with respect to the network's input, as
Captum's NeuronGuidedBackprop / NeuronGradient and GuidedBackprop / Saliency(abs=False)
give it. An activation's gradient is zero outside its receptive field, so
zfnet.deconv.crop(result, box) loses nothing. The network must be in eval mode: dropout
would otherwise mix the photos' rows.
"""

import torch

RULES = ("deconvnet", "guided", "gradient")


class _RuleReLU(torch.autograd.Function):
    """ReLU forward; backward by one of the RULES."""

    @staticmethod
    def forward(ctx, x, rule):
        out = x.clamp(min=0)
        ctx.rule = rule
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return grad.clamp(min=0), None
        passed = out > 0  # x > 0: where the forward pass let the signal through
        if ctx.rule == "guided":
            return grad.clamp(min=0) * passed, None
        return grad * passed, None


def _forward(model, inputs, rule, layer=None):
    """The network's forward pass with every ReLU backing off by `rule`: the rectified maps
    of convolutional `layer` (before pooling), or the class scores when `layer` is None."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    x = inputs
    for n in model.conv_layers:
        stage = model.stage(n)
        x = _RuleReLU.apply(stage.conv(x), rule)
        if n == layer:
            return x
        if hasattr(stage, "pool"):
            x = stage.pool(x)
    x = torch.flatten(x, 1)
    for n in model.fc_layers:
        stage = model.stage(n)
        x = _RuleReLU.apply(stage.linear(stage.dropout(x)), rule)
    return model.classifier(x)


def _input_gradients(model, inputs, index, rule, layer=None):
    """d outputs[index] / d inputs, where `index` picks one number per row of the outputs
    (CPU index tensors, which index tensors on any device): the rows do not interact, so the
    gradient of their sum is each row's own."""
    device = next(model.parameters()).device
    with torch.enable_grad():
        inputs = inputs.detach().to(device).requires_grad_()
        (gradient,) = torch.autograd.grad(_forward(model, inputs, rule, layer)[index].sum(), inputs)
    return gradient


def neuron_projections(model, images, requests, rule, batch_size=64):
    """One (3, H, W) gradient per request `(image, layer, map, y, x)` (indices into `images`
    (N, 3, H, W) and the layer's maps): the gradient of that activation by `rule`."""
    requests = [tuple(int(value) for value in request) for request in requests]
    results = [None] * len(requests)
    for layer in sorted({request[1] for request in requests}):
        rows = [i for i, request in enumerate(requests) if request[1] == layer]
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            image, _, channel, y, x = torch.tensor([requests[i] for i in part]).T
            gradients = _input_gradients(model, images[image], (torch.arange(len(part)), channel, y, x), rule, layer)
            for i, gradient in zip(part, gradients):
                results[i] = gradient
    return results


def class_projections(model, images, targets, rule):
    """(N, 3, H, W): the gradient of each image's score of class `targets[i]` by `rule`."""
    targets = torch.as_tensor(targets).view(-1)
    return _input_gradients(model, images, (torch.arange(len(targets)), targets), rule)
