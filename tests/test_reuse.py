"""Skip outputs: reusing a block's last warped update, the rotate policy and refresh frames."""

from __future__ import annotations

import pytest
import torch

from skipvsr import cost, routing
from skipvsr.backbone import ResidualBlock
from skipvsr.routing import PatchGrid, Route, Router, frozen_keep_mask, residual_update
from tests.conftest import moving_clip, tiny_model


def _router(grid: PatchGrid, frames: int = 3, blocks: int = 2) -> Router:
    return Router(Route(policy="uniform", keep=0.5, cell=grid.cell), grid, 1, frames, blocks,
                  None, torch.device("cpu"))  # fmt: skip


def test_reused_update_is_added_exactly_where_the_block_is_skipped():
    torch.manual_seed(0)
    block = ResidualBlock(4).eval()
    grid = PatchGrid(8, 12, 4)
    router = _router(grid)
    h = torch.randn(1, 4, 8, 12)
    router.start_frame(0)
    with torch.no_grad():
        first = router.apply(block, 0, h, torch.ones(1, 2, 3, dtype=torch.bool))
    cached = first - h
    # next frame, moved right by 3 pixels: flow (dx=-3) samples x-3 onto x
    flow = torch.zeros(1, 2, 8, 12)
    flow[:, 0] = -3.0
    router.start_frame(1, flow)
    h2 = torch.randn(1, 4, 8, 12)
    run = torch.tensor([[[True, False, False], [False, True, True]]])
    with torch.no_grad():
        out = router.apply(block, 0, h2, run)
        fresh = block(h2)
    shifted = torch.zeros_like(cached)
    shifted[..., 3:] = cached[..., :-3]
    pix = grid.expand(run, torch.float32).bool().expand_as(h2)
    assert torch.allclose(out[pix], fresh[pix], atol=1e-5)
    assert torch.allclose(out[~pix], (h2 + shifted)[~pix], atol=1e-5)
    # the cache now holds the fresh update where the block ran, the warped one elsewhere
    assert torch.allclose(router.updates[0], out - h2, atol=1e-6)


def test_identity_skip_adds_nothing():
    block = ResidualBlock(4).eval()
    grid = PatchGrid(8, 8, 4)
    router = Router(Route(policy="uniform", keep=0.5, cell=4, skip="identity"), grid, 1, 2, 1,
                    None, torch.device("cpu"))  # fmt: skip
    h = torch.randn(1, 4, 8, 8)
    router.start_frame(0)
    run = torch.tensor([[[True, False], [False, False]]])
    with torch.no_grad():
        out = router.apply(block, 0, h, run)
    pix = grid.expand(run, torch.float32).bool().expand_as(h)
    assert torch.equal(out[~pix], h[~pix])
    assert torch.allclose(out[pix], (h + residual_update(block, h))[pix], atol=1e-6)


ROUTES = [
    Route(threshold=0.5, cell=8),
    Route(threshold=0.5, cell=8, refresh=3),
    Route(policy="random", keep=0.5, cell=8),
    Route(policy="rotate", keep=0.5, cell=8, group=1),
    Route(policy="rotate", keep=0.5, cell=8),  # groups of ROTATE_GROUP
    Route(policy="rotate", keep=0.3, cell=8, skip="identity"),
    Route(policy="rotate", keep=0.5, cell=8, group=2),
    Route(policy="rotate", keep=0.3, cell=8, group=3),
]


@pytest.mark.parametrize(
    "route", ROUTES, ids=lambda r: f"{r.policy}-{r.skip}-{r.refresh}-group{r.group}"
)
@pytest.mark.parametrize("inputs", ["difference", "warped-difference"])
def test_gather_equals_mask_execution_with_reuse(route, inputs):
    model = tiny_model()
    if inputs != "difference":
        model = tiny_model()
        warped = tiny_model(estimators=False)
        from skipvsr.backbone import BasicVSR

        warped = BasicVSR(8, 6, estimators=True, estimator_inputs=inputs)
        warped.load_state_dict(model.state_dict(), strict=False)
        model = warped.eval()
    lr = moving_clip()[None]
    with torch.no_grad():
        a = model(lr, route)
        b = model(lr, Route(**{**route.__dict__, "execution": "mask"}))
    assert (a.sr - b.sr).abs().max() < 1e-5
    assert torch.equal(a.executed["forward"], b.executed["forward"])
    assert float(a.executed["forward"].mean()) < 1.0


@pytest.mark.parametrize("policy", ["learned", "rotate"])
def test_threshold_zero_and_full_keep_are_plain_basicvsr_bit_for_bit(policy):
    model = tiny_model()
    lr = moving_clip()[None]
    route = Route(policy=policy, keep=None if policy == "learned" else 1.0, refresh=2)
    with torch.no_grad():
        assert torch.equal(model(lr).sr, model(lr, route).sr)


def test_reuse_changes_the_output_of_skipped_blocks():
    model = tiny_model()
    lr = moving_clip()[None]
    with torch.no_grad():
        reuse = model(lr, Route(policy="rotate", keep=0.5, cell=8)).sr
        ident = model(lr, Route(policy="rotate", keep=0.5, cell=8, skip="identity")).sr
    assert torch.equal(reuse[:, 0:0], ident[:, 0:0])
    assert (reuse - ident).abs().max() > 1e-4


def test_rotate_runs_every_block_equally_often():
    n, k = 30, 13
    counts = sum(frozen_keep_mask("rotate", k, n, shift=s).int() for s in range(n))
    assert torch.equal(counts, torch.full((n,), k))
    for s in range(5):
        assert int(frozen_keep_mask("rotate", k, n, shift=s).sum()) == k
    half = [frozen_keep_mask("rotate", 15, 30, shift=s) for s in (0, 1)]
    assert torch.equal(half[0], ~half[1])  # at half, a block runs every other frame


def test_rotate_in_groups_runs_and_skips_whole_groups():
    """``group`` 3: K counts groups of 3 consecutive blocks, the pattern shifts by a group a
    frame, and every block still runs equally often."""
    n, g, k = 30, 3, 4
    masks = [frozen_keep_mask("rotate", k, n, shift=s, group=g) for s in range(n // g)]
    for mask in masks:
        assert int(mask.sum()) == k * g
        assert torch.equal(mask.view(-1, g).all(1), mask.view(-1, g).any(1))  # whole groups
    assert torch.equal(sum(m.int() for m in masks), torch.full((n,), k))
    assert not torch.equal(masks[0], masks[1])


def test_a_skipped_group_adds_one_warped_cache():
    """With ``group`` > 1 a group's first block keeps the group's total update and its other
    blocks keep none; a skipped group warps that one cache. The picture is the one of a cache
    per block (the warp is linear) up to float rounding, and the blocks run as planned."""
    from skipvsr import routing

    model = tiny_model()
    lr = moving_clip()[None]
    route = Route(policy="rotate", keep=0.34, cell=8, group=3)
    held = []
    original = routing.Router.release

    def spy(self):
        held.append([u is not None for u in self.updates])
        original(self)

    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(routing.Router, "release", spy)
        grouped = model(lr, route)
        mp.setattr(routing.Router, "_member", lambda self, m: False)
        per_block = model(lr, route)
    assert held[0] == [True, False, False, True, False, False]  # a branch, group caches
    assert held[-1] == [True] * 6  # a cache per block
    assert 0 < (grouped.sr - per_block.sr).abs().max() < 1e-5
    assert torch.equal(grouped.executed["forward"], per_block.executed["forward"])
    assert 0 < float(grouped.executed["forward"][1:].mean()) < 1


@pytest.mark.parametrize("frames", [5, 40])
@pytest.mark.parametrize(
    "route",
    [
        Route(cell=8),
        Route(cell=8, refresh=8),
        Route(policy="rotate", cell=8, keep=0.0, group=1),
        Route(policy="random", cell=8, keep=0.0),
        Route(policy="rotate", cell=8, keep=0.0, group=2),
    ],
    ids=["learned", "learned-refresh", "rotate", "random", "rotate-groups"],
)
@pytest.mark.parametrize("budget", [0.8, 0.63, 0.43])
def test_budgets_are_met_on_short_and_long_clips(route, budget, frames):
    model = tiny_model()
    lr = moving_clip(t=frames, h=16, w=24)[None]
    blocks = cost.block_fraction_for_budget(budget)
    route = Route(**{**route.__dict__, "keep": None, "block_budget": blocks, "threshold": 0.0})
    with torch.no_grad():
        out = model(lr, route)
    for branch, executed in out.executed.items():
        mac = 1 - cost.block_share() * (1 - float(executed.mean()))
        assert abs(mac - budget) <= 0.02, (branch, mac)


@pytest.mark.parametrize("frames", [5, 40])
@pytest.mark.parametrize("backward", [0.1, 0.35, 0.6])
@pytest.mark.parametrize("budget", [0.8, 0.63, 0.43])
def test_a_split_budget_lands_on_the_clip_budget_with_the_backward_share(budget, backward, frames):
    """With ``backward_budget`` the backward branch spends its share and the forward branch
    what is left, so the clip (both branches) still lands on the budget."""
    model = tiny_model()
    lr = moving_clip(t=frames, h=16, w=24)[None]
    blocks = cost.block_fraction_for_budget(budget)
    back = min(max(backward, 2 * blocks - 1), 2 * blocks)  # what the forward branch can follow
    route = Route(cell=8, block_budget=blocks, backward_budget=back)
    with torch.no_grad():
        out = model(lr, route)
    spent = {name: float(executed.mean()) for name, executed in out.executed.items()}
    forced = 1 / frames  # each branch's first frame runs fully
    assert abs(spent["backward"] - max(min(back, 2 * blocks - forced), forced)) <= 0.02
    clip = (spent["backward"] + spent["forward"]) / 2
    assert abs(1 - cost.block_share() * (1 - clip) - budget) <= 0.02, spent


def test_branch_split_interpolates_the_measured_points_within_what_the_forward_can_follow():
    points = ((0.2, 0.1), (0.5, 0.3), (0.9, 0.85))
    assert routing.split_backward_budget(points, 0.5) == pytest.approx(0.3)
    assert routing.split_backward_budget(points, 0.35) == pytest.approx(0.2)
    assert routing.split_backward_budget(points, 0.1) == pytest.approx(0.05)  # below: scaled
    assert routing.split_backward_budget(points, 1.0) == pytest.approx(1.0)
    # the forward branch cannot spend more than every block: backward >= 2b - 1
    assert routing.split_backward_budget(((0.2, 0.0), (0.9, 0.0)), 0.7) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="sorted"):
        routing.split_backward_budget(((0.5, 0.3), (0.2, 0.1)), 0.4)
    with pytest.raises(ValueError, match="backward_budget"):
        Route(threshold=0.3, backward_budget=0.2)
    with pytest.raises(ValueError, match="backward_budget"):
        Route(block_budget=0.5, backward_budget=1.5)


def test_registered_split_reaches_the_route_through_the_api():
    from skipvsr.api import Upscaler
    from skipvsr.weights import backward_budgets

    up = Upscaler(tiny_model(), precision="fp32", backward_budgets=((0.2, 0.1), (0.9, 0.85)))
    routed = up._route(Route(block_budget=0.5), "full", 48)
    want = routing.split_backward_budget(up.backward_budgets, routed.block_budget)
    assert routed.backward_budget == pytest.approx(want)
    own = up._route(Route(block_budget=0.5, backward_budget=0.3), "full", 48)
    assert own.backward_budget == 0.3  # a route's own split wins
    assert up._route(Route(threshold=0.3), "full", 48).backward_budget is None
    assert backward_budgets("skipvsr-vimeo-bi") is not None


def test_estimator_only_checkpoint_loads_its_registered_backbone_bit_for_bit(tmp_path):
    from skipvsr.weights import BACKBONE_KEY, CheckpointError, load_model, resolve, sha256
    from tests.conftest import real_weights

    real_weights()
    teacher = load_model("basicvsr-vimeo-bi")
    est = {
        "forward_estimator.weight": torch.randn(30, 64),
        "forward_estimator.bias": torch.zeros(30),
        "forward_estimator.warped": torch.ones(()),
        "backward_estimator.weight": torch.randn(30, 64),
        "backward_estimator.bias": torch.zeros(30),
        "backward_estimator.warped": torch.ones(()),
    }
    digest = sha256(resolve("basicvsr-vimeo-bi"))
    good = tmp_path / "est.pt"
    torch.save({**est, BACKBONE_KEY: torch.tensor(list(digest.encode()), dtype=torch.uint8)}, good)
    model = load_model(good)
    assert model.forward_estimator.inputs == "warped-difference"
    assert torch.equal(model.forward_estimator.weight, est["forward_estimator.weight"])
    for k, v in teacher.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    bad = tmp_path / "bad.pt"
    torch.save({**est, BACKBONE_KEY: torch.tensor(list(b"0" * 64), dtype=torch.uint8)}, bad)
    with pytest.raises(CheckpointError, match="not a registered model"):
        load_model(bad)
    mixed = tmp_path / "mixed.pt"
    extra = {"fusion.bias": torch.zeros(64)}
    torch.save(
        {**est, **extra, BACKBONE_KEY: torch.tensor(list(digest.encode()), dtype=torch.uint8)},
        mixed,
    )
    with pytest.raises(CheckpointError, match="holds backbone keys"):
        load_model(mixed)
