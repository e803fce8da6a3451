"""BasicVSR: output shapes and dtypes, flows, taps, and the plain path under a full route."""

from __future__ import annotations

import pytest
import torch

from skipvsr.backbone import BRANCHES, BasicVSR, ResidualBlock, Trunk
from skipvsr.routing import Route
from tests.conftest import moving_clip, tiny_model


@pytest.fixture(scope="module")
def model() -> BasicVSR:
    return tiny_model(num_block=3)


def test_forward_shapes_and_fields(model):
    lr = moving_clip(t=3, h=12, w=16)[None]
    with torch.no_grad():
        out = model(lr)
    assert out.sr.shape == (1, 3, 3, 48, 64) and out.sr.dtype == torch.float32
    assert set(out.executed) == set(BRANCHES)
    for b in BRANCHES:
        assert torch.equal(out.executed[b], torch.ones(3, 3))  # no routing: every block ran
        assert out.block_map[b] is None and out.thresholds[b] == []


def test_one_frame_clip(model):
    with torch.no_grad():
        out = model(moving_clip(t=1, h=8, w=8)[None])
    assert out.sr.shape == (1, 1, 3, 32, 32)


def test_compute_flows_shapes(model):
    lr = moving_clip(t=4, h=12, w=16)[None]
    with torch.no_grad():
        back, fwd = model.compute_flows(lr)
        empty, _ = model.compute_flows(lr[:, :1])
    assert back.shape == fwd.shape == (1, 3, 2, 12, 16)
    assert empty.shape == (1, 0, 2, 12, 16)


def test_given_flows_are_used(model):
    lr = moving_clip(t=3, h=12, w=16)[None]
    with torch.no_grad():
        flows = model.compute_flows(lr)
        assert torch.equal(model(lr).sr, model(lr, flows=flows).sr)
        zero = tuple(torch.zeros_like(f) for f in flows)
        assert not torch.equal(model(lr).sr, model(lr, flows=zero).sr)


def test_taps_return_per_frame_features(model):
    lr = moving_clip(t=2, h=8, w=12)[None]
    with torch.no_grad():
        out = model(lr, taps=(0, 3))
    for b in BRANCHES:
        assert sorted(out.features[b]) == [0, 3]
        assert [f.shape for f in out.features[b][3]] == [(1, 8, 8, 12)] * 2


def test_full_route_is_the_plain_path_bit_for_bit(model):
    lr = moving_clip(t=3, h=12, w=16)[None]
    with torch.no_grad():
        plain = model(lr).sr
        for route in (Route(threshold=0.0), Route("uniform", keep=1.0), Route(block_budget=1.0)):
            assert torch.equal(model(lr, route).sr, plain)


def test_bad_input_names_the_argument(model):
    with pytest.raises(ValueError, match=r"lr must be \(B, T, 3, H, W\)"):
        model(torch.rand(2, 3, 8, 8))


def test_trunk_and_block_keep_the_feature_shape():
    block, trunk = ResidualBlock(4), Trunk(7, 4, 2)
    x = torch.rand(2, 4, 5, 6)
    assert block(x).shape == x.shape
    h, tapped = trunk(torch.rand(2, 7, 5, 6), taps=(0, 2))
    assert h.shape == (2, 4, 5, 6) and torch.equal(tapped[2], h) and set(tapped) == {0, 2}


def test_state_dict_keys_follow_basicsr():
    keys = set(BasicVSR(num_feat=4, num_block=1).state_dict())
    assert {"backward_trunk.main.0.weight", "forward_trunk.main.2.0.conv1.weight"} <= keys
    assert not any("estimator" in k for k in keys)
    assert any("estimator" in k for k in BasicVSR(4, 1, estimators=True).state_dict())


def test_channels_last_runs_fp32_trunks_on_nhwc_maps_and_changes_only_rounding():
    trunk = Trunk(7, 4, 3)
    x = torch.rand(1, 7, 9, 10)
    with torch.no_grad():
        plain, plain_taps = trunk(x, taps=(1,))
        want = trunk.main[1](trunk.main[0](x)).contiguous(memory_format=torch.channels_last)
        for block in trunk.blocks:
            want = want + block.conv2(torch.relu(block.conv1(want)))
        trunk.fp32_channels_last = True
        nhwc, nhwc_taps = trunk(x, taps=(1,))
    assert plain_taps[1].is_contiguous()
    assert nhwc_taps[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nhwc, want.contiguous())
    assert torch.allclose(nhwc, plain, atol=1e-5)
    model = tiny_model(num_block=2)
    lr = moving_clip(t=2, h=8, w=8)[None]
    with torch.no_grad():
        before = model(lr).sr
        assert not model.forward_trunk.fp32_channels_last
        after = model.channels_last()(lr).sr
    assert model.forward_trunk.fp32_channels_last and model.backward_trunk.fp32_channels_last
    assert torch.allclose(after, before, atol=1e-5)
