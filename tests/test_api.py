"""The Python API: input checks that name the argument, routes, stats, and their merging."""

from __future__ import annotations

import pytest
import torch

from skipvsr import cost, kernels
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
        plain = up.model(lr[None], precision=up.precision).sr[0].clamp(0, 1)
    assert torch.equal(sr, plain)


def test_full_cost_runs_the_declared_full_network_bit_for_bit():
    """A fine-tuned student that declares its teacher as ``full_model``: any route that runs
    everything is the teacher exactly; a skipping route runs the student."""
    student, teacher = tiny_model(seed=1), tiny_model(seed=2, estimators=False)
    up = Upscaler(student, full_model=teacher)
    lr = moving_clip(t=3, h=12, w=16)
    p = up.precision  # auto: fp32, or mixed on a CPU with native bf16
    with torch.inference_mode():
        plain_teacher = teacher(lr[None], precision=p).sr[0].clamp(0, 1)
        routed = student(lr[None], Route(threshold=0.5, cell=8), precision=p)
        routed_student = routed.sr[0].clamp(0, 1)
    for route in (Route(), Route(threshold=0.0), Route(budget=1.0, block_budget=1.0)):
        assert torch.equal(up.upscale(lr, route)[0], plain_teacher)
    assert torch.equal(up.upscale(lr, Route(threshold=0.5, cell=8))[0], routed_student)
    with pytest.raises(ValueError, match="full_model must have the shape of model"):
        Upscaler(student, full_model=tiny_model(num_block=4, estimators=False))


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


def test_auto_precision_follows_the_cpu_flags_and_the_quality_bar(monkeypatch):
    from skipvsr import api
    from skipvsr.api import PrecisionCheck

    assert api.resolve_precision("fp32", "cpu", ("avx512_bf16",)) == "fp32"
    assert api.resolve_precision("bf16", "cpu", ()) == "bf16"
    assert api.resolve_precision("mixed", "cpu", ()) == "mixed"
    good, noisy, lossy = (
        PrecisionCheck(60.0, 0.0),
        PrecisionCheck(54.9, 0.0),
        PrecisionCheck(60, 0.03),
    )
    bf16 = ("avx2", "avx512f", "avx512_bf16")
    monkeypatch.setattr(api, "PRECISION_CHECKS", {"bf16": good, "mixed": good})
    assert api.resolve_precision("auto", "cpu", bf16) == "bf16"  # the fastest that qualifies
    assert api.resolve_precision("auto", "cpu", ("avx2", "amx_bf16")) == "bf16"
    assert api.resolve_precision("auto", "cpu", ("avx2", "avx512f")) == "fp32"  # emulated bf16
    assert api.resolve_precision("auto", "cuda", ("avx512_bf16",)) == "fp32"
    monkeypatch.setattr(api, "PRECISION_CHECKS", {"bf16": noisy, "mixed": good})
    assert api.resolve_precision("auto", "cpu", bf16) == "mixed"
    monkeypatch.setattr(api, "PRECISION_CHECKS", {"bf16": noisy, "mixed": lossy})
    assert api.resolve_precision("auto", "cpu", bf16) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        api.resolve_precision("fp16", "cpu", ())


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    from skipvsr.api import cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert cpu_flags(str(info)) == ("avx2", "avx512f", "avx512_bf16")
    assert cpu_flags(str(tmp_path / "missing")) == ()


def test_stats_record_precision_threads_and_flags(up):
    _, stats = up.upscale(moving_clip(t=2, h=12, w=16))
    record = stats.as_dict()
    assert record["precision"] == up.precision in ("fp32", "mixed", "bf16")
    assert record["threads"] == torch.get_num_threads()
    assert isinstance(record["cpu_flags"], list)
    assert record["fused_kernels"] == (kernels.extension() is not None)
    assert record["group"] == 1


def test_stats_record_rotates_group(up):
    from skipvsr.api import UpscaleStats

    lr = moving_clip(t=3, h=12, w=16)
    for group, want in ((None, 3), (2, 2), (1, 1)):  # the tiny trunk has 6 blocks
        _, stats = up.upscale(lr, Route(policy="rotate", keep=0.5, group=group))
        assert stats.as_dict()["group"] == want
        assert UpscaleStats.from_dict(stats.as_dict()).group == want


def test_bf16_keeps_the_residual_stream_and_output_in_fp32():
    lr = moving_clip(t=3, h=16, w=16)
    fp32, _ = Upscaler(tiny_model(), precision="fp32").upscale(lr)
    bf16, _ = Upscaler(tiny_model(), precision="bf16").upscale(lr)
    assert bf16.dtype == torch.float32
    mse = float((fp32 - bf16).pow(2).mean())
    assert 0 < mse < 1e-4  # bf16 convs, fp32 stream: close to fp32, not equal


def test_precisions_round_where_they_say():
    """``mixed``: each block's conv1 and the upsampler in bf16, conv2 in fp32 in the first
    ``FP32_LEAD_BLOCKS`` blocks of each trunk and bf16 after, the trunks' input convs in bf16
    on the features and fp32 on the LR frame; the stream in fp32."""
    from skipvsr.routing import FP32_LEAD_BLOCKS, block_precision, residual_update

    model = tiny_model()
    block = model.forward_trunk.blocks[0]
    h = torch.rand(1, model.num_feat, 8, 8)
    with torch.no_grad():
        conv1 = torch.nn.functional.conv2d(
            h.bfloat16(), block.conv1.weight.bfloat16(), block.conv1.bias.bfloat16(), padding=1
        )
        want = block.conv2(conv1.relu().float())
        got = residual_update(block, h, "mixed")
        assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)
        assert residual_update(block, h, "bf16").dtype == torch.bfloat16
        assert torch.equal(residual_update(block, h), block.conv2(torch.relu(block.conv1(h))))
        lead = FP32_LEAD_BLOCKS
        assert [block_precision("mixed", m) for m in range(30)] == ["mixed"] * lead + ["bf16"] * (
            30 - lead
        )
        assert {block_precision(p, m) for p in ("fp32", "bf16") for m in (0, 29)} == {
            "fp32",
            "bf16",
        }
        trunk = model.forward_trunk
        x = torch.rand(1, 3 + model.num_feat, 8, 8)
        # the input conv: the LR frame's 3 channels in fp32, the features' in bf16, summed in fp32
        weight, bias = trunk.main[0].weight, trunk.main[0].bias
        frame = torch.nn.functional.conv2d(x[:, :3], weight[:, :3], bias, padding=1)
        feat = torch.nn.functional.conv2d(
            x[:, 3:].bfloat16(), weight[:, 3:].bfloat16(), padding=1
        ).float()
        want = torch.nn.functional.leaky_relu(frame + feat, 0.1)
        fp32_in = trunk.main[1](trunk.main[0](x))
        assert 0 < float((want - fp32_in).abs().max()) < 0.02
        # bf16 trunks run on channels-last maps (faster oneDNN kernels)
        want = want.contiguous(memory_format=torch.channels_last)
        for m, blk in enumerate(trunk.blocks):
            want = want + residual_update(blk, want, "mixed" if m < lead else "bf16")
        assert torch.equal(trunk(x, precision="mixed")[0], want)
        with torch.autocast("cpu", torch.bfloat16):  # a caller's autocast changes nothing
            assert torch.equal(trunk(x, precision="mixed")[0], want)
        # the frame and the features apart (the step warps the features straight into bf16)
        split = trunk(x[:, :3], precision="mixed", features=x[:, 3:].bfloat16())[0]
        assert torch.equal(split, want)
    lr = moving_clip(t=3, h=16, w=16)[None]
    with torch.no_grad():
        fp32, mixed, bf16 = (model(lr, Route(), precision=p).sr for p in ("fp32", "mixed", "bf16"))
    assert mixed.dtype == bf16.dtype == torch.float32
    assert 0 < float((fp32 - mixed).abs().max()) < 0.02
    assert float((fp32 - mixed).pow(2).mean()) < float((fp32 - bf16).pow(2).mean())
    with pytest.raises(ValueError, match="precision must be one of"):
        model(lr, Route(), precision="fp16")
