"""Spatial-frequency measures of first layers and their projections (the paper's section 4.1),
as compare_arch.py reports them, and how a measured pair bears on the paper's claims.

Frequencies are in cycles per input pixel. Bands: low below 1/8, middle 1/8 to 1/4, high
above 1/4. A stride-s layer samples its output every s pixels, so its filters' energy above
1/(2s) aliases, and a pattern that repeats every s pixels puts power at k/s.
"""

import math

import torch

BANDS = {"low": (0, 1 / 8), "middle": (1 / 8, 1 / 4), "high": (1 / 4, math.inf)}  # cycles per pixel
FILTER_FFT_SIZE = 64  # zero-padded: a 7x7 and an 11x11 filter's spectra on the same frequency grid
CLOSE = 0.1  # relative difference under which a comparison says nothing either way


def radii(size):
    """Spatial frequency (cycles per pixel) of each bin of a size x size FFT."""
    frequencies = torch.fft.fftfreq(size)
    return torch.hypot(frequencies[:, None], frequencies[None, :])


def power_spectra(patches, size):
    """Power spectra (N, size, size) of (N, 3, h, w) patches zero-padded to size x size,
    summed over the colour channels."""
    return torch.fft.fft2(patches.double(), s=(size, size)).abs().square().sum(1)


def spectrum_size(height, width):
    """FFT size for patches of height x width: FILTER_FFT_SIZE, or a whole picture's size where
    it is larger (a smaller FFT would measure only its top-left corner)."""
    return max(FILTER_FFT_SIZE, height, width)


def energy_shares(weights, ranges):
    """Share of a layer's filter energy (or of pictures') between each `(low, high)` frequency
    of `ranges` (all pooled, so a faded filter counts for little)."""
    size = spectrum_size(*weights.shape[-2:])
    spectrum = power_spectra(weights, size).sum(0)
    radius = radii(size)
    return [(spectrum[(radius >= low) & (radius < high)].sum() / spectrum.sum()).item() for low, high in ranges]


def band_shares(weights):
    """Share of a layer's filter energy in each of the BANDS."""
    return dict(zip(BANDS, energy_shares(weights, BANDS.values())))


def band_areas():
    """Each band's share of the frequency plane: the energy shares of white-noise filters,
    the reference for learned ones."""
    radius = radii(FILTER_FFT_SIZE)
    return {band: ((radius >= low) & (radius < high)).double().mean().item() for band, (low, high) in BANDS.items()}


def grid_contrast(spectrum, stride, width):
    """Power at the stride grid's frequencies (k/stride, l/stride cycles per pixel, except 0)
    over the mean power of the ring `width` to 2 * `width` bins around each, summed over the
    grid points; `spectrum` is a size x size power spectrum (periodic, so rings wrap)."""
    size = spectrum.shape[-1]
    bins = torch.arange(size)
    peaks = rings = 0.0
    for k in range(stride):
        for m in range(stride):
            if k == m == 0:
                continue
            row, column = round(k * size / stride) % size, round(m * size / stride) % size
            dy = torch.minimum((bins - row).abs(), size - (bins - row).abs())
            dx = torch.minimum((bins - column).abs(), size - (bins - column).abs())
            distance = torch.hypot(dy[:, None].double(), dx[None, :].double())
            peaks += spectrum[row, column].item()
            rings += spectrum[(distance > width) & (distance <= 2 * width)].mean().item()
    return peaks / rings


def verdict(coarse_value, fine_value, claim):
    """How a measured pair bears on a claim that the coarse network's value is the larger
    (claim "more") or the smaller ("fewer"); a difference within CLOSE is no evidence."""
    if abs(coarse_value - fine_value) <= CLOSE * max(abs(coarse_value), abs(fine_value)):
        return f"too close to call (within {CLOSE:.0%}) for the paper's claim"
    in_line = (coarse_value > fine_value) == (claim == "more")
    return "in line with the paper's claim" if in_line else "unlike the paper's claim"


SMOOTH_BELOW = 1 / 4  # cycles per pixel: the low and middle bands


FADED_NORM = 0.1  # a filter under this share of the median filter norm has faded away


def faded_filters(weights):
    """Which filters (N, C, h, w) have faded away: a weight norm under FADED_NORM times the
    median filter's (weight decay shrinks what no gradient keeps)."""
    norms = weights.detach().flatten(1).norm(dim=1)
    return norms < FADED_NORM * norms.median()


def smoothness(weights, below=SMOOTH_BELOW):
    """Share of the filters' energy below `below` cycles per pixel once each filter's mean per
    colour channel is removed (all filters pooled): near 1 for smooth colour blobs and wide
    edges, `noise_smoothness` for filters of white noise, as a layer starts out."""
    centred = weights.double() - weights.double().mean(dim=(2, 3), keepdim=True)
    return energy_shares(centred, [(0, below)])[0]


def white_noise(kernel_size, filters):
    """RGB filters of white noise, as a layer starts out, from a fixed draw."""
    return torch.randn(filters, 3, kernel_size, kernel_size, generator=torch.Generator().manual_seed(0))


def noise_smoothness(kernel_size, below=SMOOTH_BELOW):
    """`smoothness` of white-noise filters of `kernel_size`, as many as one likes: the value
    that says "not learned yet" (about 0.18 for 7x7 filters). Exact rather than drawn: removing
    a filter's mean leaves white noise of variance s^2 the expected power
    s^2 k^2 (1 - |B(f)|^2) at frequency f, B being the spectrum of the k x k box that averages
    it (B(0) = 1), so the expected share is that shape's share below `below`. Pictures the
    size of the input are "filters" too: white noise's share is what a picture's is compared with."""
    size = spectrum_size(kernel_size, kernel_size)
    box = torch.ones(kernel_size, kernel_size, dtype=torch.float64) / kernel_size**2
    expected = 1 - torch.fft.fft2(box, s=(size, size)).abs().square()
    return (expected[radii(size) < below].sum() / expected.sum()).item()


# Oriented: a coherence white noise rarely reaches (99 in 100 white-noise 7x7 filters stay
# under 0.25) and edges and bars exceed (0.8-1).
ORIENTED_COHERENCE = 0.5


def orientation_coherence(weights):
    """Per filter (N, C, h, w), how much its gradients share one orientation: the coherence
    (l1 - l2) / (l1 + l2) of the eigenvalues of its structure tensor, summed over the filter
    and its colours. 1 for a straight edge or bar, 0 for a round blob; a filter's mean
    colour and its scale do not matter."""
    gradient_y, gradient_x = torch.gradient(weights.double(), dim=(2, 3))
    xx, yy, xy = (
        (a * b).sum(dim=(1, 2, 3))
        for a, b in ((gradient_x, gradient_x), (gradient_y, gradient_y), (gradient_x, gradient_y))
    )
    return torch.hypot(xx - yy, 2 * xy) / (xx + yy).clamp_min(torch.finfo(torch.float64).tiny)


def oriented_filters(weights):
    """Which filters (N, C, h, w) are oriented edges or bars: coherence above
    ORIENTED_COHERENCE, and not faded away."""
    return (orientation_coherence(weights) > ORIENTED_COHERENCE) & ~faded_filters(weights)


def noise_oriented_share(kernel_size, filters=4096):
    """The share of white-noise filters of `kernel_size` that `oriented_filters` calls oriented,
    from a fixed draw."""
    return oriented_filters(white_noise(kernel_size, filters)).double().mean().item()
