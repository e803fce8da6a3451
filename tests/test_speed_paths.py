"""Fast routed execution: box (strip) and dense-fallback paths against mask execution, and the
per-frame warp plan against ``flow_warp``."""

from __future__ import annotations

import math

import pytest
import torch

from skipvsr import routing
from skipvsr.backbone import ResidualBlock
from skipvsr.flow import WarpPlan, flow_warp
from skipvsr.routing import PatchGrid, Route, cell_boxes, masked_residual_block
from tests.conftest import moving_clip, tiny_model

PATHS = {"boxes": math.inf, "dense": 0.0}
FRACTIONS = [0.0, 0.1, 0.5, 0.9, 1.0]


def _mask(batch: int, grid: PatchGrid, fraction: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, grid.rows, grid.cols, generator=g) < fraction


def _cover(boxes, shape) -> torch.Tensor:
    count = torch.zeros(shape, dtype=torch.int32)
    for b, y0, y1, x0, x1 in boxes:
        count[b, y0:y1, x0:x1] += 1
    return count


@pytest.mark.parametrize("h,w,cell", [(23, 37, 8), (9, 30, 32), (40, 24, 16), (33, 33, 4)])
def test_boxes_of_running_and_skipped_patches_tile_the_frame_once(h, w, cell):
    grid = PatchGrid(h, w, cell)
    for seed, fraction in enumerate(FRACTIONS):
        run = _mask(3, grid, fraction, seed)
        on, off = cell_boxes(run, grid), cell_boxes(~run, grid)
        assert torch.equal(_cover(on, (3, h, w)), grid.expand(run, torch.int32)[:, 0])
        assert torch.equal(_cover(on + off, (3, h, w)), torch.ones(3, h, w, dtype=torch.int32))


def test_boxes_merge_rows_and_batch_elements():
    grid = PatchGrid(16, 16, 4)
    run = torch.zeros(2, 4, 4, dtype=torch.bool)
    run[:, 1:3, 1:3] = True  # the same 2x2 patch square in both elements
    assert cell_boxes(run, grid) == [(slice(0, 2), 4, 12, 4, 12)]


@pytest.mark.parametrize("h,w,cell", [(23, 37, 8), (5, 40, 32), (9, 30, 32), (64, 64, 32)])
def test_patch_pool_is_the_mean_over_each_patchs_valid_pixels(h, w, cell):
    grid = PatchGrid(h, w, cell)
    x = torch.randn(2, 3, h, w).contiguous(memory_format=torch.channels_last)
    want = torch.zeros(2, 3, grid.rows, grid.cols)
    for r in range(grid.rows):
        for c in range(grid.cols):
            patch = x[
                :, :, r * grid.cell : (r + 1) * grid.cell, c * grid.cell : (c + 1) * grid.cell
            ]
            want[:, :, r, c] = patch.mean((2, 3))
    assert (grid.pool(x) - want).abs().max() < 1e-6


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("h,w,cell", [(23, 37, 8), (9, 30, 32), (40, 24, 16)])
def test_routed_block_equals_mask_execution(path, channels_last, h, w, cell, monkeypatch):
    monkeypatch.setattr(routing, "DENSE_FROM", PATHS[path])
    torch.manual_seed(1)
    block = ResidualBlock(8).eval()
    x = torch.randn(2, 8, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grid = PatchGrid(h, w, cell)
    for seed, fraction in enumerate(FRACTIONS):
        run = _mask(2, grid, fraction, seed)
        with torch.no_grad():
            want = masked_residual_block(block, x, run, grid)
            got = routing.run_residual_block(block, x, run, grid, always_gather=path == "boxes")
        assert (got - want).abs().max() < 1e-5, fraction
        skipped = ~grid.expand(run, torch.float32).bool().expand_as(x)
        assert torch.equal(got[skipped], x[skipped])


@pytest.mark.parametrize("precision", ["mixed", "bf16"])
@pytest.mark.parametrize("path", PATHS)
def test_routed_block_equals_mask_execution_in_bf16_precisions(path, precision, monkeypatch):
    """Box execution rounds to bf16 where the dense block does, so the two agree to bf16
    rounding, far below a block update's size."""
    monkeypatch.setattr(routing, "DENSE_FROM", PATHS[path])
    torch.manual_seed(1)
    block = ResidualBlock(8).eval()
    x = torch.randn(2, 8, 23, 37)
    grid = PatchGrid(23, 37, 8)
    for seed, fraction in enumerate(FRACTIONS):
        run = _mask(2, grid, fraction, seed)
        with torch.no_grad():
            want = masked_residual_block(block, x, run, grid, precision)
            exact = masked_residual_block(block, x, run, grid)
            got = routing.run_residual_block(
                block, x, run, grid, precision, always_gather=path == "boxes"
            )
        assert got.dtype == torch.float32
        assert (got - want).abs().max() < 0.02, fraction
        assert (got - want).abs().max() <= 2 * (exact - want).abs().max() + 1e-6
        skipped = ~grid.expand(run, torch.float32).bool().expand_as(x)
        assert torch.equal(got[skipped], x[skipped])


ROUTES = [
    Route(policy="random", keep=0.1, cell=8),
    Route(policy="random", keep=0.5, cell=8),
    Route(policy="random", keep=0.9, cell=8),
    Route(policy="random", keep=0.5, cell=8, skip="identity"),
    Route(policy="rotate", keep=0.5, cell=8),
    Route(threshold=0.5, cell=8),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "route", ROUTES, ids=lambda r: f"{r.policy}-{r.keep}-{r.threshold}-{r.skip}"
)
@pytest.mark.parametrize("inputs", ["difference", "warped-difference"])
@pytest.mark.parametrize("batched", [True, False], ids=["cell-batch", "per-box"])
def test_routed_model_equals_mask_execution_on_odd_frames(
    path, route, inputs, batched, monkeypatch
):
    """Routed execution (running cells as one batch where the kernels are built, else box by
    box; or the dense fallback) equals mask execution within 1e-5 in float32."""
    monkeypatch.setattr(routing, "DENSE_FROM", PATHS[path])
    if not batched:
        monkeypatch.setattr(routing.kernels, "batches_cells", lambda h, out: False)
    model = tiny_model()
    if inputs != "difference":
        from skipvsr.backbone import BasicVSR

        warped = BasicVSR(8, 6, estimators=True, estimator_inputs=inputs)
        warped.load_state_dict(model.state_dict(), strict=False)
        model = warped.eval()
    lr = moving_clip(t=5, h=23, w=37)[None]
    with torch.no_grad():
        a = model(lr, route)
        b = model(lr, Route(**{**route.__dict__, "execution": "mask"}))
    assert (a.sr - b.sr).abs().max() < 1e-5
    assert torch.equal(a.executed["forward"], b.executed["forward"])


def _flow(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Flows up to 1.5 frame widths: many samples land partly or wholly outside the frame."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([w, h], dtype=torch.float32).view(1, 2, 1, 1)
    return (torch.rand(n, 2, h, w, generator=g) - 0.5) * 3 * scale


@pytest.mark.parametrize("h,w", [(23, 37), (1, 9), (16, 16)])
def test_warp_plan_matches_flow_warp(h, w):
    x = torch.randn(2, 5, h, w, generator=torch.Generator().manual_seed(0))
    flow = _flow(2, h, w, 1)
    flow[0, :, 0, 0] = torch.tensor([0.25, -0.75])  # partly outside: zero padding blends in
    plan = WarpPlan(flow)
    want = flow_warp(x, flow)
    assert torch.equal(plan(x), want)  # NCHW: same grid, same grid_sample
    rows = plan(x.contiguous(memory_format=torch.channels_last))
    assert rows.is_contiguous(memory_format=torch.channels_last)
    assert (rows - want).abs().max() < 1e-4
    assert torch.equal(rows == 0, want == 0)  # wholly outside: exactly zero in both
    assert torch.equal(plan(x.double()), flow_warp(x.double(), flow))
    half = plan(x.bfloat16().contiguous(memory_format=torch.channels_last))
    assert half.dtype == torch.bfloat16
    assert (half.float() - flow_warp(x.bfloat16(), flow).float()).abs().max() < 0.05


@pytest.mark.parametrize("channels_last", [False, True])
def test_warp_plan_on_boxes_writes_only_the_boxes(channels_last):
    h, w = 23, 37
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 4, h, w).contiguous(memory_format=fmt)
    plan = WarpPlan(_flow(3, h, w, 2))
    grid = PatchGrid(h, w, 8)
    boxes = cell_boxes(_mask(3, grid, 0.5, 3), grid)
    out = torch.full_like(x, 7.0)
    plan.warp_boxes(x, out, boxes)
    inside = _cover(boxes, (3, h, w)).bool()[:, None].expand_as(x)
    assert (out[inside] - plan(x)[inside]).abs().max() < 1e-6
    assert torch.all(out[~inside] == 7.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_warp_plan_on_pixels_equals_the_boxes(dtype):
    """One gather over the skipped cells' pixels writes what one gather per box writes, bit for
    bit, and nothing else; maps that are not contiguous channels-last are refused (a reshape
    of them would copy and the writes would be lost)."""
    from skipvsr.flow import pixel_rows

    h, w = 23, 37
    cl = torch.channels_last
    x = torch.randn(3, 4, h, w).to(dtype).contiguous(memory_format=cl)
    plan = WarpPlan(_flow(3, h, w, 2))
    grid = PatchGrid(h, w, 8)
    skipped = _mask(3, grid, 0.5, 3)
    by_box = torch.full_like(x, 7.0)
    plan.warp_boxes(x, by_box, cell_boxes(skipped, grid))
    at_once = torch.full_like(x, 7.0)
    pixels = grid.expand(skipped, torch.bool).reshape(-1).nonzero().squeeze(1)
    plan.warp_pixels(x, at_once, pixels)
    assert torch.equal(at_once, by_box)
    assert (at_once == 7.0).any() and (at_once != 7.0).any()
    with pytest.raises(ValueError, match="contiguous channels-last"):
        pixel_rows(x.contiguous())


def test_a_spent_budget_runs_nothing_on_the_remaining_frames():
    """Three frames at 0.43: the forced first frame spends the whole block budget."""
    model = tiny_model()
    with torch.no_grad():
        out = model(moving_clip(t=3)[None], Route.for_budget(0.43, cell=8))
    assert float(out.executed["forward"][1:].sum()) == 0.0


@pytest.mark.parametrize("precision", ["mixed", "bf16"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "route",
    [r for r in ROUTES if r.skip == "reuse" and r.policy != "learned"],
    ids=lambda r: f"{r.policy}-{r.keep}",
)
def test_bf16_caches_hold_where_blocks_compute_in_bf16(precision, path, route, monkeypatch):
    """Gather execution caches a bf16 block's updates and inputs in bf16 (its updates are
    bf16-valued already), the fp32 lead blocks' in fp32; the output stays mask execution's up
    to the rounding of the warped caches, and the skips fall where they did (frozen policies:
    the learned one's scores read the rounded caches, so a patch at its threshold may flip)."""
    monkeypatch.setattr(routing, "DENSE_FROM", PATHS[path])
    seen: dict[str, dict[int, torch.dtype]] = {}

    def release(self):
        if self.route.execution == "gather":
            held = enumerate(self.updates)  # group members and caches no frame reads hold none
            seen[self.route.execution] = {m: u.dtype for m, u in held if u is not None}
        return original(self)

    original = routing.Router.release
    monkeypatch.setattr(routing.Router, "release", release)
    model = tiny_model()
    lr = moving_clip(t=5, h=23, w=37)[None]
    with torch.no_grad():
        a = model(lr, route, precision=precision)
        b = model(lr, Route(**{**route.__dict__, "execution": "mask"}), precision=precision)
    lead = routing.FP32_LEAD_BLOCKS if precision == "mixed" else 0
    want = {m: torch.float32 if m < lead else torch.bfloat16 for m in range(model.num_block)}
    assert seen["gather"] and seen["gather"] == {m: want[m] for m in seen["gather"]}
    assert torch.equal(a.executed["forward"], b.executed["forward"])
    assert (a.sr - b.sr).abs().max() < 2e-3


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_conv_pixel_shuffle_equals_the_shuffled_conv(channels_last, bf16):
    """The upsampler's reordered-channel shuffle with its fused LeakyReLU gives the numbers of
    conv, shuffle, LeakyReLU: exactly in NCHW, to float32 rounding in fp32, and within one
    bf16 rounding in bf16 (the fused activation reads the float32 accumulator)."""
    import torch.nn.functional as F

    from skipvsr.backbone import conv_pixel_shuffle

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 32, 3, 1, 1)
    x = torch.randn(2, 8, 9, 13)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        want = F.leaky_relu(F.pixel_shuffle(conv(x), 2), 0.1)
        got = conv_pixel_shuffle(conv, x, 0.1)
    assert got.shape == (2, 8, 18, 26) and got.dtype == want.dtype
    if not channels_last:
        assert torch.equal(got, want)
    else:
        tol = 2**-7 if bf16 else 1e-6  # one bf16 rounding, relative
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
        assert (got.float() - want.float()).abs().max() > 0 or not bf16  # the fused path ran


def test_conv_leaky_relu_is_unfused_under_autograd():
    """Training keeps the two differentiable ops; inference on channels-last maps fuses them
    and agrees to float32 rounding."""
    import torch.nn.functional as F

    from skipvsr.kernels import conv_leaky_relu

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, 1, 1)
    x = torch.randn(1, 8, 11, 7).contiguous(memory_format=torch.channels_last)
    want = F.leaky_relu(conv(x), 0.2)
    got = conv_leaky_relu(x, conv.weight, conv.bias, 1, 0.2)
    got.sum().backward()
    assert conv.weight.grad is not None
    with torch.no_grad():
        fused = conv_leaky_relu(x, conv.weight, conv.bias, 1, 0.2)
    torch.testing.assert_close(fused, want.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.detach(), want.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("padding", [0, 1])
def test_block_relu_fused_into_conv1_gives_the_same_numbers(precision, padding):
    """A residual block's first conv with its ReLU fused (channels-last inference, as dense
    blocks and boxes run) equals the conv followed by the ReLU exactly: rounding keeps the sign,
    so ReLU on the float32 accumulator and ReLU after rounding agree."""
    import torch.nn.functional as F

    from skipvsr.backbone import ResidualBlock
    from skipvsr.routing import BlockConvs

    torch.manual_seed(0)
    block = ResidualBlock(8)
    convs = BlockConvs.of(block, precision)
    x = torch.randn(2, 8, 12, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = convs.first(x, padding=padding)
        want = F.conv2d(x.to(convs.w1.dtype), convs.w1, convs.b1, padding=padding).relu()
    assert got.dtype == convs.w1.dtype and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, want)
    assert (got == 0).any() and (got > 0).any()


def test_conv_leaky_relu_runs_the_two_ops_where_onednn_has_no_bf16(monkeypatch):
    """On a CPU without oneDNN's bf16 path the fused op refuses bf16 (faked here): the unfused
    ops run instead, with the same numbers as conv then ReLU."""
    import torch.nn.functional as F

    from skipvsr import kernels

    def refuses(*args):
        raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx512bw")

    monkeypatch.setattr(kernels, "onednn_fuses", lambda dtype: dtype != torch.bfloat16)
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", refuses)
    torch.manual_seed(0)
    w, b = torch.randn(8, 8, 3, 3).bfloat16(), torch.randn(8).bfloat16()
    x = torch.randn(1, 8, 10, 6).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = kernels.conv_leaky_relu(x, w, b, 1, 0.0)
        want = F.conv2d(x, w, b, padding=1).relu()
    assert torch.equal(got, want)


@pytest.fixture
def prepadding(monkeypatch):
    """Force the pre-padded bf16 convs on any CPU (where oneDNN has no bf16 path the convs
    still compute in bf16, unfused) and count the zero-bordered maps they read."""
    from skipvsr import backbone

    made = []
    original = routing.zero_bordered

    def counted(*args, **kwargs):
        made.append(args[1])
        return original(*args, **kwargs)

    always = lambda dtype: dtype == torch.bfloat16  # noqa: E731
    monkeypatch.setattr(routing, "prepads", always)
    monkeypatch.setattr(backbone, "prepads", always)
    monkeypatch.setattr(routing, "zero_bordered", counted)
    return made


@pytest.mark.parametrize("precision,ring", [("bf16", 2), ("mixed", 1)])
@pytest.mark.parametrize("h,w", [(12, 9), (5, 31)])
def test_pre_padded_block_equals_the_padded_convs(prepadding, precision, ring, h, w):
    """A dense residual block on a zero-bordered map (conv1 computing a ring around the frame,
    set to 0 as conv2's padding) gives the padded convs' update within one bf16 rounding; with
    a float32 conv2 (the leading blocks of ``mixed``) conv1's output keeps conv2's own padding.
    NCHW maps and autograd keep the padded convs, bit for bit."""
    torch.manual_seed(0)
    convs = routing.BlockConvs.of(ResidualBlock(8), precision)
    x = torch.randn(2, 8, h, w).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = convs.update(x)
        want = convs.second(convs.first(x))
        assert prepadding == [ring]
        assert torch.equal(convs.update(x.contiguous()), convs.second(convs.first(x.contiguous())))
    assert got.shape == want.shape and got.dtype == want.dtype == convs.w2.dtype
    assert got.is_contiguous(memory_format=torch.channels_last)
    tol = 2**-7  # one bf16 rounding, relative
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
    trained = convs.update(x.requires_grad_())
    assert prepadding == [ring] and trained.requires_grad


def test_zero_bordered_holds_the_cast_map_inside_zeros():
    x = torch.randn(1, 4, 3, 5).contiguous(memory_format=torch.channels_last)
    out = routing.zero_bordered(x, 2, torch.bfloat16)
    assert out.shape == (1, 4, 7, 9) and out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out[:, :, 2:-2, 2:-2], x.bfloat16())
    inside = torch.zeros(7, 9, dtype=torch.bool)
    inside[2:-2, 2:-2] = True
    assert (out[:, :, ~inside] == 0).all()


@pytest.mark.parametrize("ring", [1, 2])
def test_shuffle_writes_inside_a_zero_border(ring):
    """``conv_pixel_shuffle(..., ring=r)`` is the shuffled map inside a zero border, exactly."""
    from skipvsr.backbone import conv_pixel_shuffle

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 32, 3, 1, 1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        plain = conv_pixel_shuffle(conv, x, 0.1)
        bordered = conv_pixel_shuffle(conv, x, 0.1, ring=ring)
    assert bordered.shape == (2, 8, 10 + 2 * ring, 14 + 2 * ring)
    assert bordered.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(bordered[:, :, ring:-ring, ring:-ring], plain)
    assert bordered[:, :, :ring].abs().sum() == 0 and bordered[:, :, -ring:].abs().sum() == 0
    assert bordered[..., :ring].abs().sum() == 0 and bordered[..., -ring:].abs().sum() == 0


def test_pre_padded_upsampler_equals_the_padded_one(prepadding, monkeypatch):
    """The bf16 upsampler on zero-bordered maps (the shuffles writing inside the borders, in
    bands from upconv2 on, conv_hr computing a ring that is set to 0 as conv_last's padding)
    gives the padded upsampler's picture within a few bf16 roundings."""
    from skipvsr import backbone

    borders = []
    original = routing.zero_border

    def counted(x, ring):
        borders.append(ring)
        original(x, ring)

    monkeypatch.setattr(routing, "zero_border", counted)
    model = tiny_model().channels_last()
    torch.manual_seed(1)
    feats = [torch.randn(1, 8, 7, 10).contiguous(memory_format=torch.channels_last) for _ in "ab"]
    lr = torch.rand(1, 3, 7, 10)
    with torch.no_grad(), routing.bf16_autocast(lr, True):
        got = model.upsample(*feats, lr)
        monkeypatch.setattr(backbone, "prepads", lambda dtype: False)
        want = model.upsample(*feats, lr)
    assert borders == [1, 2]  # the two shuffles' borders (one band: the whole 14-row 2x map)
    assert got.shape == want.shape == (1, 3, 28, 40) and got.dtype == want.dtype == torch.float32
    assert got.is_contiguous()
    scale = float(want.abs().max())
    assert (got - want).abs().max() <= 4 * 2**-8 * scale


@pytest.mark.parametrize("batch", [1, 3])
def test_upsampler_bands_equal_the_whole_frame(prepadding, batch):
    """The upsampler from upconv2 on, in bands of 1, 3 or 5 rows of the 2x map (halos at the
    first, inner and last bands, a last band shorter than the others) or of whole elements (2
    per band, the last band holding 1), adds the whole batch's picture into ``base`` bit for
    bit."""
    from skipvsr.backbone import conv_pixel_shuffle

    model = tiny_model().channels_last()
    torch.manual_seed(2)
    fused = torch.randn(batch, 8, 7, 10).contiguous(memory_format=torch.channels_last)
    base = torch.rand(batch, 3, 28, 40)
    with torch.no_grad(), routing.bf16_autocast(fused, True):
        up = conv_pixel_shuffle(model.upconv1, fused, 0.1, ring=1)
        assert up.shape == (batch, 8, 16, 22)
        want = model.upsample_bands(up, base.clone(), 14 * batch)
        for rows in (1, 3, 5, 14, 28):
            assert torch.equal(model.upsample_bands(up, base.clone(), rows), want), rows
    assert not torch.equal(want, base)


def test_band_rows_cover_the_band_bytes():
    """A band holds about :data:`HR_BAND_BYTES` of conv_hr's input, and at least 4 rows."""
    from skipvsr.backbone import HR_BAND_BYTES, band_rows

    rows = band_rows(640, 64, 2)  # the 2x map of a 180x320 frame, bf16
    assert rows == 51
    assert rows * 2 * (2 * 640 + 4) * 64 * 2 <= HR_BAND_BYTES
    assert (rows + 1) * 2 * (2 * 640 + 4) * 64 * 2 > HR_BAND_BYTES
    assert band_rows(100_000, 64, 2) == 4


@pytest.mark.parametrize("low", [False, True], ids=["fp32", "bf16"])
def test_upsample_writes_into_the_given_slot(low):
    """``upsample(..., into=)`` writes the frame into the given map (the clip's output slot)
    with the numbers it returns otherwise, bit for bit; the clip's output is then that map."""
    model = tiny_model().channels_last()
    torch.manual_seed(2)
    feats = [torch.randn(2, 8, 7, 10).contiguous(memory_format=torch.channels_last) for _ in "ab"]
    lr = torch.rand(2, 3, 7, 10)
    slot = torch.full((2, 3, 28, 40), float("nan"))
    with torch.no_grad(), routing.bf16_autocast(lr, low):
        want = model.upsample(*feats, lr)
        got = model.upsample(*feats, lr, into=slot)
    assert got.data_ptr() == slot.data_ptr() and torch.equal(slot, want)
