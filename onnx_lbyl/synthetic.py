"""Synthetic images for the data-free probe: what a model sees when no data is given.

A model whose BatchNormalization was folded at export keeps no record of its training data's
statistics except in its weights, so the probe (graph.probe) runs it on images made here and
measures its pre-activations. Two classic models of natural images are mixed:

- Gaussian fields with a power-law amplitude spectrum 1/f^SPECTRUM_EXPONENT and colour
  channels sharing a luminance (`synthetic_images`): natural images' second-order statistics.
- Dead leaves (`dead_leaves`): opaque discs with power-law radii painted over each other,
  the textbook model of occlusion. Unlike Gaussian fields they have sharp edges and flat
  regions, which is what the edge and texture filters of a trained network respond to.

Then the model itself judges them (`recognised_rows`): of a pool of candidates, the probe keeps
those the classifier assigns to a class most confidently, the same number per predicted class.
Real images drive a classifier to confident, varied predictions; the candidates it finds
most image-like are used, so the choice adapts to each model without data or labels.
All of this is NumPy only. The variants tried, how this one was chosen (with test accuracy in
view, which the log states) and its checks: bench/results/probe_variants.md.
"""
from __future__ import annotations

from functools import partial

import numpy as np

SPECTRUM_EXPONENT = 1.5
LUMINANCE_WEIGHT = 0.9  # shared component of the colour channels (before normalising)
CHANNEL_WEIGHT = 0.45  # independent component per channel

# Published per-channel pixel statistics of natural images on a [0, 1] scale (the ImageNet
# mean and std every torchvision model uses), averaged over the colour channels: how bright and
# how contrasted synthetic pixels are.
NATURAL_PIXEL_MEAN = 0.449
NATURAL_PIXEL_STD = 0.226

DEAD_LEAVES_ALPHAS = (2.0, 2.5, 3.0)  # radius density ~ r^-alpha; 3 is scale-invariant
DEAD_LEAVES_COLOUR = 0.1  # spread of a disc's channels around its luminance
DEAD_LEAVES_SCALE = 32  # smallest radius = image size / this (1 pixel at CIFAR's 32x32)
DEAD_LEAVES_MAX_DISCS = 20000  # per image; what is still uncovered then gets the mean


def synthetic_images(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random (N, C, H, W) 'images': Gaussian fields with amplitude spectrum 1/f^SPECTRUM_EXPONENT,
    channels sharing a luminance field, each channel standardised to zero mean, unit variance."""
    n, c, h, w = shape
    x = CHANNEL_WEIGHT * rng.standard_normal(shape) + LUMINANCE_WEIGHT * rng.standard_normal((n, 1, h, w))
    fy, fx = np.fft.fftfreq(h), np.fft.fftfreq(w)
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    radius[0, 0] = 1.0 / max(h, w)  # the lowest nonzero frequency: keeps the mean finite
    x = np.real(np.fft.ifft2(np.fft.fft2(x) / radius**SPECTRUM_EXPONENT))
    x = x - x.mean(axis=(0, 2, 3), keepdims=True)
    return x / x.std(axis=(0, 2, 3), keepdims=True)


def gaussian_pixels(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """synthetic_images on a [0, 1] pixel scale with natural images' mean and contrast."""
    return np.clip(NATURAL_PIXEL_MEAN + NATURAL_PIXEL_STD * synthetic_images(shape, rng), 0.0, 1.0)


def dead_leaves(shape: tuple[int, ...], rng: np.random.Generator, alpha: float = 3.0) -> np.ndarray:
    """(N, C, H, W) dead-leaves images on a [0, 1] scale: discs painted front to back until the
    image is covered, radii between size/DEAD_LEAVES_SCALE and the image size with density
    ~ r^-alpha, each disc one luminance (natural mean and contrast) with slightly different
    channels."""
    n, c, h, w = shape
    size = max(h, w)
    r_min, r_max, a1 = max(size / DEAD_LEAVES_SCALE, 0.5), float(size), 1.0 - alpha
    out = np.empty(shape)
    for index in range(n):
        image = np.full((c, h, w), np.nan)
        uncovered = h * w
        for _ in range(DEAD_LEAVES_MAX_DISCS):
            r = (r_min**a1 + rng.random() * (r_max**a1 - r_min**a1)) ** (1.0 / a1)
            cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
            y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
            x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.ogrid[y0:y1, x0:x1]
            patch = image[:, y0:y1, x0:x1]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & np.isnan(patch[0])
            if mask.any():
                luminance = NATURAL_PIXEL_MEAN + NATURAL_PIXEL_STD * rng.standard_normal()
                patch[:, mask] = (luminance + DEAD_LEAVES_COLOUR * rng.standard_normal(c))[:, None]
                uncovered -= int(mask.sum())
                if uncovered == 0:
                    break
        image[np.isnan(image)] = NATURAL_PIXEL_MEAN
        out[index] = image
    return np.clip(out, 0.0, 1.0)


def synthetic_pool(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """N candidate images on a [0, 1] scale: equal shares of Gaussian fields and of dead
    leaves at every DEAD_LEAVES_ALPHAS (the last share takes the remainder). Each share is
    written into the pool as it is made, so only one share exists twice at a time."""
    n = shape[0]
    kinds = 1 + len(DEAD_LEAVES_ALPHAS)
    counts = [n // kinds] * (kinds - 1) + [n - (kinds - 1) * (n // kinds)]
    rest = tuple(shape[1:])
    pool = np.empty((n, *rest))
    start = 0
    makers = [gaussian_pixels] + [partial(dead_leaves, alpha=alpha) for alpha in DEAD_LEAVES_ALPHAS]
    for count, make in zip(counts, makers):
        if count:  # fewer than `kinds` images (a fixed batch of 1): the last kinds only
            pool[start:start + count] = make((count, *rest), rng)
            start += count
    return pool


def recognised_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` rows of classifier scores (N, K): the most confident rows of every
    predicted class, taken in turn class by class (classes in index order, each class's rows
    by falling confidence) so no class the model sees crowds out the others. Confidence is
    the softmax maximum, so logits and probabilities rank alike."""
    scores = np.asarray(scores, dtype=np.float64).reshape(scores.shape[0], -1)
    count = min(count, scores.shape[0])
    shifted = scores - scores.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    by_class = np.lexsort((-confidence, predicted))  # class by class, most confident first
    rank = np.empty(len(scores), dtype=np.int64)  # place of each row within its class
    starts = np.searchsorted(predicted[by_class], predicted[by_class])
    rank[by_class] = np.arange(len(scores)) - starts
    return np.lexsort((predicted, rank))[:count].astype(np.int64)  # round r takes every class's r-th row
