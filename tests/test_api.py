"""The Python API: input checks that name the argument, routes, stats, and their merging."""

from __future__ import annotations

import pytest
import torch

from skipvsr import cost
from skipvsr.api import Upscaler, UpscaleStats
from skipvsr.routing import Route
from tests.conftest import moving_clip, tiny_model


@pytest.fixture(scope="module")
def up() -> Upscaler:
    return Upscaler(tiny_model(num_block=6))


def test_full_network_output_and_stats(up):
    lr = moving_clip(t=3, h=12, w=16)
    sr, stats = up.upscale(lr)
    assert sr.shape == (3, 3, 48, 64) and sr.dtype == torch.float32
    assert 0.0 <= float(sr.min()) and float(sr.max()) <= 1.0
    assert (stats.frames, stats.lr_size, stats.mode, stats.policy) == (
        3,
        (12, 16),
        "full",
        "learned",
    )
    assert stats.mac_fraction == pytest.approx(1.0) and stats.executed_block_fraction == 1.0
    assert stats.routing_map is None
    assert stats.gmacs_per_frame == pytest.approx(stats.full_gmacs_per_frame)


def test_threshold_zero_equals_the_plain_forward(up):
    lr = moving_clip(t=3, h=12, w=16)
    sr, _ = up.upscale(lr, Route(threshold=0.0))
    with torch.inference_mode():
        plain = up.model(lr[None]).sr[0].clamp(0, 1)
    assert torch.equal(sr, plain)


@pytest.mark.parametrize(
    "lr, kwargs, match",
    [
        (torch.rand(3, 12, 16), {}, r"lr must be \(T, 3, H, W\)"),
        (torch.rand(0, 3, 12, 16), {}, "lr must hold at least one frame"),
        (torch.rand(2, 3, 6, 16), {}, "lr: frames must be at least 8x8"),
        (torch.rand(2, 3, 12, 16), {"mode": "tiles"}, "mode must be one of full, patch"),
    ],
)
def test_input_checks_name_the_argument(up, lr, kwargs, match):
    with pytest.raises(ValueError, match=match):
        up.upscale(lr, **kwargs)


def test_learned_policy_needs_estimators_named_once_in_the_upscaler():
    plain = Upscaler(tiny_model(estimators=False))
    lr = moving_clip(t=2, h=12, w=16)
    with pytest.raises(ValueError, match="route: policy 'learned' needs a model with confidence"):
        plain.upscale(lr, Route(threshold=0.5))
    plain.check_route(Route(threshold=0.0))  # the full network needs no estimators
    plain.check_route(Route("shallow", keep=0.5))
    _, stats = plain.upscale(lr, Route("shallow", keep=0.5))
    assert stats.executed_block_fraction == 0.5


def test_a_budget_is_resolved_against_the_model(up):
    route = Route.for_budget(0.99, policy="uniform")  # for the official 64x30 shape
    assert route.block_budget == pytest.approx(cost.block_fraction_for_budget(0.99))
    _, stats = up.upscale(moving_clip(t=4, h=12, w=16), route)  # 8x6: blocks are 1.9 %
    assert stats.budget == 0.99 and stats.policy == "uniform"
    assert stats.mac_fraction == pytest.approx(0.99, abs=0.002)
    assert stats.mac_fraction == pytest.approx(
        cost.mac_fraction(stats.executed_block_fraction, up.net)
    )


def test_routing_map_sums_both_branches(up):
    route = Route("shallow", keep=0.5, cell=8, skip="identity")  # no forced first frame
    _, stats = up.upscale(moving_clip(t=3, h=16, w=16), route)
    assert stats.routing_map.shape == (3, 2, 2)
    assert (stats.routing_map == 6).all()  # 3 of 6 blocks in each of the two branches


def test_merge_weights_chunks_by_frames(up):
    a = UpscaleStats(2, 1.0, (8, 8), "full", "learned", 0.0, None, 1.0, 2.0, 0.1, 0.5, 0.4, [0.1])
    b = UpscaleStats(6, 3.0, (8, 8), "full", "learned", 0.0, None, 2.0, 2.0, 0.1, 1.0, 1.0, [0.2])
    m = UpscaleStats.merge([a, b], [2, 6])
    assert (m.frames, m.seconds, m.thresholds) == (8, 4.0, [0.1, 0.2])
    assert m.mac_fraction == pytest.approx(0.875) and m.gmacs_per_frame == pytest.approx(1.75)
    assert m.executed_block_fraction == pytest.approx(0.85)
    with pytest.raises(ValueError, match="parts"):
        UpscaleStats.merge([], [])
