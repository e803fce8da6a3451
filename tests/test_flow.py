"""Optical flow: warping by known flows, and SpyNet's shapes and size handling."""

from __future__ import annotations

import pytest
import torch

from skipvsr.flow import SpyNet, flow_warp, pixel_grid


def test_pixel_grid_is_x_then_y():
    g = pixel_grid(2, 3, torch.device("cpu"))
    assert g.shape == (1, 2, 3, 2) and g.dtype == torch.float32
    assert g[0, 1, 2].tolist() == [2.0, 1.0]


def test_zero_flow_is_identity():
    x = torch.rand(2, 5, 7, 9)
    assert torch.allclose(flow_warp(x, torch.zeros(2, 2, 7, 9)), x, atol=1e-6)


def test_integer_flow_shifts_and_pads_with_zeros():
    x = torch.arange(20.0).view(1, 1, 4, 5)
    flow = torch.zeros(1, 2, 4, 5)
    flow[:, 0] = 1.0  # out[p] = x[p + (1, 0)]: the image moves one pixel left
    out = flow_warp(x, flow)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-5)
    assert torch.equal(out[..., -1], torch.zeros(1, 1, 4))


def test_warp_keeps_the_input_dtype():
    x = torch.rand(1, 3, 6, 6).to(torch.bfloat16)
    assert flow_warp(x, torch.zeros(1, 2, 6, 6)).dtype == torch.bfloat16


@pytest.mark.parametrize("h, w", [(20, 28), (33, 35)])  # below and above one 32-pixel step
def test_spynet_returns_a_flow_per_pixel(h, w):
    torch.manual_seed(0)
    net = SpyNet().eval()
    a, b = torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)
    with torch.no_grad():
        flow = net(a, b)
    assert flow.shape == (2, 2, h, w) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()


def test_spynet_rejects_mismatched_frames():
    with pytest.raises(ValueError, match="ref and supp must have one shape"):
        SpyNet()(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


def test_bf16_spynet_keeps_float32_flows_near_fp32():
    """``mixed`` computes SpyNet's convs in bf16; the flows stay float32, within a small
    fraction of a pixel of fp32's, and ``fp32`` is SpyNet itself."""
    from skipvsr.weights import load_model

    from .conftest import moving_clip, real_weights

    model = load_model(real_weights()).eval()
    lr = moving_clip(t=3, h=40, w=56)[None]
    with torch.no_grad():
        fp32, mixed = model.compute_flows(lr), model.compute_flows(lr, "mixed")
        assert torch.equal(fp32[0][:, 0], model.spynet(lr[:, 0], lr[:, 1]))
    for a, b in zip(fp32, mixed, strict=True):
        assert b.dtype == torch.float32 and not torch.equal(a, b)
        assert float((a - b).abs().mean()) < 0.05


def test_bf16_spynet_levels_run_channels_last_for_the_same_residual(monkeypatch):
    """A bf16 SpyNet level runs its convs on a channels-last map on CPU (oneDNN's fast bf16
    layout), each ReLU fused into its conv, and returns an NCHW float32 residual: the NCHW
    convs' numbers, within one bf16 rounding of the output (bit for bit on the AMX Xeon that
    measured it)."""
    from skipvsr import kernels
    from skipvsr.flow import SpyNetLevel

    torch.manual_seed(0)
    level = SpyNetLevel().eval()
    x = torch.randn(2, 8, 24, 40)
    seen = []
    fused = kernels.conv_leaky_relu

    def recorded(x, *args):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return fused(x, *args)

    monkeypatch.setattr(kernels, "conv_leaky_relu", recorded)
    with torch.no_grad():
        got = level(x, bf16=True)
        with torch.autocast("cpu", torch.bfloat16):
            want = level.basic_module(x).float()
        fp32 = level(x)
    assert seen == [True] * 4  # the four convs followed by a ReLU, on channels-last maps
    assert got.dtype == torch.float32 and got.is_contiguous() and got.shape == (2, 2, 24, 40)
    torch.testing.assert_close(got, want, rtol=2**-7, atol=2**-7 * float(want.abs().max()))
    assert torch.equal(fp32, level.basic_module(x))
