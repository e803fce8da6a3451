"""Routing mechanics on tiny random models: exactness of gather/scatter, budgets, policies."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from skipvsr import cost
from skipvsr.backbone import ResidualBlock
from skipvsr.flow import flow_warp
from skipvsr.routing import (
    FRAME_CELL,
    POLICIES,
    ConfidenceEstimator,
    PatchGrid,
    Route,
    Router,
    frozen_keep_mask,
    run_residual_block,
)
from tests.conftest import moving_clip, tiny_model


@pytest.mark.parametrize("h,w,cell", [(23, 37, 8), (16, 16, 8), (9, 30, 32), (40, 24, 16)])
def test_gathered_block_equals_full_block_on_running_patches(h, w, cell):
    torch.manual_seed(1)
    block = ResidualBlock(8).eval()
    x = torch.randn(2, 8, h, w)
    grid = PatchGrid(h, w, cell)
    run = torch.rand(2, grid.rows, grid.cols) > 0.5
    with torch.no_grad():
        full = block(x)
        got = run_residual_block(block, x, run, grid, always_gather=True)
    pix = run.repeat_interleave(grid.cell, 1).repeat_interleave(grid.cell, 2)[:, :h, :w]
    pix = pix[:, None].expand_as(x)
    assert torch.allclose(got[pix], full[pix], atol=1e-5)
    assert torch.equal(got[~pix], x[~pix])


def test_all_run_mask_through_gather_equals_no_routing():
    torch.manual_seed(2)
    block = ResidualBlock(8).eval()
    x = torch.randn(1, 8, 21, 26)
    grid = PatchGrid(21, 26, 8)
    run = torch.ones(1, grid.rows, grid.cols, dtype=torch.bool)
    with torch.no_grad():
        got = run_residual_block(block, x, run, grid, always_gather=True)
        full = block(x)
    assert (got - full).abs().max() < 1e-5


def test_threshold_zero_is_bit_identical_to_plain():
    model = tiny_model()
    lr = moving_clip()[None]
    with torch.no_grad():
        plain = model(lr).sr
        routed = model(lr, Route(policy="learned", threshold=0.0)).sr
    assert torch.equal(plain, routed)


def test_gather_equals_mask_execution():
    model = tiny_model()
    lr = moving_clip()[None]
    for route in (Route(threshold=0.5, cell=8), Route(policy="random", keep=0.5, cell=8)):
        with torch.no_grad():
            a = model(lr, route).sr
            b = model(lr, Route(**{**route.__dict__, "execution": "mask"})).sr
        assert (a - b).abs().max() < 1e-5


def test_higher_threshold_skips_more():
    model = tiny_model()
    lr = moving_clip()[None]
    fractions = []
    for tau in (0.0, 0.3, 0.6, 0.9):
        with torch.no_grad():
            out = model(lr, Route(threshold=tau, cell=8))
        fractions.append(float(torch.stack(list(out.executed.values())).mean()))
    assert fractions[0] == 1.0
    assert all(a >= b for a, b in zip(fractions, fractions[1:], strict=False))
    assert fractions[-1] < 0.9


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("budget", [0.8, 0.63, 0.43])
def test_budget_is_reached_within_two_percent(policy, budget):
    model = tiny_model()
    lr = moving_clip(t=12, h=32, w=40)[None]
    block_budget = cost.block_fraction_for_budget(budget)
    route = Route(policy=policy, block_budget=block_budget, cell=8)
    with torch.no_grad():
        out = model(lr, route)
    executed = float(torch.stack(list(out.executed.values())).mean())
    mac_fraction = 1 - cost.block_share() * (1 - executed)
    assert abs(mac_fraction - budget) <= 0.02, (policy, mac_fraction)


@pytest.mark.parametrize("frames", [6, 40])
@pytest.mark.parametrize("budget", [0.63, 0.43])
def test_learned_budget_is_reached_on_short_and_long_clips(frames, budget):
    """The feedback controller lets the spend vary from frame to frame; the clip still lands
    on its budget, a 6-frame clip (the forced first frame weighs most) as a 40-frame one."""
    model = tiny_model()
    lr = moving_clip(t=frames, h=32, w=40)[None]
    route = Route(block_budget=cost.block_fraction_for_budget(budget), cell=8)
    with torch.no_grad():
        out = model(lr, route)
    executed = float(torch.stack(list(out.executed.values())).mean())
    assert abs(1 - cost.block_share() * (1 - executed) - budget) <= 0.02


def test_feature_input_estimator_reads_the_current_features():
    """With ``difference+feature`` inputs, the second half of the weight scores ``|h_t|``."""
    est = ConfidenceEstimator(4, 2, inputs="difference+feature")
    grid = PatchGrid(8, 8, 4)
    h, prev = torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8)
    pooled = est.features(h, prev, grid)
    assert pooled.shape == (1, 8, 2, 2)
    assert torch.allclose(pooled[:, :4], grid.pool((h - prev).abs()))
    assert torch.allclose(pooled[:, 4:], grid.pool(h))
    with torch.no_grad():
        est.weight[:, 4:] = 1.0
    assert torch.allclose(est(0, pooled), torch.sigmoid(pooled[:, 4:].sum(1)))


def test_frozen_keep_masks():
    assert frozen_keep_mask("shallow", 3, 6).tolist() == [1, 1, 1, 0, 0, 0]
    assert frozen_keep_mask("deep", 2, 6).tolist() == [0, 0, 0, 0, 1, 1]
    assert frozen_keep_mask("uniform", 3, 6).tolist() == [0, 1, 0, 1, 0, 1]
    assert int(frozen_keep_mask("uniform", 22, 30).sum()) == 22


def test_random_policy_is_seeded():
    model = tiny_model()
    lr = moving_clip()[None]
    with torch.no_grad():
        a = model(lr, Route(policy="random", keep=0.5, cell=8, seed=3))
        b = model(lr, Route(policy="random", keep=0.5, cell=8, seed=3))
        c = model(lr, Route(policy="random", keep=0.5, cell=8, seed=4))
    assert torch.equal(a.sr, b.sr)
    assert not torch.equal(a.sr, c.sr)  # same count per patch, other blocks


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"policy": "nope"}, "policy must be one of"),
        ({"threshold": 1.0}, r"threshold must be in \[0, 1\)"),
        ({"threshold": -0.1}, "threshold"),
        ({"policy": "shallow"}, "needs keep or budget"),
        ({"policy": "shallow", "keep": 1.5}, "keep must be in"),
        ({"cell": 2}, "cell must be"),
        ({"cell": 33, "estimator_stride": 2}, "estimator_stride must be >= 1 and divide cell"),
        ({"estimator_stride": 0}, "estimator_stride must be"),
        ({"policy": "rotate", "keep": 0.5, "group": 0}, "group must be >= 1 blocks, got 0"),
        ({"policy": "uniform", "keep": 0.5, "group": 3}, "group needs policy 'rotate'"),
        ({"group": 2}, "group needs policy 'rotate', got 'learned'"),
    ],
)
def test_route_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Route(**kwargs)


def test_a_group_must_divide_the_trunk():
    model = tiny_model()  # 6 blocks a trunk
    with pytest.raises(ValueError, match="group must divide the trunk's 6 blocks, got 4"):
        model(moving_clip()[None], Route(policy="rotate", keep=0.5, cell=8, group=4))


@pytest.mark.parametrize(
    "cell,stride,want",
    [(32, None, 4), (FRAME_CELL, None, 4), (6, None, 2), (33, None, 1), (32, 2, 2), (33, 1, 1)],
)
def test_default_estimator_stride_is_the_largest_that_divides_the_cell(cell, stride, want):
    """With no ``estimator_stride`` the estimator reads every fourth pixel, or every second or
    every pixel where the cell is not a multiple of 4 (any ``--cell`` or ``--patch`` works);
    one set explicitly is used as it is."""
    route = Route(cell=cell, estimator_stride=stride)
    assert route.score_stride == want
    assert replace(route, cell=cell * 3).score_stride == (want if stride else math.gcd(4, 3 * cell))


def test_patch_grid_pool_averages_valid_pixels_only():
    grid = PatchGrid(5, 7, 4)
    x = torch.ones(1, 1, 5, 7)
    assert torch.equal(grid.pool(x), torch.ones(1, 1, 2, 2))
    assert grid.area(torch.device("cpu")).tolist() == [[16, 12], [4, 3]]


@pytest.mark.parametrize("h,w,cell", [(180, 320, 32), (33, 47, 8), (5, 7, 4), (9, 9, 16)])
def test_strided_grid_keeps_every_pixel_in_its_patch(h, w, cell):
    """Pixel ``q`` of the stride-2 map is pixel ``2q`` of the full one: same patch, same grid."""
    grid = PatchGrid(h, w, cell)
    strided = grid.strided(2)
    assert (strided.rows, strided.cols) == (grid.rows, grid.cols)
    assert (strided.height, strided.width) == ((h + 1) // 2, (w + 1) // 2)
    for n, size, cell_full, cell_strided in (
        (grid.rows, strided.height, grid.cell, strided.cell),
        (grid.cols, strided.width, grid.cell, strided.cell),
    ):
        q = torch.arange(size)
        assert torch.equal(q // cell_strided, (2 * q) // cell_full)
        assert int((q // cell_strided).max()) == n - 1


def _router(stride: int, inputs: str, grid: PatchGrid, bias: float = 0.1) -> Router:
    est = ConfidenceEstimator(4, 1, inputs=inputs)
    with torch.no_grad():
        est.weight.normal_(generator=torch.Generator().manual_seed(0))
        est.bias.fill_(bias)
    route = Route(threshold=0.5, cell=grid.cell, estimator_stride=stride)
    return Router(route, grid, 1, 2, 1, est, torch.device("cpu"))


def test_strided_estimator_pools_every_second_pixel():
    """Stride 2: ``S = sigmoid(w . mean over the patch's even rows and columns of |h_t -
    h_(t-1)|  + b)``; stride 1 pools every pixel."""
    grid = PatchGrid(12, 16, 4)
    gen = torch.Generator().manual_seed(1)
    h0, h1 = torch.rand(1, 4, 12, 16, generator=gen), torch.rand(1, 4, 12, 16, generator=gen)
    for stride in (1, 2):
        router = _router(stride, "difference", grid)
        for frame, h in enumerate((h0, h1)):
            router.start_frame(frame)
            router.decide(0, h)
        d = (h1 - h0).abs()[:, :, ::stride, ::stride]
        pooled = torch.nn.functional.avg_pool2d(d, 4 // stride)
        want = torch.sigmoid(torch.einsum("bchw,c->bhw", pooled, router.estimator.weight[0]) + 0.1)
        assert torch.allclose(router._scores[-1], want, atol=1e-6)


def test_strided_estimator_warps_its_cache_at_its_own_resolution():
    """With an even whole-pixel flow, warping the stride-2 cache equals warping the full map
    and then taking every second pixel: the flow is halved onto the strided grid."""
    grid = PatchGrid(12, 16, 4)
    h0 = torch.rand(1, 4, 12, 16, generator=torch.Generator().manual_seed(2))
    h0 = h0.contiguous(memory_format=torch.channels_last)
    flow = torch.zeros(1, 2, 12, 16)
    flow[:, 0], flow[:, 1] = 2.0, -4.0
    router = _router(2, "warped-difference", grid, bias=20.0)  # S ~ 1: every patch skips
    router.start_frame(0)
    router.decide(0, h0)
    router.start_frame(1, flow)
    router.decide(0, h0)
    want = flow_warp(h0, flow)[:, :, ::2, ::2]
    assert router.executed[1, 0] == 0
    assert router.prev[0].shape == (1, 4, 6, 8)
    assert torch.allclose(router.prev[0], want, atol=1e-6)


def test_frame_cell_routes_whole_frames():
    """``cell=FRAME_CELL``: each block runs on the whole frame or not at all, and the budget
    is still met."""
    model = tiny_model()
    lr = moving_clip(t=6, h=32, w=40)[None]
    budget = 0.7
    route = Route(block_budget=cost.block_fraction_for_budget(budget), cell=FRAME_CELL)
    with torch.no_grad():
        out = model(lr, route)
    for branch in ("backward", "forward"):
        executed = out.executed[branch]
        assert bool(((executed == 0) | (executed == 1)).all())
        assert out.block_map[branch].shape == (1, 6, 1, 1)
    executed = float(torch.stack(list(out.executed.values())).mean())
    assert abs(1 - cost.block_share() * (1 - executed) - budget) <= 0.02
    assert 0 < executed < 1


def test_rotate_runs_in_groups_of_three_unless_told():
    assert Route(policy="rotate", keep=0.5).group_size(30) == 3  # ROTATE_GROUP
    assert Route(policy="rotate", keep=0.5).group_size(8) == 1  # 3 does not divide 8
    assert Route(policy="rotate", keep=0.5, group=1).group_size(30) == 1
    assert Route(policy="uniform", keep=0.5).group_size(30) == 1
    assert Route().group_size(30) == 1
    with pytest.raises(ValueError, match="group must divide the trunk's 30 blocks, got 4"):
        Route(policy="rotate", keep=0.5, group=4).group_size(30)
