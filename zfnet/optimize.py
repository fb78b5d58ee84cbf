"""What a feature map wants to see: an input optimised to excite it (Erhan et al. 2009,
"Visualizing higher-layer features of a deep network"; Olah et al. 2017, "Feature
Visualization", Distill), the picture OpenAI Microscope shows for each unit.

Optimising raw pixels finds high-frequency patterns that excite a map without resembling
anything; three things (Olah et al.'s, as Lucid and Lucent do them) keep the picture natural:
- the image is parametrised by its Fourier spectrum, each frequency scaled by 1/frequency,
  so that a step of gradient descent changes every scale about equally (the spectrum of
  natural photos falls as 1/frequency);
- its colours are parametrised decorrelated: the optimised channels are mixed by the square
  root of the colour covariance of the user's own photos (`colour_matrix`);
- every step sees the image randomly shifted, scaled and rotated (`random_transform`), so that
  only a pattern that excites the map wherever it lies survives.

The objective is the mean over the map of its convolution output through a leaky ReLU: the
rectified mean rewards the pattern the filter matches (the plain mean would not: an edge
filter's mean output is the same for every image), and the leak gives a map that starts off
everywhere a gradient. The strength reported is the largest value of the rectified map on the
untransformed image, what top9 ranks photos by.

Several pictures of one map can show several things it answers (Olah et al.'s diversity): each
is penalised by how alike its style is to the others' (the cosine similarity of the Gram
matrices of the layer's maps), a penalty scaled by the picture's own excitation so that it
weighs alike at every layer.
"""

import math

import torch
import torch.nn.functional as F

STEPS = 256
LEARNING_RATE = 0.05
INITIAL_SCALE = 0.01  # of the spectrum: the first image is a near-uniform grey
SHIFT = 8  # pixels, the largest jitter
SCALES = (0.95, 1.05)
DEGREES = 10
LEAK = 0.1  # the objective's slope where the map is off: a map off everywhere still learns
DIVERSITY = 1.0  # the share of its excitation a picture loses for the same style as its map's others


def colour_matrix(pictures):
    """The 3x3 matrix that gives decorrelated channels the colour covariance of `pictures`
    ((N, 3, H, W) in [0, 1]): its symmetric square root, scaled so that its largest column
    has norm 1. The identity when there are no pictures."""
    if pictures is None or len(pictures) == 0:
        return torch.eye(3)
    total, products, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64), 0
    for chunk in pictures.detach().split(16):  # in float64 a few at a time: a split's pixels take GBs
        pixels = chunk.permute(1, 0, 2, 3).reshape(3, -1).double()
        total, products, count = total + pixels.sum(1), products + pixels @ pixels.T, count + pixels.shape[1]
    mean = total / count
    covariance = (products - count * torch.outer(mean, mean)) / (count - 1)
    values, vectors = torch.linalg.eigh(covariance)
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    return (root / root.norm(dim=0).max().clamp(min=1e-12)).float()


def frequency_scale(height, width):
    """Each frequency of an rfft2 spectrum of a (height, width) image scaled by 1/frequency
    (the lowest nonzero one standing in for the constant term)."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return 1 / (fy**2 + fx**2).sqrt().clamp(min=1 / max(height, width))


def to_pictures(spectrum, colours, size):
    """`size` x `size` pictures in [0, 1] (N, 3, size, size) from the optimised spectrum
    (N, 3, size, size // 2 + 1, 2)."""
    scaled = torch.view_as_complex(spectrum) * frequency_scale(size, size).to(spectrum.device)
    channels = torch.fft.irfft2(scaled, s=(size, size), norm="ortho")
    mixed = torch.einsum("ij,njhw->nihw", colours, channels)
    return torch.sigmoid(mixed / 4)  # Lucid's constant: the first steps stay in the sigmoid's linear range


def _warp(images, angle=0.0, scale=1.0, shift=(0.0, 0.0)):
    """`images` rotated by `angle` degrees about their centre, scaled by `scale` and shifted by
    `shift` (x, y) pixels, at the same size; what comes in from outside is the mirror image."""
    height, width = images.shape[-2:]
    radians = math.radians(angle)
    cos, sin = math.cos(radians) / scale, math.sin(radians) / scale
    # affine_grid maps output coordinates in [-1, 1] to where they are read from the input.
    theta = torch.tensor(
        [[cos, -sin * height / width, -2 * shift[0] / width], [sin * width / height, cos, -2 * shift[1] / height]],
        dtype=images.dtype,
        device=images.device,
    )
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _uniform(generator, low, high):
    return low + (high - low) * torch.rand((), generator=generator).item()


def random_transform(images, generator):
    """`images` shifted by up to SHIFT pixels, scaled by a factor in SCALES and rotated by up to
    DEGREES, drawn from `generator`, at the same size: Lucid's jitter, scale and rotate, in one
    resampling instead of four (a quarter of their time)."""
    shift = [float(torch.randint(-SHIFT, SHIFT + 1, (), generator=generator)) for _ in range(2)]
    scale = _uniform(generator, *SCALES)
    angle = _uniform(generator, -DEGREES, DEGREES)
    return _warp(images, angle, scale, shift)


def pre_activation(model, layer, inputs):
    """Layer `layer`'s convolution output before its ReLU, for `inputs` (a copy: the network's
    ReLU rectifies in place)."""
    found = {}
    handle = model.stage(layer).conv.register_forward_hook(
        lambda module, args, output: found.update(out=output.clone())
    )
    try:
        model.activations(inputs, [layer])
    finally:
        handle.remove()
    return found["out"]


def _normaliser(preprocess, device):
    """The network's input normalisation of pictures in [0, 1]."""
    mean = torch.tensor(preprocess["mean"], device=device)[:, None, None]
    std = torch.tensor(preprocess["std"], device=device)[:, None, None]
    return lambda pictures: (pictures - mean) / std


def style_similarity(outputs, per_map):
    """For a layer's `outputs` (N * per_map, C, H, W), pictures grouped map by map, each
    picture's mean cosine similarity to the other pictures of its map, of the Gram matrices
    of their C maps (what a picture's texture is, wherever it lies): (N * per_map,)."""
    flat = outputs.flatten(2)
    grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1).view(-1, per_map, flat.shape[1] ** 2)
    similarity = grams @ grams.transpose(1, 2)  # (N, per_map, per_map), ones on the diagonal
    return ((similarity.sum(2) - 1) / (per_map - 1)).flatten()


def optimise(model, layer, maps, preprocess, colours=None, steps=STEPS, seed=0, progress=None, per_map=1):
    """`per_map` pictures per map of `maps` (of layer `layer`) optimised to excite it, all in one
    batch, map by map, several of a map pushed apart in style (DIVERSITY); `(pictures
    (N * per_map, 3, S, S) in [0, 1], strengths)`, the strength being the map's largest
    rectified activation on its picture. The same seed gives the same pictures (on the same
    device). `progress()` is called after each step when given."""
    device = next(model.parameters()).device
    size = preprocess["input_size"]
    colours = (torch.eye(3) if colours is None else colours).to(device)
    normalise = _normaliser(preprocess, device)
    # A map's starts are drawn from the seed and the map, the transformations from the seed: a
    # map's pictures are the same whichever maps are optimised beside it (the explorer adds some).
    shape = (3, size, size // 2 + 1, 2)
    starts = []
    for m in maps:
        draw = torch.Generator().manual_seed(seed * 100_003 + m)
        starts += [torch.randn(shape, generator=draw) for _ in range(per_map)]
    generator = torch.Generator().manual_seed(seed)
    spectrum = (torch.stack(starts) * INITIAL_SCALE).to(device).requires_grad_()
    optimiser = torch.optim.Adam([spectrum], lr=LEARNING_RATE)
    chosen = torch.tensor(maps, device=device).repeat_interleave(per_map)
    rows = torch.arange(len(chosen), device=device)

    def layer_outputs(pictures):
        return pre_activation(model, layer, normalise(pictures))

    learning = [p for p in model.parameters() if p.requires_grad]
    for parameter in learning:  # the weights' gradients would take a third of each step
        parameter.requires_grad_(False)
    try:
        for _ in range(steps):
            optimiser.zero_grad()
            outputs = layer_outputs(random_transform(to_pictures(spectrum, colours, size), generator))
            excitation = F.leaky_relu(outputs[rows, chosen], LEAK).flatten(1).mean(1)
            loss = -excitation
            if per_map > 1:
                loss = loss + DIVERSITY * excitation.detach().abs() * style_similarity(outputs, per_map)
            # Summed over pictures: a picture's gradient depends only on its map's pictures.
            loss.sum().backward()
            optimiser.step()
            if progress is not None:
                progress()
        with torch.no_grad():
            pictures = to_pictures(spectrum, colours, size)
            strengths = layer_outputs(pictures)[rows, chosen].clamp(min=0).flatten(1).amax(1)
    finally:
        for parameter in learning:
            parameter.requires_grad_(True)
    return pictures.cpu(), strengths.cpu()


def pictures_similarity(model, layer, pictures, preprocess, per_map):
    """`style_similarity` of `pictures` (N * per_map, 3, S, S) in [0, 1], as optimise returns
    them, through layer `layer`: how alike in style each is to the other pictures of its map."""
    device = next(model.parameters()).device
    with torch.no_grad():
        outputs = pre_activation(model, layer, _normaliser(preprocess, device)(pictures.to(device)))
    return style_similarity(outputs, per_map).cpu()
