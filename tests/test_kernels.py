"""The fused CPU kernel of the residual stream (:mod:`skipvsr.kernels`) gives torch's numbers bit
for bit, falls back to the torch ops wherever it does not apply, and leaves the network's
output unchanged."""

from __future__ import annotations

import pytest
import torch

from skipvsr import kernels, routing
from skipvsr.flow import WarpPlan
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("cast", [False, True])
def test_fused_add_keeps_a_copy_of_the_update(fused, dtype, cast):
    """``keep`` (a routed block's cache map, written with streamed stores) receives the update
    bit for bit, row starts off the stores' 32-byte alignment included (width 5 x 8
    channels), and the add and the cast are unchanged by it."""
    h, u = _maps((2, 8, 5, 5), dtype, seed=3)
    want_h = h.clone().add_(u)
    keep = torch.full_like(u, 7.0)
    out = torch.empty_like(u, dtype=torch.bfloat16) if cast else None
    kernels.residual_add_(h, u, out, keep)
    assert torch.equal(keep, u) and torch.equal(h, want_h)
    if cast:
        assert torch.equal(out, want_h.to(torch.bfloat16))
    # the torch ops, where the kernel does not apply, copy it too
    nchw, keep = want_h.contiguous(), torch.zeros_like(u.contiguous())
    kernels.residual_add_(nchw, u.contiguous(), keep=keep)
    assert torch.equal(keep, u)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("cast", [False, True])
def test_fused_add_accumulates_into_a_groups_total(fused, dtype, cast):
    """With ``accumulate``, ``keep += update`` (a group's total update) rounds as torch's
    ``add_`` does, bit for bit, and the add and the cast are unchanged by it; the torch ops
    where the kernel does not apply give the same."""
    h, u = _maps((2, 8, 5, 5), dtype, seed=4)
    total = (torch.randn(u.shape, generator=torch.Generator().manual_seed(5)) * 2).to(dtype)
    total = total.contiguous(memory_format=CL)
    want_h, want_total = h.clone().add_(u), total.clone().add_(u)
    out = torch.empty_like(u, dtype=torch.bfloat16) if cast else None
    kernels.residual_add_(h, u, out, total, accumulate=True)
    assert torch.equal(total, want_total) and torch.equal(h, want_h)
    assert not torch.equal(want_total, u.to(dtype))  # an addition, not a copy
    if cast:
        assert torch.equal(out, want_h.to(torch.bfloat16))
    nchw, total = h.contiguous(), torch.zeros_like(u.contiguous()).add_(1.0)
    kernels.residual_add_(nchw, u.contiguous(), keep=total, accumulate=True)
    assert torch.equal(total, torch.ones_like(total).add_(u))


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
@pytest.mark.parametrize(
    "route",
    [
        None,
        Route(threshold=0.5, cell=8),
        Route(policy="rotate", keep=0.5, cell=8, group=1),
        Route(policy="rotate", keep=0.5, cell=8, group=2),
    ],
    ids=["full", "learned", "rotate", "rotate-groups"],
)
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

    def counted(h, update, cast_into=None, keep=None, accumulate=False):
        calls.append(cast_into is not None)
        return original(h, update, cast_into, keep, accumulate)

    with torch.no_grad():
        monkeypatch.setattr(routing, "residual_add_", counted)
        from skipvsr import backbone

        monkeypatch.setattr(backbone, "residual_add_", counted)
        got = model(lr, route=route, precision=precision).sr
        monkeypatch.setattr(kernels, "fuses", lambda h, u: False)
        want = model(lr, route=route, precision=precision).sr
    assert calls and torch.equal(got, want)
    if (route is None or route.policy == "rotate") and precision != "fp32":
        if routing.prepads(torch.bfloat16):
            assert any(calls)  # a next block's input came from the add


def test_learned_routing_casts_after_a_dense_block(fused, monkeypatch):
    """With the learned policy, the add of a block that ran densely also casts the stream into
    the next block's input (it is likely to run densely too), on frames that are not forced;
    the picture stays the torch ops' one."""
    if not routing.prepads(torch.bfloat16):
        pytest.skip("oneDNN has no bf16 path on this CPU: no bordered inputs to cast into")
    model = tiny_model().channels_last()
    lr = moving_clip(4, 16, 20)[None]
    casts, forced = [], [False]
    add, apply = kernels.residual_add_, routing.Router.apply

    def counted(h, update, cast_into=None, keep=None, accumulate=False):
        casts.append((forced[0], cast_into is not None))
        return add(h, update, cast_into, keep, accumulate)

    def applying(self, block, m, h, run, inplace=False):
        forced[0] = self._full_frame or self.updates[m] is None
        return apply(self, block, m, h, run, inplace)

    route = Route(threshold=0.05, cell=8)
    with torch.no_grad():
        monkeypatch.setattr(routing, "residual_add_", counted)
        monkeypatch.setattr(routing.Router, "apply", applying)
        got = model(lr, route=route, precision="mixed").sr
        monkeypatch.setattr(kernels, "fuses", lambda h, u: False)
        want = model(lr, route=route, precision="mixed").sr
    assert torch.equal(got, want)
    assert any(cast for was_forced, cast in casts if not was_forced)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("ring", [0, 1, 2])
def test_shuffle_kernel_is_the_channels_last_pixel_shuffle(fused, dtype, ring):
    """The upsampler's shuffle of a conv output whose channels are in (row, column, channel)
    order, copied by the kernel inside a zero border: ``F.pixel_shuffle`` of the conv in its
    natural order, exactly."""
    g = torch.Generator().manual_seed(0)
    b, c, h, w = 2, 8, 5, 7
    natural = torch.randn(b, 4 * c, h, w, generator=g).to(dtype)  # channels in (c, i, j) order
    order = torch.arange(4 * c).view(c, 4).t().reshape(-1)
    conv = natural[:, order].contiguous(memory_format=CL)
    assert kernels.shuffles(conv)
    out = routing.empty_bordered((b, c, 2 * h, 2 * w), ring, dtype, conv.device)
    kernels.shuffle_into_(conv, out, ring)
    assert out.shape == (b, c, 2 * h + 2 * ring, 2 * w + 2 * ring) and out.dtype == dtype
    assert out.is_contiguous(memory_format=CL)
    want = torch.nn.functional.pad(torch.nn.functional.pixel_shuffle(natural, 2), [ring] * 4)
    assert torch.equal(out, want)
    assert not kernels.shuffles(conv.contiguous())  # NCHW: the caller copies


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("h,w,cell", [(23, 37, 8), (9, 30, 32), (40, 24, 16), (5, 6, 4)])
def test_cell_batch_equals_the_dense_update_on_running_cells(fused, precision, h, w, cell):
    """A block's running cells as one batch (edge cells reaching past the frame, where conv1's
    outputs are zeroed as the dense conv2's padding) write the dense update there within float
    (fp32) or one bf16 rounding, and nothing elsewhere."""
    from skipvsr.backbone import ResidualBlock

    torch.manual_seed(3)
    convs = routing.BlockConvs.of(ResidualBlock(8), precision)
    x = torch.randn(2, 8, h, w).contiguous(memory_format=CL)
    grid = routing.PatchGrid(h, w, cell)
    dtype = convs.w2.dtype
    with torch.no_grad():
        dense = convs.second(convs.first(x.contiguous())).to(dtype)
        for seed, fraction in enumerate([0.0, 0.3, 0.7, 1.0]):
            g = torch.Generator().manual_seed(seed)
            run = torch.rand(2, grid.rows, grid.cols, generator=g) < fraction
            out = torch.full_like(x, 7.0, dtype=dtype).contiguous(memory_format=CL)
            assert routing.cell_batch_updates(convs, x, run, grid, out)
            on = grid.expand(run, torch.float32).bool().expand_as(x)
            assert (out[~on] == 7.0).all()
            tol = 1e-5 if precision == "fp32" else 2**-7 * float(dense.abs().max())
            if on.any():
                assert (out[on].float() - dense[on].float()).abs().max() <= tol


def test_a_failed_build_falls_back_to_the_torch_ops(monkeypatch, tmp_path, caplog):
    """No compiler (or any build error): one warning naming the cause, then the torch ops."""
    from torch.utils import cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("Error building extension 'skipvsr_fused': c++: not found\nmore")

    monkeypatch.setenv("SKIPVSR_CACHE", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", broken)
    monkeypatch.setattr(kernels, "cpu_flags", lambda: ("avx2",))
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    kernels.extension.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="skipvsr.kernels"):
            assert kernels.extension() is None
        assert "c++: not found" in caplog.text and "more" not in caplog.text
        h, u = _maps((1, 8, 4, 4), torch.bfloat16)
        want = h.clone().add_(u)
        assert torch.equal(kernels.residual_add_(h, u), want)
    finally:
        kernels.extension.cache_clear()


def _warp_case(shape, seed=0, dtype=torch.bfloat16):
    """A channels-last map and a flow whose taps reach past the frame on every side."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = shape
    x = (torch.randn(shape, generator=g) * 2).to(dtype).contiguous(memory_format=CL)
    flow = torch.randn(b, 2, h, w, generator=g) * 3
    return x, WarpPlan(flow)


def _torch_warp(monkeypatch):
    """WarpPlan's torch path (embedding_bag) from here on."""
    monkeypatch.setattr(kernels, "warps", lambda x: False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 64, 9, 13), (2, 16, 5, 7), (1, 48, 4, 6), (2, 256, 3, 5)])
def test_warp_kernel_is_the_embedding_bag_warp_bit_for_bit(fused, shape, dtype, monkeypatch):
    x, plan = _warp_case(shape, dtype=dtype)
    assert kernels.warps(x)
    got = plan(x)
    assert got.is_contiguous(memory_format=CL)
    _torch_warp(monkeypatch)
    want = plan(x)
    # bf16: embedding_bag rounds its float32 sums half away from zero, and ties (1 in ~1000
    # values) test that the kernel does too; float32: its fused multiply-adds, in tap order
    assert torch.equal(got, want)


def test_float32_warp_writes_a_channel_slice_of_a_wider_map(fused, monkeypatch):
    """The trunk's input: the LR frame's 3 channels, then the warped features written by the
    kernel straight into the rest of the channels-last map."""
    x, plan = _warp_case((2, 64, 6, 9), seed=5, dtype=torch.float32)
    wide = torch.full((2, 67, 6, 9), -7.0).contiguous(memory_format=CL)
    plan.warp_into(x, wide[:, 3:])
    assert (wide[:, :3] == -7.0).all()
    _torch_warp(monkeypatch)
    assert torch.equal(wide[:, 3:], plan(x))


def test_float32_warp_rounds_into_a_bf16_map_as_torch_casts(fused, monkeypatch):
    """The trunk's input conv in ``mixed`` reads the warped features in bf16: the kernel rounds
    its float32 warp as it writes them, equal to the warp then torch's cast."""
    x, plan = _warp_case((2, 64, 6, 9), seed=6, dtype=torch.float32)
    got = torch.empty_like(x, dtype=torch.bfloat16)
    plan.warp_into(x, got)
    _torch_warp(monkeypatch)
    assert torch.equal(got, plan(x).to(torch.bfloat16))


@pytest.mark.parametrize("shape", [(1, 180, 320), (3, 48, 48), (2, 7, 1), (1, 1, 1), (2, 33, 17)])
def test_taps_kernel_is_the_torch_taps_bit_for_bit(fused, shape, monkeypatch):
    """WarpPlan's bilinear taps (source rows and weights) from the kernel and from the torch
    ops agree exactly, for flows reaching far past every side of the frame and zero flows."""
    n, h, w = shape
    flow = torch.randn(n, 2, h, w, generator=torch.Generator().manual_seed(h * w)) * max(h, w)
    flow[0, :, 0] = 0.0
    got = WarpPlan(flow).taps()
    monkeypatch.setattr(kernels, "builds_taps", lambda grid: False)
    want = WarpPlan(flow).taps()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert (got[1] == 0).any() and (got[1] == 1).any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cell_warp_writes_the_masked_cells_only(fused, dtype, monkeypatch):
    """A routed block's skipped cells (the last row and column clipped to the frame): the
    whole-map warp there, bit for bit, and ``out`` untouched elsewhere."""
    x, plan = _warp_case((2, 64, 13, 19), seed=3, dtype=dtype)
    mask = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(3)) > 0.5
    mask[0, -1, -1] = True
    got = torch.full_like(x, -5.0)
    kernels.warp_cells_(x, *plan.kernel_taps(dtype), got, mask, 4)
    _torch_warp(monkeypatch)
    inside = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None, :13, :19]
    assert torch.equal(got, torch.where(inside, plan(x), torch.full_like(x, -5.0)))


def test_warp_kernel_writes_only_the_given_pixels(fused, monkeypatch):
    x, plan = _warp_case((2, 64, 6, 10), seed=1)
    pixels = torch.tensor([0, 7, 8, 9, 59, 60, 119])
    got = torch.zeros_like(x)
    plan.warp_pixels(x, got, pixels)
    _torch_warp(monkeypatch)
    want = torch.zeros_like(x)
    plan.warp_pixels(x, want, pixels)
    assert torch.equal(got, want)
    rows = got.permute(0, 2, 3, 1).reshape(-1, 64)
    assert rows[pixels].abs().sum() > 0 and rows[1:7].abs().sum() == 0


@pytest.mark.parametrize("ring", [0, 2])
@pytest.mark.parametrize("length", [1, 3])
def test_warp_add_is_the_warps_then_the_adds(fused, ring, length, monkeypatch):
    """A run of skipped blocks' updates warped and added in one pass over the stream, the
    next block's input cast after the last: the warps and adds one by one, bit for bit."""
    cases = [_warp_case((2, 64, 7, 9), seed=2 + i) for i in range(length)]
    plan = cases[0][1]
    xs = [x for x, _ in cases]
    h = torch.randn(2, 64, 7, 9).contiguous(memory_format=CL)
    h_torch = h.clone()

    def bordered():
        return routing.empty_bordered(tuple(h.shape), ring, torch.bfloat16, h.device)

    got_in = bordered() if ring else None
    got = plan.warp_add_(xs, h, got_in[:, :, ring:-ring, ring:-ring] if ring else None)
    _torch_warp(monkeypatch)
    want = [plan(x) for x in xs]
    want_in = bordered() if ring else None
    for i, u in enumerate(want):
        last = ring and i == length - 1
        kernels.residual_add_(h_torch, u, want_in[:, :, ring:-ring, ring:-ring] if last else None)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert torch.equal(h, h_torch)
    if ring:
        assert torch.equal(got_in, want_in)


def test_warp_add_writes_into_the_given_maps(fused):
    """The warped updates go into the maps given for them (the router's cache maps), with the
    numbers of new ones; a map off the streamed stores' alignment is replaced by a new one."""
    (x, plan), (y, _) = _warp_case((1, 64, 6, 8), seed=4), _warp_case((1, 64, 6, 8), seed=5)
    h = torch.randn(1, 64, 6, 8).contiguous(memory_format=CL)
    want = plan.warp_add_([x, y], h.clone())
    outs = [torch.empty_like(x), torch.empty_like(y)]
    got = plan.warp_add_([x, y], h.clone(), outs=outs)
    assert all(a is b for a, b in zip(got, outs, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    shifted = torch.empty(x.numel() + 8, dtype=x.dtype)[8:]  # 16 bytes past an aligned start
    odd = shifted.view(1, 6, 8, 64).permute(0, 3, 1, 2)
    got = kernels.warp_add_run_([x], *plan.kernel_taps(torch.bfloat16), h.clone(), None, [odd])
    assert got[0] is not odd and torch.equal(got[0], want[0])


def test_warp_kernel_refuses_what_it_does_not_take(fused):
    x, _ = _warp_case((1, 64, 4, 4))
    assert not kernels.warps(x.half())  # float16
    assert not kernels.warps(x.contiguous())  # NCHW
    assert not kernels.warps(x[:, :24].contiguous(memory_format=CL))  # 24 channels
    assert not kernels.warps(x.float().requires_grad_().bfloat16())  # autograd


@pytest.mark.parametrize(
    "route",
    [Route(threshold=0.5, cell=8), Route(policy="rotate", keep=0.4, cell=8)],
    ids=["learned", "rotate"],
)
def test_routed_network_is_the_same_with_the_warp_kernel(fused, route, monkeypatch):
    """Skipped blocks reuse their updates through the warp kernel (in one pass with the add
    where a block skips everywhere): the picture is bit for bit embedding_bag's."""
    model = tiny_model(num_feat=16).channels_last()
    lr = moving_clip(5, 16, 20)[None]
    runs = []
    original = kernels.warp_add_run_

    def counted(xs, *args):
        runs.append(len(xs))  # blocks skipped everywhere, warped and added in one pass
        return original(xs, *args)

    monkeypatch.setattr(kernels, "warp_add_run_", counted)
    with torch.no_grad():
        got = model(lr, route=route, precision="mixed").sr
        _torch_warp(monkeypatch)
        want = model(lr, route=route, precision="mixed").sr
    assert runs and torch.equal(got, want)
    if route.policy == "rotate":
        assert max(runs) > 1  # the plan's consecutive skips went as one run


def test_a_run_of_skipped_blocks_stops_at_a_tapped_depth(fused, monkeypatch):
    """Features tapped inside a run of skipped blocks are the stream at that depth: the run
    ends there, and every tap and the picture equal block-by-block execution."""
    model = tiny_model(num_feat=16, num_block=8).channels_last()
    lr = moving_clip(4, 16, 20)[None]
    route = Route(policy="rotate", keep=0.25, cell=8)
    runs = []
    original = kernels.warp_add_run_
    monkeypatch.setattr(
        kernels, "warp_add_run_", lambda xs, *a: runs.append(len(xs)) or original(xs, *a)
    )
    with torch.no_grad():
        got = model(lr, route=route, precision="mixed", taps=(4,))
        whole = model(lr, route=route, precision="mixed")
        monkeypatch.setattr(
            routing.Router, "_reuse_add_", _single_block_reuse(routing.Router._reuse_add_)
        )
        want = model(lr, route=route, precision="mixed", taps=(4,))
    assert max(runs) > 1
    assert torch.equal(got.sr, want.sr) and torch.equal(got.sr, whole.sr)
    for name in ("backward", "forward"):
        pairs = zip(got.features[name][4], want.features[name][4], strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def _single_block_reuse(reuse_add):
    """``Router._reuse_add_`` with every run cut to its first block."""

    def single(self, m, h):
        plan, self._skips_everywhere = self._skips_everywhere, [False] * self.num_blocks
        try:
            return reuse_add(self, m, h)
        finally:
            self._skips_everywhere = plan

    return single


@pytest.mark.parametrize(
    "shape, stride, cell",
    [
        ((1, 64, 45, 70), 4, 32),
        ((2, 16, 13, 22), 2, 6),
        ((1, 64, 8, 8), 1, 4),
        ((1, 32, 9, 5), 4, 8),
        ((2, 64, 40, 64), 4, 1 << 16),  # whole frames: fewer cells than threads, two passes
    ],
)
def test_score_inputs_are_the_torch_estimator_inputs_bit_for_bit(fused, shape, stride, cell):
    """The strided cast, the warped cached input and the patch means of their difference, last
    patches clipped, against torch's ops as Router._score composes them."""
    g = torch.Generator().manual_seed(3)
    b, c, h, w = shape
    stream = torch.randn(shape, generator=g).contiguous(memory_format=CL)
    grid = routing.PatchGrid(h, w, cell).strided(stride)
    small = (b, c, grid.height, grid.width)
    prev = torch.randn(small, generator=g).to(torch.bfloat16).contiguous(memory_format=CL)
    plan = WarpPlan(torch.randn(b, 2, grid.height, grid.width, generator=g) * 2)
    fresh, warped, pooled = kernels.score_inputs(
        stream, stride, prev, *plan.kernel_taps(torch.bfloat16), grid.cell
    )
    want_fresh = stream[:, :, ::stride, ::stride].to(torch.bfloat16)
    want_warped = plan(prev)
    want_pooled = grid.pool((want_fresh - want_warped).abs_())
    assert torch.equal(fresh, want_fresh) and torch.equal(warped, want_warped)
    assert torch.equal(pooled, want_pooled)


def test_refresh_cells_copies_the_running_patches_only(fused):
    g = torch.Generator().manual_seed(4)
    prev = torch.randn(2, 16, 11, 13, generator=g).to(torch.bfloat16).contiguous(memory_format=CL)
    fresh = torch.randn(2, 16, 11, 13, generator=g).to(torch.bfloat16).contiguous(memory_format=CL)
    grid = routing.PatchGrid(11, 13, 4)
    run = torch.rand(2, grid.rows, grid.cols, generator=g) < 0.5
    want = torch.where(grid.expand(run, torch.bool), fresh, prev)
    assert kernels.refreshes(prev, fresh)
    kernels.refresh_cells_(prev, fresh, run, grid.cell)
    assert torch.equal(prev, want)
    assert not kernels.refreshes(prev, fresh.float())


def test_routed_network_is_the_same_with_the_estimator_kernels(fused, monkeypatch):
    """The learned policy at the default estimator stride on bf16 caches reads its inputs
    through score_inputs and refreshes them with refresh_cells_: bit for bit the torch ops."""
    model = tiny_model(num_feat=16, estimator_inputs="warped-difference").channels_last()
    lr = moving_clip(5, 16, 24)[None]
    route = Route(threshold=0.5, cell=8)
    assert route.score_stride == 4
    calls = []
    original = kernels.score_inputs

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(kernels, "score_inputs", counted)
    with torch.no_grad():
        got = model(lr, route=route, precision="mixed")
        monkeypatch.setattr(routing.Router, "_scores_in_one_pass", lambda *a: False)
        monkeypatch.setattr(kernels, "refreshes", lambda *a: False)
        want = model(lr, route=route, precision="mixed")
    assert calls and torch.equal(got.sr, want.sr)
    executed = got.executed["forward"][1:]
    assert 0 < float(executed.mean()) < 1  # partly skipped: the refresh ran
    assert torch.equal(got.executed["forward"], want.executed["forward"])


@pytest.mark.parametrize(
    "route",
    [
        Route(threshold=0.5, cell=8),
        Route(policy="rotate", keep=0.4, cell=8, group=1),
        Route(policy="rotate", keep=0.4, cell=8, group=2),
    ],
    ids=["learned", "rotate", "rotate-groups"],
)
def test_cached_updates_reuse_their_maps_frame_after_frame(fused, route, monkeypatch):
    """A routed clip's cached updates live in maps of their own that the blocks hand on to one
    another (:meth:`Router._cache_map`): each branch makes one per block at its first need and
    at most one more per block of its longest run of skips, however long the clip (keeping
    each update as it comes took a new map per block and frame; in groups, one per group), and
    the picture is the one of the torch ops."""
    model = tiny_model(num_feat=16).channels_last()
    made = []
    original = routing.Router._cache_map

    def counting(self, like, every_block=False):
        spare = any(t.shape == like.shape and t.dtype == like.dtype for t in self._spare)
        first = every_block and not self._made_maps
        made.append(not spare)
        got = original(self, like, every_block)
        if first and not spare:  # the first copy's need makes every block's map, one in use
            assert self._made_maps and len(self._spare) == self.num_blocks // self.group - 1
        return got

    monkeypatch.setattr(routing.Router, "_cache_map", counting)
    counts = []
    with torch.no_grad():
        for frames in (3, 8):
            lr = moving_clip(frames, 16, 20)[None]
            made.clear()
            got = model(lr, route=route, precision="mixed").sr
            counts.append(sum(made))
        monkeypatch.setattr(kernels, "fuses", lambda h, u: False)
        _torch_warp(monkeypatch)
        want = model(lr, route=route, precision="mixed").sr
    assert torch.equal(got, want)
    bound = 2 * 2 * 6 // route.group_size(6)  # branches x (a cache and a spare) x holders
    assert 0 < counts[0] <= bound and 0 < counts[1] <= bound


def test_without_the_kernels_no_cache_maps_are_made_ahead(monkeypatch):
    """Where the add cannot copy updates into cache maps (the kernels off), the updates stay
    the caches and no block's map is made ahead of need (it would only hold memory)."""
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    kernels.extension.cache_clear()
    spares = []
    original = routing.Router._cache_map

    def counting(self, like, every_block=False):
        got = original(self, like, every_block)
        spares.append(len(self._spare))
        return got

    monkeypatch.setattr(routing.Router, "_cache_map", counting)
    try:
        model = tiny_model(num_feat=16).channels_last()
        with torch.no_grad():
            model(moving_clip(4, 16, 20)[None], route=Route(threshold=0.5, cell=8))
    finally:
        kernels.extension.cache_clear()
    assert max(spares, default=0) <= 1


@pytest.mark.parametrize("group", [1, 2])
def test_no_cache_is_kept_where_the_next_frame_runs_the_block(fused, group, monkeypatch):
    """A frozen plan knows the next frame's blocks: where one runs everywhere again, its add
    copies (or, in a group, adds up) no cache that the next frame would overwrite unread. The
    picture is the same bit for bit, with fewer caches written."""
    model = tiny_model(num_feat=16).channels_last()
    lr = moving_clip(6, 16, 20)[None]
    route = Route(policy="rotate", keep=0.7, cell=8, group=group)
    kept = []
    original = kernels.residual_add_

    def counted(h, update, cast_into=None, keep=None, accumulate=False):
        kept.append(keep is not None)
        return original(h, update, cast_into, keep, accumulate)

    monkeypatch.setattr(routing, "residual_add_", counted)
    with torch.no_grad():
        got = model(lr, route=route, precision="mixed").sr
        fewer = sum(kept)
        kept.clear()
        monkeypatch.setattr(routing.Router, "_skipped_next", lambda self: [True] * 6)
        want = model(lr, route=route, precision="mixed").sr
    assert torch.equal(got, want)
    assert 0 < fewer < sum(kept)
