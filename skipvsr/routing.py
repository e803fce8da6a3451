"""Adaptive patch routing: which residual block runs on which patch of which frame.

Decision rule and score direction
---------------------------------
The paper uses the word "confidence" for two opposite things: its Fig. 3 skips a patch when the
confidence is *below* the threshold, while its regression target
``S~ = 1 - tanh(theta * ||h_m - h_target||)`` is *high* when the features are already close to
the target, i.e. when the next blocks are redundant. Table 2 fixes the direction of the
threshold: 0 is the full network and larger thresholds are cheaper.

skipvsr reads the score as the paper's target defines it and makes the threshold behave as the
paper's tables do:

* ``S`` in (0, 1) is the estimated *redundancy* of the next block for a patch: 1 means the
  patch is already at the target layer's features and the block would change nothing.
* With threshold ``tau`` in [0, 1), block ``m`` runs on a patch iff ``S_m <= 1 - tau``.
  ``tau = 0`` runs every block everywhere (and is computed on the plain code path, so it is
  bit-identical to BasicVSR); raising ``tau`` skips more.

The estimator (paper Eq. 5-6) sees the inter-frame difference of the block's input features,
``D = |h_m^t - h_m^(t-1)|`` in propagation order, averaged over each patch (GAP), through one
linear layer and a sigmoid. The first frame of each branch has no predecessor and runs fully.

Execution
---------
Skipping saves real time: the patches that run are gathered (with a 2-pixel halo for the two
3x3 convs), computed as one batch, and scattered back. Nothing is computed and then masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from skipvsr import cost

POLICIES = ("learned", "uniform", "shallow", "deep", "random")
HALO = 2  # two 3x3 convs per residual block


@dataclass(frozen=True)
class Route:
    """How to route one forward pass.

    Args:
        policy: ``learned`` (confidence estimator and threshold), or a frozen baseline:
            ``uniform`` (evenly spaced blocks), ``shallow`` (first K), ``deep`` (last K),
            ``random`` (K random blocks per patch and frame).
        threshold: learned policy only, in [0, 1): block runs iff ``S <= 1 - threshold``.
        keep: frozen policies only, fraction of residual blocks kept, in [0, 1].
        budget: alternative to ``threshold``/``keep``: the target MAC fraction of the whole
            network without SpyNet, in [non-block floor, 1]. Resolved by the caller into
            ``block_budget`` (see :func:`skipvsr.cost.block_fraction_for_budget`).
        block_budget: target fraction of residual-block work, in [0, 1]. With ``learned`` the
            threshold is adapted frame by frame to reach it; frozen policies use it as ``keep``.
        cell: patch size in LR pixels for routing on whole frames. Larger inputs are split
            into a grid of ``cell x cell`` patches; a batch element no larger than ``cell`` is
            one patch (the paper's tube protocol).
        seed: seed of the ``random`` policy.
        execution: ``gather`` runs blocks only on the selected patches (inference: saves
            time); ``mask`` runs every block everywhere and keeps the update only on the
            selected patches (training: differentiable, every decision still applied).
    """

    policy: str = "learned"
    threshold: float = 0.0
    keep: float | None = None
    budget: float | None = None
    block_budget: float | None = None
    cell: int = 32
    seed: int = 0
    execution: str = "gather"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if not (0.0 <= self.threshold < 1.0) or math.isnan(self.threshold):
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        for name in ("keep", "block_budget"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.budget is not None and not (0.0 < self.budget <= 1.0):
            raise ValueError(f"budget must be in (0, 1], got {self.budget}")
        if self.cell < 4:
            raise ValueError(f"cell must be >= 4 LR pixels, got {self.cell}")
        if self.execution not in ("gather", "mask"):
            raise ValueError(f"execution must be 'gather' or 'mask', got {self.execution!r}")
        if self.policy != "learned" and self.keep is None and self.block_budget is None:
            raise ValueError(f"policy {self.policy!r} needs keep or budget")

    @classmethod
    def for_budget(cls, budget: float, net: cost.NetworkShape | None = None, **fields) -> Route:
        """The route that costs ``budget`` of the full network's MACs without SpyNet on a
        network of shape ``net`` (default 64x30): ``block_budget`` from
        :func:`skipvsr.cost.block_fraction_for_budget` (raises below the non-block floor).
        ``fields`` are the other fields (``policy``, ``cell``, ``seed``, ``execution``)."""
        blocks = cost.block_fraction_for_budget(budget, net or cost.NetworkShape())
        return cls(budget=budget, block_budget=blocks, **fields)

    @property
    def keep_fraction(self) -> float | None:
        return self.block_budget if self.block_budget is not None else self.keep

    def runs_everything(self) -> bool:
        """True when no block can be skipped: the plain BasicVSR code path is used."""
        if self.policy == "learned":
            if self.block_budget is not None:
                return self.block_budget >= 1.0
            return self.threshold == 0.0
        return self.keep_fraction >= 1.0


@dataclass
class PatchGrid:
    """A grid of ``cell x cell`` patches over an ``(H, W)`` feature map.

    The last row and column of patches may extend past the map; ``area`` holds each patch's
    number of valid pixels, shape ``(nH, nW)`` float32.
    """

    height: int
    width: int
    cell: int
    rows: int = field(init=False)
    cols: int = field(init=False)

    def __post_init__(self) -> None:
        if self.cell >= self.height and self.cell >= self.width:
            self.cell = max(self.height, self.width)
        self.rows = math.ceil(self.height / self.cell)
        self.cols = math.ceil(self.width / self.cell)

    @property
    def single(self) -> bool:
        return self.rows == 1 and self.cols == 1

    def area(self, device: torch.device) -> torch.Tensor:
        hs = torch.full((self.rows,), self.cell, dtype=torch.float32, device=device)
        ws = torch.full((self.cols,), self.cell, dtype=torch.float32, device=device)
        hs[-1] = self.height - self.cell * (self.rows - 1)
        ws[-1] = self.width - self.cell * (self.cols - 1)
        return hs[:, None] * ws[None, :]

    def pad_amount(self) -> tuple[int, int]:
        return self.rows * self.cell - self.height, self.cols * self.cell - self.width

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``x`` ``(B, C, H, W)`` over each patch's valid pixels: ``(B, C, nH, nW)``."""
        ph, pw = self.pad_amount()
        xp = F.pad(x, (0, pw, 0, ph))
        summed = F.avg_pool2d(xp, self.cell) * float(self.cell * self.cell)
        return summed / self.area(x.device)


ESTIMATOR_INPUTS = ("difference", "difference+feature")


class ConfidenceEstimator(nn.Module):
    """GAP + one linear layer + sigmoid per routing decision of one branch (paper Eq. 6).

    ``weight`` is ``(num_decisions, K)`` and ``bias`` ``(num_decisions,)``; with ``shared`` one
    row serves every block, as the paper describes. ``forward(m, pooled)`` maps the patch-pooled
    estimator input ``(B, K, nH, nW)`` to the redundancy score ``S`` ``(B, nH, nW)`` float32 in
    (0, 1). ``inputs`` picks what is pooled (:meth:`features`): the paper's inter-frame
    difference ``|h_t - h_{t-1}|`` (``K = C``), or that difference concatenated with the current
    features ``|h_t|`` (``K = 2C``, an ablation); a checkpoint's input follows from ``K``.
    """

    def __init__(
        self,
        num_feat: int = 64,
        num_blocks: int = 30,
        shared: bool = False,
        inputs: str = "difference",
    ) -> None:
        super().__init__()
        if inputs not in ESTIMATOR_INPUTS:
            raise ValueError(f"estimator inputs must be one of {ESTIMATOR_INPUTS}, got {inputs!r}")
        self.inputs = inputs
        rows = 1 if shared else num_blocks
        width = num_feat * (1 if inputs == "difference" else 2)
        self.weight = nn.Parameter(torch.zeros(rows, width))
        self.bias = nn.Parameter(torch.zeros(rows))

    def features(self, h: torch.Tensor, prev: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
        """Pooled input ``(B, K, nH, nW)`` from features ``h`` and ``prev`` ``(B, C, H, W)``."""
        pooled = grid.pool((h - prev).abs())
        if self.inputs == "difference":
            return pooled
        return torch.cat([pooled, grid.pool(h.abs())], 1)

    def logits(self, m: int, pooled: torch.Tensor) -> torch.Tensor:
        row = 0 if self.weight.shape[0] == 1 else m
        return torch.einsum("bchw,c->bhw", pooled.float(), self.weight[row]) + self.bias[row]

    def forward(self, m: int, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(m, pooled))


def frozen_keep_mask(policy: str, k: int, num_blocks: int) -> torch.Tensor:
    """Blocks kept by a frozen policy with ``k`` of ``num_blocks``: ``(num_blocks,)`` bool."""
    idx = torch.arange(num_blocks)
    if policy == "shallow":
        return idx < k
    if policy == "deep":
        return idx >= num_blocks - k
    if policy == "uniform":
        return (idx + 1) * k // num_blocks > idx * k // num_blocks
    raise ValueError(f"no fixed keep mask for policy {policy!r}")


class Router:
    """Routing state of one branch during one forward pass (never stored on the model).

    Call :meth:`start_frame` before each frame, :meth:`decide` before each residual block, and
    read :attr:`executed` afterwards: per frame and block, the fraction of the frame's pixels on
    which the block ran, ``(T, num_blocks)``.
    """

    def __init__(
        self,
        route: Route,
        grid: PatchGrid,
        batch: int,
        num_frames: int,
        num_blocks: int,
        estimator: ConfidenceEstimator | None,
        device: torch.device,
        targets: dict[int, list[torch.Tensor]] | None = None,
        target_every: int = 6,
    ) -> None:
        self.route = route
        self.grid = grid
        self.batch = batch
        self.num_blocks = num_blocks
        self.estimator = estimator
        self.device = device
        self.area = grid.area(device)
        self.total_area = float(self.area.sum()) * batch
        self.executed = torch.zeros(num_frames, num_blocks)
        self.block_map = torch.zeros(batch, num_frames, grid.rows, grid.cols, dtype=torch.int16)
        self.thresholds: list[float] = []
        self.prev: list[torch.Tensor | None] = [None] * num_blocks
        self.frame = -1
        self.step = 0
        self._gen = torch.Generator().manual_seed(route.seed)
        self._plan: torch.Tensor | None = None
        self._scores: list[torch.Tensor] = []
        self._tau = route.threshold
        self.targets = targets
        self.target_every = target_every
        self.log: list[tuple[int, int, torch.Tensor, torch.Tensor | None]] = []

    # -- per frame -------------------------------------------------------------------------
    def start_frame(self, frame: int) -> None:
        """Begin frame ``frame`` (its index in the clip); frames come in propagation order."""
        self.frame = frame
        r = self.route
        cells = (self.batch, self.grid.rows, self.grid.cols)
        if r.policy == "learned":
            if r.block_budget is not None and self.step > 0:
                self._tau = self._next_threshold()
            self._scores = []
        else:
            # Error diffusion over frames makes a fractional K exact on average.
            target = r.keep_fraction * self.num_blocks
            k = round(target * (self.step + 1)) - round(target * self.step)
            k = max(0, min(self.num_blocks, k))
            if r.policy == "random":
                noise = torch.rand(*cells, self.num_blocks, generator=self._gen)
                ranks = noise.argsort(dim=-1).argsort(dim=-1)
                self._plan = (ranks < k).permute(3, 0, 1, 2).to(self.device)
            else:
                keep = frozen_keep_mask(r.policy, k, self.num_blocks)
                self._plan = keep.view(-1, 1, 1, 1).expand(-1, *cells).to(self.device)
        self.thresholds.append(-1.0 if self._tau is None else self._tau)
        self.step += 1

    def _owed_fraction(self) -> float:
        """Fraction of this frame's block work still owed to reach ``block_budget`` on average
        over the frames so far (the first frame of a branch always runs fully)."""
        done = float(self.executed.sum())  # in units of (frame x block) at full area
        owed = self.route.block_budget * self.step * self.num_blocks
        want = (owed + self.route.block_budget * self.num_blocks - done) / self.num_blocks
        return min(max(want, 0.0), 1.0)

    def _quantile_threshold(self, scores: list[torch.Tensor], want: float) -> float:
        """The threshold under which the area fraction ``want`` of ``scores`` would run."""
        stacked = torch.stack(scores).float()
        weights = self.area.expand_as(stacked).reshape(-1)
        flat = stacked.reshape(-1)
        order = flat.argsort()
        cum = torch.cumsum(weights[order], 0) / weights.sum()
        if want <= 0.0:
            return 1.0 - float(flat.min()) + 1e-6 if float(flat.min()) > 0 else 0.999999
        pos = int(torch.searchsorted(cum, torch.tensor(want)).clamp(max=len(flat) - 1))
        tau = 1.0 - float(flat[order[pos]])
        return min(max(tau, 0.0), 0.999999)

    def _next_threshold(self) -> float | None:
        """Threshold for the next frame from the last frame's scores, or ``None`` when the
        last frame had none (it was the first): then each block uses the scores seen so far
        in the current frame."""
        self._want = self._owed_fraction()
        if not self._scores:
            return None
        return self._quantile_threshold(self._scores, self._want)

    # -- per block -------------------------------------------------------------------------
    def target_layer(self, m: int) -> int:
        """The teacher depth whose features supervise the decision before block ``m``."""
        return self.target_every * (m // self.target_every + 1)

    def decide(self, m: int, h: torch.Tensor) -> torch.Tensor:
        """Which patches run block ``m`` on features ``h`` ``(B, C, H, W)``: ``(B, nH, nW)`` bool.

        With ``targets`` (training), every estimator score is logged in :attr:`log` as
        ``(frame, m, S, d)`` where ``d`` ``(B, nH, nW)`` is the per-patch RMS distance of ``h``
        to the teacher's features at :meth:`target_layer`.
        """
        r = self.route
        if r.policy != "learned" and self.targets is None:
            run = self._plan[m]
        else:
            prev = self.prev[m]
            self.prev[m] = h.detach()
            score = None
            if prev is not None and self.estimator is not None:
                pooled = self.estimator.features(h.detach(), prev, self.grid)
                score = self.estimator(m, pooled)
                self._scores.append(score.detach())
            if self.targets is not None and score is not None:
                target = self.targets[self.target_layer(m)][self.frame]
                d = self.grid.pool((h.detach() - target).pow(2).mean(1, keepdim=True))
                self.log.append((self.frame, m, score, d[:, 0].sqrt()))
            if r.policy != "learned":
                run = self._plan[m]
            elif score is None:
                run = torch.ones(
                    self.batch, self.grid.rows, self.grid.cols, dtype=torch.bool, device=self.device
                )
            else:
                tau = self._tau
                if tau is None:  # second frame of a budget run: no history yet
                    tau = self._quantile_threshold(self._scores, self._want)
                run = score.detach() <= 1.0 - tau
        self.executed[self.frame, m] = float((run.float() * self.area).sum()) / self.total_area
        self.block_map[:, self.frame] += run.to("cpu", torch.int16)
        return run


def masked_residual_block(
    block: nn.Module, h: torch.Tensor, run: torch.Tensor, grid: PatchGrid
) -> torch.Tensor:
    """Training form of :func:`run_residual_block`: the block runs everywhere and its update
    is kept where ``run`` (``(B, nH, nW)`` bool or float in [0, 1]); differentiable."""
    mask = run.to(h.dtype)[:, None]
    mask = mask.repeat_interleave(grid.cell, 2).repeat_interleave(grid.cell, 3)
    mask = mask[..., : grid.height, : grid.width]
    return h + mask * (block(h) - h)


def run_residual_block(
    block: nn.Module,
    h: torch.Tensor,
    run: torch.Tensor,
    grid: PatchGrid,
    always_gather: bool = False,
) -> torch.Tensor:
    """Apply ``block`` (``h + conv2(relu(conv1(h)))``) only on the patches where ``run``.

    Args:
        block: a residual block with ``conv1`` and ``conv2`` (3x3, padding 1).
        h: ``(B, C, H, W)`` features.
        run: ``(B, nH, nW)`` bool over ``grid``.

    Returns:
        ``(B, C, H, W)``; patches that do not run keep ``h``. Running patches equal the full
        block's output up to float summation order: the 2-pixel halo comes from the current
        neighbours and zero padding is reproduced at the frame border. ``always_gather``
        disables the shortcuts for all-run and none-run masks (for tests).
    """
    if not always_gather:
        if bool(run.all()):
            return block(h)
        if not bool(run.any()):
            return h
    b_idx, r_idx, c_idx = run.nonzero(as_tuple=True)
    if grid.single and not always_gather:
        out = h.clone()
        out[b_idx] = block(h[b_idx])
        return out
    c = grid.cell
    ph, pw = grid.pad_amount()
    hp = F.pad(h, (HALO, HALO + pw, HALO, HALO + ph))
    windows = hp.unfold(2, c + 2 * HALO, c).unfold(3, c + 2 * HALO, c)
    x = windows[b_idx, :, r_idx, c_idx]  # (n, C, c+4, c+4)
    # Valid-pixel masks: conv1's output outside the frame must read as zero padding for conv2,
    # and the update outside the frame must stay zero.
    valid = torch.zeros(
        1, 1, grid.rows * c + 2 * HALO, grid.cols * c + 2 * HALO, dtype=h.dtype, device=h.device
    )
    valid[..., HALO : HALO + grid.height, HALO : HALO + grid.width] = 1
    vwin = valid[0, 0].unfold(0, c + 2 * HALO, c).unfold(1, c + 2 * HALO, c)[r_idx, c_idx]
    mid = F.relu(F.conv2d(x, block.conv1.weight, block.conv1.bias))
    mid = mid * vwin[:, None, 1:-1, 1:-1]
    upd = (
        F.conv2d(mid, block.conv2.weight, block.conv2.bias) * vwin[:, None, HALO:-HALO, HALO:-HALO]
    )
    centre = hp[:, :, HALO:, HALO:].unfold(2, c, c).unfold(3, c, c)
    centre[b_idx, :, r_idx, c_idx] = x[:, :, HALO:-HALO, HALO:-HALO] + upd
    return hp[:, :, HALO : HALO + grid.height, HALO : HALO + grid.width]
