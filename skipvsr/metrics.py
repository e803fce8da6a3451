"""PSNR and SSIM as BasicSR / mmagic compute them for VSR benchmarks.

Inputs are images with 8-bit values: ``(H, W, 3)`` RGB or ``(H, W)``, ``uint8`` or float in
[0, 255]. Everything is computed in float64.

* ``y_only=True`` compares the BT.601 luma of MATLAB ``rgb2ycbcr`` (not rounded):
  ``Y = 16 + 65.481 r + 128.553 g + 24.966 b`` with ``r, g, b`` in [0, 1], so ``Y`` is in
  [16, 235]. Vid4, UDM10 and Vimeo-90K-T are reported on Y; REDS4 on RGB.
* ``crop_border`` pixels are dropped on every side before comparing (VSR papers use 0).
* SSIM: 11x11 Gaussian window (sigma 1.5), only the "valid" region (no padding),
  ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``; per channel, then averaged over channels.
* Benchmark numbers are the mean over frames within each clip, then the mean of the clip means
  (:func:`aggregate`); pooling all frames gives a different number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of ``(H, W, 3)`` RGB in [0, 255] -> ``(H, W)`` float64 in
    [16, 235], not rounded."""
    x = np.asarray(img, dtype=np.float64)
    return 16.0 + x @ np.array([65.481, 128.553, 24.966]) / 255.0


def _prepare(
    a: np.ndarray, b: np.ndarray, crop_border: int, y_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, crop, convert to Y if asked; returns two float64 ``(H, W, C)`` arrays."""
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if y_only:
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"y_only needs (H, W, 3) RGB images, got {a.shape}")
        a, b = rgb_to_y(a), rgb_to_y(b)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_only: bool = False) -> float:
    """PSNR in dB with peak 255 between two images with 8-bit values (see module docstring).

    Returns ``inf`` for identical images (zero MSE).
    """
    a, b = _prepare(a, b, crop_border, y_only)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian, ``(size,)`` float64; its outer product is the SSIM window."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(t**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of ``(H, W)`` float64 with ``outer(g, g)``:
    ``(H, W) -> (H - k + 1, W - k + 1)``, one 1-D pass per axis."""
    k = len(g)
    rows = sliding_window_view(x, k, axis=0) @ g  # (H - k + 1, W)
    return sliding_window_view(rows, k, axis=1) @ g


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM map of two ``(H, W)`` float64 channels in [0, 255]."""
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    g = gaussian_window_1d()
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_only: bool = False) -> float:
    """SSIM of two images with 8-bit values, BasicSR style (see module docstring).

    Images must be at least 11x11 after cropping. Identical images give exactly 1.0.
    """
    a, b = _prepare(a, b, crop_border, y_only)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}")
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def aggregate(per_clip: Mapping[str, Sequence[float]]) -> tuple[dict[str, float], float]:
    """Benchmark average: mean over frames per clip, then the mean of the clip means.

    Args:
        per_clip: clip name -> per-frame values (non-empty).

    Returns:
        ``(clip_means, mean_of_clip_means)``; clip order is kept.
    """
    if not per_clip:
        raise ValueError("aggregate needs at least one clip")
    means = {}
    for name, values in per_clip.items():
        if len(values) == 0:
            raise ValueError(f"clip {name!r} has no values")
        means[name] = float(np.mean(values))
    return means, float(np.mean(list(means.values())))
