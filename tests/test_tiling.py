"""The tube protocol: layout, merge by averaging, tiled == untiled where defined."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skipvsr.api import Upscaler
from skipvsr.routing import Route
from skipvsr.tiling import TubeLayout, tube_starts
from tests.conftest import moving_clip, tiny_model


def test_tube_starts_cover_the_axis():
    assert tube_starts(180, 48, 46) == [0, 46, 92, 132]
    assert len(tube_starts(320, 48, 46)) == 7
    assert tube_starts(30, 48, 46) == [0]
    with pytest.raises(ValueError, match="stride must be <= patch"):
        tube_starts(100, 10, 20)


def test_paper_protocol_overhead_at_180x320():
    layout = TubeLayout(180, 320, 48, 46)
    assert len(layout.boxes) == 28
    assert layout.overhead() == pytest.approx(28 * 48 * 48 / (180 * 320))


def test_merge_of_split_is_identity_for_a_pointwise_operator():
    clip = torch.rand(3, 3, 50, 61)
    layout = TubeLayout(50, 61, 16, 11)
    up = F.interpolate(layout.split(clip).flatten(0, 1), scale_factor=4, mode="nearest")
    merged = layout.merge(up.view(len(layout.boxes), 3, 3, 64, 64))
    assert torch.allclose(merged, F.interpolate(clip, scale_factor=4, mode="nearest"), atol=1e-6)


def test_one_tube_covering_the_frame_equals_full_frame():
    up = Upscaler(tiny_model())
    lr = moving_clip(t=4, h=20, w=24)
    full, _ = up.upscale(lr)
    tiled, stats = up.upscale(lr, mode="patch", patch=24, stride=24)
    assert torch.equal(full, tiled)
    assert stats.mac_fraction == 1.0


def test_patch_mode_routes_per_tube_and_counts_overlap():
    up = Upscaler(tiny_model(estimators=False))
    lr = moving_clip(t=5, h=30, w=40)
    route = Route("shallow", keep=0.5, skip="identity")  # no forced first frame: exact counts
    sr, stats = up.upscale(lr, route, mode="patch", patch=16, stride=14)
    assert sr.shape == (5, 3, 120, 160)
    assert stats.executed_block_fraction == 0.5
    assert (stats.routing_map == 6).all()  # 3 of 6 blocks in each of the two branches
    assert stats.routing_map.shape == (5, 2, 3)
