"""PSNR / SSIM / aggregation against values known in closed form and a direct 2-D reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skipvsr.metrics import aggregate, gaussian_window_1d, psnr, rgb_to_y, ssim


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Direct 2-D SSIM (11x11 Gaussian, valid windows) of ``(H, W)`` float64, one window at a
    time: a slow and independent implementation of the same definition."""
    g = gaussian_window_1d(11, 1.5)
    win = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, w = a.shape
    vals = []
    for i in range(h - 10):
        for j in range(w - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (win * pa).sum(), (win * pb).sum()
            va = (win * pa * pa).sum() - ma * ma
            vb = (win * pb * pb).sum() - mb * mb
            cov = (win * pa * pb).sum() - ma * mb
            vals.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(vals))


def test_rgb_to_y_known_values():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]])
    y = rgb_to_y(img.astype(np.uint8))
    assert y.shape == (1, 5) and y.dtype == np.float64
    np.testing.assert_allclose(y[0], [16.0, 235.0, 81.481, 144.553, 40.966], atol=1e-12)


def test_psnr_constant_offset():
    a = np.full((8, 9, 3), 100, np.uint8)
    b = a + 5
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)  # 34.151 dB
    # on Y a grey offset of d becomes d * 219 / 255
    assert psnr(a, b, y_only=True) == pytest.approx(
        10 * math.log10(255**2 / (5 * 219 / 255) ** 2), abs=1e-9
    )
    # float input in [0, 255] gives the same as uint8
    assert psnr(a.astype(np.float64), b.astype(np.float64)) == psnr(a, b)


def test_psnr_identical_is_inf_and_crop_border():
    a = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    assert psnr(a, a) == math.inf
    b = a.copy()
    b[:2] = 0
    b[:, -2:] = 255
    assert psnr(a, b) < math.inf
    assert psnr(a, b, crop_border=2) == math.inf


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((10, 30)), np.zeros((10, 30)))


def test_ssim_identical_is_one():
    a = np.random.default_rng(1).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    assert ssim(a, a) == 1.0
    assert ssim(a, a, y_only=True) == 1.0


def test_ssim_constant_images_closed_form():
    # flat images: no variance, so SSIM is the luminance term (2 m n + C1) / (m^2 + n^2 + C1)
    a, b = np.full((16, 16), 100.0), np.full((16, 16), 140.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), abs=1e-12)


def test_ssim_separable_matches_direct_2d():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (23, 27, 3)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255)
    ref = np.mean([_ssim_reference(a[..., c], b[..., c]) for c in range(3)])
    assert abs(ssim(a, b) - ref) < 1e-10
    ref_y = _ssim_reference(rgb_to_y(a), rgb_to_y(b))
    assert abs(ssim(a, b, y_only=True) - ref_y) < 1e-10
    ref_crop = np.mean([_ssim_reference(a[3:-3, 3:-3, c], b[3:-3, 3:-3, c]) for c in range(3)])
    assert abs(ssim(a, b, crop_border=3) - ref_crop) < 1e-10


def test_aggregate_mean_of_clip_means():
    means, overall = aggregate({"a": [1.0, 3.0], "b": [10.0]})
    assert means == {"a": 2.0, "b": 10.0}
    assert overall == 6.0  # not the pooled 14 / 3
    with pytest.raises(ValueError):
        aggregate({})
    with pytest.raises(ValueError, match="'a'"):
        aggregate({"a": []})
