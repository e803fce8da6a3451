"""The fused CPU kernel of the residual stream (:mod:`skipvsr.kernels`) gives torch's numbers bit
for bit, falls back to the torch ops wherever it does not apply, and leaves the network's
output unchanged."""

from __future__ import annotations

import pytest
import torch

from skipvsr import kernels, routing
from skipvsr.routing import Route
from tests.conftest import moving_clip, tiny_model

CL = torch.channels_last


@pytest.fixture
def fused():
    """The built kernel; skips with the reason where it cannot be built here."""
    if kernels.extension() is None:
        pytest.skip(
            f"fused kernel not built here (needs x86-64 with AVX2, a C++ compiler and ninja; "
            f"{kernels.ENV_SWITCH}={kernels.os.environ.get(kernels.ENV_SWITCH, 'unset')})"
        )
    return kernels.extension()


def _maps(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(shape, generator=g).contiguous(memory_format=CL)
    u = (torch.randn(shape, generator=g) * 3).to(dtype).contiguous(memory_format=CL)
    return h, u


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 64, 18, 32), (2, 8, 5, 7), (3, 3, 1, 9)])
def test_fused_add_is_torchs_add_bit_for_bit(fused, dtype, shape):
    h, u = _maps(shape, dtype)
    want = h.clone().add_(u)
    assert kernels.fuses(h, u)
    got = kernels.residual_add_(h, u)
    assert got is h and torch.equal(h, want)


@pytest.mark.parametrize("ring", [1, 2])
def test_fused_add_casts_into_the_next_blocks_bordered_input(fused, ring):
    h, u = _maps((2, 16, 9, 13), torch.bfloat16, seed=1)
    h[0, 0, 0, 0] = float("nan")
    h[0, 1, 0, 0] = (
        3.3e38  # near bf16's largest value, where its rounding carries into the exponent
    )
    want = h.clone().add_(u)
    out = routing.empty_bordered(tuple(h.shape), ring, torch.bfloat16, h.device)
    kernels.residual_add_(h, u, out[:, :, ring:-ring, ring:-ring])
    assert torch.equal(h.view(torch.int32), want.view(torch.int32))  # NaN bits too
    expected = routing.zero_bordered(want, ring, torch.bfloat16)
    assert torch.equal(out.view(torch.int16), expected.view(torch.int16))


def test_the_torch_ops_serve_where_the_kernel_does_not_apply(fused):
    h, u = _maps((1, 8, 6, 7), torch.bfloat16)
    nchw = h.contiguous()
    assert not kernels.fuses(nchw, u)  # NCHW
    assert not kernels.fuses(h.half(), u)  # not a float32 stream
    assert not kernels.fuses(h, u[:, :, :5])  # shapes differ
    leaf = h.clone().requires_grad_()
    assert not kernels.fuses(leaf, u)  # autograd
    want = nchw.clone().add_(u)
    cast = torch.empty_like(nchw)
    assert torch.equal(kernels.residual_add_(nchw, u, cast), want)
    assert torch.equal(cast, want)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    kernels.extension.cache_clear()
    try:
        assert kernels.extension() is None
        h, u = _maps((1, 8, 4, 4), torch.bfloat16)
        assert not kernels.fuses(h, u)
        want = h.clone().add_(u)
        assert torch.equal(kernels.residual_add_(h, u), want)
    finally:
        kernels.extension.cache_clear()


@pytest.mark.parametrize("precision", ["mixed", "bf16", "fp32"])
@pytest.mark.parametrize("route", [None, Route(threshold=0.5, cell=8)])
def test_the_network_gives_the_same_output_with_and_without_the_kernel(
    fused, precision, route, monkeypatch
):
    """Full and routed passes on channels-last maps, where the kernel adds every update and
    (full passes in bf16 blocks) casts the next block's input: the picture is bit for bit the
    torch ops' one."""
    model = tiny_model().channels_last()
    lr = moving_clip(4, 16, 20)[None]
    calls = []
    original = kernels.residual_add_

    def counted(h, update, cast_into=None):
        calls.append(cast_into is not None)
        return original(h, update, cast_into)

    with torch.no_grad():
        monkeypatch.setattr(routing, "residual_add_", counted)
        from skipvsr import backbone

        monkeypatch.setattr(backbone, "residual_add_", counted)
        got = model(lr, route=route, precision=precision).sr
        monkeypatch.setattr(kernels, "fuses", lambda h, u: False)
        want = model(lr, route=route, precision=precision).sr
    assert calls and torch.equal(got, want)
    if route is None and precision != "fp32" and routing.prepads(torch.bfloat16):
        assert any(calls)  # the next block's input came from the add
