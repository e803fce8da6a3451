"""Degradation tests against the real Vid4 frames (skipped when the data folder is absent).

Data: ``$SKIPVSR_DATA`` or ``<repo>/../shared/data``, holding ``vid4/<clip>/HR`` etc.
The full-Vid4 baseline check takes about a minute per degradation; it runs only with
``SKIPVSR_SLOW=1``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skipvsr.degradation import (
    bicubic_upscale,
    degrade,
    degrade_bd,
    degrade_bi,
    gaussian_kernel_1d,
    imresize_bicubic,
    mod_crop,
)
from skipvsr.metrics import aggregate, psnr, ssim
from tests.conftest import DATA  # noqa: E402

VID4 = DATA / "vid4"


def _need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"Vid4 test frames not found at {path} (set SKIPVSR_DATA to the data folder)")
    return path


@functools.lru_cache(maxsize=4)
def _frames(clip: str, sub: str = "HR") -> tuple[np.ndarray, ...]:
    folder = _need(VID4 / clip / sub)
    return tuple(np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png")))


def _bicubic_baseline(clip: str, kind: str, with_ssim: bool = True) -> tuple[float, float]:
    """Mean Y-PSNR and Y-SSIM (nan if not asked) over a clip of MATLAB-down-then-up frames."""
    p, s = [], []
    for hr in _frames(clip):
        sr = bicubic_upscale(degrade(hr, kind), 4)
        p.append(psnr(sr, hr, y_only=True))
        s.append(ssim(sr, hr, y_only=True) if with_ssim else np.nan)
    return float(np.mean(p)), float(np.mean(s))


# ---------------------------------------------------------------- synthetic (always run)


def test_mod_crop():
    img = np.zeros((18, 23, 3), np.uint8)
    assert mod_crop(img, 4).shape == (16, 20, 3)
    assert mod_crop(img[:16, :20], 4).shape == (16, 20, 3)


def test_resize_shapes_and_dtypes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    lr = imresize_bicubic(img, 0.25)
    assert lr.shape == (6, 8, 3) and lr.dtype == np.uint8
    up = bicubic_upscale(lr, 4)
    assert up.shape == (24, 32, 3) and up.dtype == np.uint8
    f = imresize_bicubic(img.astype(np.float64), 0.25)
    assert f.dtype == np.float64
    # one final rounding: uint8 output is the rounded float64 output
    np.testing.assert_array_equal(lr, np.clip(np.floor(f + 0.5), 0, 255))


def test_resize_constant_and_linear():
    # weights sum to 1: a constant image stays constant, up and down
    c = np.full((20, 28, 3), 77, np.uint8)
    assert (imresize_bicubic(c, 0.25) == 77).all()
    assert (bicubic_upscale(c, 4) == 77).all()
    # shrinking a horizontal ramp by 4 with a symmetric kernel averages blocks of 4 in the interior
    ramp = np.tile(np.arange(64, dtype=np.float64)[None, :, None], (8, 1, 1))
    out = imresize_bicubic(ramp, 0.25)
    np.testing.assert_allclose(out[0, 2:-2, 0], 4 * np.arange(2, 14) + 1.5, atol=1e-12)


def test_gaussian_kernel_matches_fspecial_layout():
    k = gaussian_kernel_1d(12, 1.6)
    assert k.shape == (12,)
    assert abs(k.sum() - 1) < 1e-15
    np.testing.assert_allclose(k, k[::-1])  # centred at 5.5
    assert k[5] == k[6] and k[5] > k[4]


def test_bd_phase():
    # a single bright HR pixel lands on the LR pixel whose sampling point is nearest to it
    img = np.zeros((32, 32, 1))
    img[9, 9] = 1000.0  # 0-based HR pixel 9 = LR sample 2 for 'basicvsr' (rows 1, 5, 9, ...)
    out = degrade_bd(img, "basicvsr")
    assert np.unravel_index(np.argmax(out[..., 0]), (8, 8)) == (2, 2)
    img = np.zeros((32, 32, 1))
    img[8, 8] = 1000.0  # 'duf' samples rows 0, 4, 8, ...
    out = degrade_bd(img, "duf")
    assert np.unravel_index(np.argmax(out[..., 0]), (8, 8)) == (2, 2)


def test_bd_even_kernel_anchor():
    # BasicVSR recipe: MATLAB imfilter anchors the 12-tap kernel at 0-based tap 5, so LR pixel
    # (i, j) reads HR rows/cols 4i+1-5 .. 4i+1+6; check one interior pixel by hand
    rng = np.random.default_rng(1)
    img = rng.random((40, 40, 1)) * 255
    k = gaussian_kernel_1d(12, 1.6)
    i = j = 4
    r, c = 4 * i + 1, 4 * j + 1
    want = k @ img[r - 5 : r + 7, c - 5 : c + 7, 0] @ k
    assert abs(degrade_bd(img, "basicvsr")[i, j, 0] - want) < 1e-9


def test_degrade_names():
    img = np.zeros((16, 16, 3), np.uint8)
    for kind in ("BI", "BD", "BD_DUF"):
        assert degrade(img, kind).shape == (4, 4, 3)
    with pytest.raises(ValueError, match="degradation"):
        degrade(img, "bd")


# ---------------------------------------------------------------- real Vid4 frames


def test_bi_matches_official_calendar_all_frames():
    hr, lr = _frames("calendar"), _frames("calendar", "LR_BI")
    assert len(hr) == len(lr) == 41
    for i, (h, l) in enumerate(zip(hr, lr, strict=True)):
        out = degrade_bi(h)
        assert out.shape == l.shape == (144, 180, 3)
        assert np.array_equal(out, l), f"frame {i}: max diff {np.abs(out.astype(int) - l).max()}"


def test_duf_recipe_matches_duf_calendar_within_2_levels():
    lr = _frames("calendar", "LR_BD_DUF")
    hr = _frames("calendar")
    for i in (0, 20, 40):
        diff = np.abs(degrade_bd(hr[i], "duf").astype(int) - lr[i])
        assert diff.max() <= 2, f"frame {i}"
        assert (diff == 0).mean() > 0.8


@pytest.mark.parametrize(
    "clip,kind,want_psnr",
    [
        ("city", "BI", 25.16),  # README per-clip value
        # measured with this code; the 4-clip mean reproduces the README's 23.44 (BasicVSR
        # recipe), which pins the even-kernel anchor (see test_vid4_bicubic_baseline_full)
        ("calendar", "BD", 20.14),
    ],
)
def test_bicubic_baseline_per_clip(clip, kind, want_psnr):
    p, _ = _bicubic_baseline(clip, kind, with_ssim=False)
    assert abs(p - want_psnr) <= 0.01


def test_bicubic_baseline_calendar_bi_psnr_ssim():
    p, s = _bicubic_baseline("calendar", "BI")
    assert abs(p - 20.39) <= 0.01  # README per-clip value
    assert abs(s - 0.5720) <= 0.0005  # measured here; the 4-clip mean is the published 0.6347


@pytest.mark.skipif(os.environ.get("SKIPVSR_SLOW") != "1", reason="slow: set SKIPVSR_SLOW=1")
@pytest.mark.parametrize(
    "kind,want_psnr,want_ssim",
    [("BI", 23.78, 0.6347), ("BD", 23.44, 0.6165), ("BD_DUF", 21.79, 0.5422)],
)
def test_vid4_bicubic_baseline_full(kind, want_psnr, want_ssim):
    res = {c: _bicubic_baseline(c, kind) for c in ("calendar", "city", "foliage", "walk")}
    _, p = aggregate({c: [v[0]] for c, v in res.items()})
    _, s = aggregate({c: [v[1]] for c, v in res.items()})
    assert abs(p - want_psnr) <= 0.01
    assert abs(s - want_ssim) <= 0.001  # README SSIMs used rounded Y: ~0.0006 lower
