"""The Python API: load a model, upscale a clip within a compute budget.

>>> model = skipvsr.load("basicvsr-vimeo-bi")
>>> route = skipvsr.Route.for_budget(0.8, policy="shallow")
>>> sr, stats = model.upscale(lr, route)  # lr: (T, 3, H, W) in [0, 1]
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import torch

from skipvsr import cost, kernels, routing
from skipvsr.backbone import BRANCHES, BasicVSR, VSROutput
from skipvsr.kernels import cpu_flags
from skipvsr.routing import Route
from skipvsr.tiling import TubeLayout, tube_starts
from skipvsr.weights import DEFAULT_MODEL, backward_budgets, full_network, load_model

MODES = ("full", "patch")
PRECISIONS = ("auto", *routing.PRECISIONS)
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
BF16_MIN_PSNR_VS_FP32 = 55.0
"""``auto`` may pick a bf16 precision only where its output stays this close (dB) to fp32's..."""
BF16_MAX_VID4_LOSS = 0.02
"""... and where it costs at most this much (dB) on Vid4 BI against fp32."""


@dataclass(frozen=True)
class PrecisionCheck:
    """What a bf16 precision measured against fp32 with the official Vimeo-BI network.

    Attributes:
        psnr_vs_fp32: dB, RGB rounded to 8 bits, against the fp32 output (Vid4 calendar, first
            6 frames: ``benchmarks/precision.py``).
        vid4_loss: dB, fp32 minus this precision on Vid4 BI (Y, mean of clip means, ``skipvsr
            eval``).
    """

    psnr_vs_fp32: float
    vid4_loss: float

    @property
    def qualifies(self) -> bool:
        return self.psnr_vs_fp32 >= BF16_MIN_PSNR_VS_FP32 and self.vid4_loss <= BF16_MAX_VID4_LOSS


PRECISION_CHECKS = {
    "bf16": PrecisionCheck(psnr_vs_fp32=52.30, vid4_loss=0.0089),
    "mixed": PrecisionCheck(psnr_vs_fp32=55.95, vid4_loss=0.0031),
}
"""Measured with SpyNet's convs in bf16 for both (Vid4 BI: fp32 27.2383, bf16 27.2294 on an
AMD EPYC with AVX512-BF16; ``mixed``, with the input convs' feature channels in bf16 and no
fp32 lead blocks, 27.2352 and 55.95 dB on calendar on an AMX Xeon; the same on both CPUs to
the digits shown where both were measured); ``auto`` tries them in this order, fastest first.
So ``auto`` is ``mixed`` on such a CPU: bf16 fails the 55 dB bar."""


def resolve_precision(precision: str, device: str, flags: tuple[str, ...]) -> str:
    """One of :data:`skipvsr.routing.PRECISIONS` for ``precision`` (:data:`PRECISIONS`) on
    ``device``.

    ``auto`` is fp32 except on a CPU with native bf16 (:data:`BF16_FLAGS`), where it is the
    first of :data:`PRECISION_CHECKS` whose measured quality qualifies
    (:attr:`PrecisionCheck.qualifies`), or fp32 if none does.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device != "cpu" or not any(f in flags for f in BF16_FLAGS):
        return "fp32"
    return next((p for p, check in PRECISION_CHECKS.items() if check.qualifies), "fp32")


MIN_LR_SIDE = 8


@dataclass
class UpscaleStats:
    """What one :meth:`Upscaler.upscale` call computed and cost.

    MAC fields exclude SpyNet (reported separately), as in the paper. ``mac_fraction`` is the
    executed MACs over the same input's MACs with every block run, in the same ``mode``.
    ``routing_map`` is ``(T, nH, nW)`` int: residual blocks run per patch and frame, both
    branches together (0..60); ``None`` when nothing was routed. ``branch_blocks``: the
    executed block fraction of each branch (``backward``, ``forward``), whose mean is
    ``executed_block_fraction``. ``precision``, ``threads``, ``cpu_flags`` and
    ``fused_kernels`` (whether :mod:`skipvsr.kernels` ran) say what computed it; ``group`` the
    blocks per group of a ``rotate`` plan (:meth:`skipvsr.routing.Route.group_size`; 1
    otherwise).
    """

    frames: int
    seconds: float
    lr_size: tuple[int, int]
    mode: str
    policy: str
    threshold: float
    budget: float | None
    gmacs_per_frame: float
    full_gmacs_per_frame: float
    spynet_gmacs_per_frame: float
    mac_fraction: float
    executed_block_fraction: float
    thresholds: list[float] = field(default_factory=list)
    branch_blocks: dict[str, float] = field(default_factory=dict)
    routing_map: torch.Tensor | None = None
    precision: str = "fp32"
    threads: int = 1
    cpu_flags: tuple[str, ...] = ()
    fused_kernels: bool = False
    group: int = 1

    def as_dict(self) -> dict:
        """JSON-ready fields (the routing map is left out)."""
        out = asdict(self)
        out.pop("routing_map")
        out["lr_size"] = list(self.lr_size)
        out["cpu_flags"] = list(self.cpu_flags)
        out["seconds_per_frame"] = self.seconds / max(self.frames, 1)
        return out

    @classmethod
    def from_dict(cls, record: dict) -> UpscaleStats:
        """The stats of an :meth:`as_dict` record; a ``routing_map`` added to it as nested
        lists comes back as an int tensor."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        values["lr_size"] = tuple(values["lr_size"])
        values["cpu_flags"] = tuple(values.get("cpu_flags", ()))
        if values.get("routing_map") is not None:
            values["routing_map"] = torch.tensor(values["routing_map"], dtype=torch.int32)
        return cls(**values)

    @classmethod
    def merge(cls, parts: Sequence[UpscaleStats], weights: Sequence[float]) -> UpscaleStats:
        """One record for consecutive calls on one video (its chunks): frames and seconds add
        up, the MAC and block figures are means weighted by ``weights`` (e.g. frames processed
        per call), thresholds are concatenated, and the routing map is dropped."""
        if not parts:
            raise ValueError("parts: expected at least one UpscaleStats")
        total = float(sum(weights))

        def mean(name: str) -> float:
            return sum(getattr(p, name) * n for p, n in zip(parts, weights, strict=True)) / total

        return replace(
            parts[0],
            frames=sum(p.frames for p in parts),
            seconds=sum(p.seconds for p in parts),
            gmacs_per_frame=mean("gmacs_per_frame"),
            full_gmacs_per_frame=mean("full_gmacs_per_frame"),
            spynet_gmacs_per_frame=mean("spynet_gmacs_per_frame"),
            mac_fraction=mean("mac_fraction"),
            executed_block_fraction=mean("executed_block_fraction"),
            thresholds=[x for p in parts for x in p.thresholds],
            branch_blocks={
                b: sum(p.branch_blocks[b] * n for p, n in zip(parts, weights, strict=True)) / total
                for b in parts[0].branch_blocks
            },
            routing_map=None,
        )


@dataclass
class _Pass:
    """One run over a clip in either mode, before the stats step.

    ``sr`` ``(T, 3, 4H, 4W)`` float; ``executed`` per branch ``(T, num_block)`` fraction of
    pixels each block ran on; ``routing_map`` ``(T, nH, nW)`` int blocks run per patch (both
    branches) or ``None``; ``pixels`` LR pixels per frame the network ran on (tubes overlap);
    ``spynet_macs`` for the whole clip.
    """

    sr: torch.Tensor
    executed: dict[str, torch.Tensor]
    routing_map: torch.Tensor | None
    thresholds: list[float]
    pixels: int
    spynet_macs: int


class Upscaler:
    """A loaded model plus the knobs of inference: device and precision (``auto`` resolved by
    :func:`resolve_precision` against this CPU's flags; :attr:`precision` is the result).

    ``full_model``: the network that runs whenever a route runs everything (threshold 0,
    budget 1): a SkipVSR model whose backbone was fine-tuned for skipping declares the
    official network it was distilled from, so its full cost *is* that network, bit for bit.
    ``None``: ``model`` itself runs at full cost.

    ``backward_budgets``: the model's measured branch split
    (:func:`skipvsr.weights.backward_budgets`); learned routes with a budget then split it
    between the branches as a fixed threshold would
    (:attr:`skipvsr.routing.Route.backward_budget`) unless they set their own split.
    ``None``: each branch spends the budget.
    """

    def __init__(
        self,
        model: BasicVSR,
        device: str = "cpu",
        precision: str = "auto",
        full_model: BasicVSR | None = None,
        backward_budgets: tuple[tuple[float, float], ...] | None = None,
    ) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device")
        self.device = torch.device(device)
        self.cpu_flags = cpu_flags()
        self.precision = resolve_precision(precision, self.device.type, self.cpu_flags)
        if full_model is not None and (full_model.num_feat, full_model.num_block) != (
            model.num_feat,
            model.num_block,
        ):
            raise ValueError("full_model must have the shape of model")
        self.model = model.to(self.device).eval().channels_last()
        self.full_model = (
            None if full_model is None else full_model.to(self.device).eval().channels_last()
        )
        self.net = cost.NetworkShape(model.num_feat, model.num_block)
        if backward_budgets is not None:
            routing.check_branch_split(backward_budgets)
        self.backward_budgets = backward_budgets

    def network_for(self, route: Route) -> BasicVSR:
        """The network that runs ``route``: :attr:`full_model` when it runs everything."""
        if self.full_model is not None and route.runs_everything():
            return self.full_model
        return self.model

    @property
    def has_estimators(self) -> bool:
        """Whether the model can route with ``policy='learned'``."""
        return self.model.has_estimators

    def _check_inputs(self, lr: torch.Tensor, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must be (T, 3, H, W), got {tuple(lr.shape)}")
        t, _, h, w = lr.shape
        if t < 1:
            raise ValueError("lr must hold at least one frame")
        if h < MIN_LR_SIDE or w < MIN_LR_SIDE:
            side = f"{MIN_LR_SIDE}x{MIN_LR_SIDE}"
            raise ValueError(f"lr: frames must be at least {side}, got {h}x{w}")

    def check_route(self, route: Route) -> None:
        """Raise ``ValueError`` naming ``route`` if this model cannot run it: the learned policy
        needs confidence estimators as soon as it may skip a block, and a ``group`` must divide
        the trunk's blocks."""
        route.group_size(self.net.num_block)
        if route.policy == "learned" and not route.runs_everything() and not self.has_estimators:
            raise ValueError(
                "route: policy 'learned' needs a model with confidence estimators and this one "
                "has none (use policy uniform|shallow|deep|random with a budget, or a SkipVSR "
                "model)"
            )

    def _route(self, route: Route, mode: str, patch: int) -> Route:
        """``route`` for this model: a ``budget`` is resolved against this network's shape, and
        in patch mode every tube is one routing patch."""
        if route.budget is not None:
            block_budget = cost.block_fraction_for_budget(route.budget, self.net)
            route = replace(route, block_budget=block_budget)
        if (
            self.backward_budgets
            and route.policy == "learned"
            and route.block_budget is not None
            and route.backward_budget is None
        ):
            split = routing.split_backward_budget(self.backward_budgets, route.block_budget)
            route = replace(route, backward_budget=split)
        return replace(route, cell=patch) if mode == "patch" else route

    def _forward(self, lr: torch.Tensor, route: Route, flows=None) -> VSROutput:
        return self.network_for(route)(lr, route, flows, precision=self.precision)

    def _run_full(self, lr: torch.Tensor, route: Route) -> _Pass:
        """Whole frames ``(T, 3, H, W)``, routing on a grid of ``route.cell`` patches."""
        t, _, h, w = lr.shape
        out = self._forward(lr[None], route)
        routing_map = _blocks_run(out.block_map)
        return _Pass(
            sr=out.sr[0],
            executed=out.executed,
            routing_map=None if routing_map is None else routing_map[0],
            thresholds=out.thresholds.get("forward", []),
            pixels=h * w,
            spynet_macs=2 * max(t - 1, 0) * cost.spynet_macs(h, w),
        )

    def _run_tubes(
        self, lr: torch.Tensor, route: Route, layout: TubeLayout, tube_flow: bool, batch: int
    ) -> _Pass:
        """The paper's tube protocol: ``lr`` ``(T, 3, H, W)`` cut by ``layout``, each tube one
        routing patch, ``batch`` tubes per forward; flows per tube or cropped from the frame."""
        t, _, h, w = lr.shape
        tubes = layout.split(lr)
        flows = None
        if not tube_flow and t > 1:
            fb, ff = self.network_for(route).compute_flows(lr[None], self.precision)
            flows = (layout.split(fb[0]), layout.split(ff[0]))
        srs, maps, thresholds = [], [], []
        weighted = dict.fromkeys(BRANCHES, 0)  # branch -> sum of (T, num_block) * tubes
        for s in range(0, len(tubes), batch):
            part = None if flows is None else (flows[0][s : s + batch], flows[1][s : s + batch])
            out = self._forward(tubes[s : s + batch], route, part)
            srs.append(out.sr)
            for b in BRANCHES:
                weighted[b] = weighted[b] + out.executed[b] * out.sr.shape[0]
            blocks = _blocks_run(out.block_map)
            if blocks is not None:
                maps.append(blocks[:, :, 0, 0])  # one routing patch per tube
            thresholds = out.thresholds.get("forward", [])
        routing_map = None
        if maps:
            rows = len(tube_starts(h, layout.patch, layout.stride))
            routing_map = torch.cat(maps).view(rows, -1, t).permute(2, 0, 1)
        if tube_flow:
            spynet = sum(cost.spynet_macs(bh, bw) for _, _, bh, bw in layout.boxes)
        else:
            spynet = cost.spynet_macs(h, w)
        return _Pass(
            sr=layout.merge(srs[0] if len(srs) == 1 else torch.cat(srs)),  # one batch: no copy
            executed={b: e / len(tubes) for b, e in weighted.items()},
            routing_map=routing_map,
            thresholds=thresholds,
            pixels=sum(bh * bw for _, _, bh, bw in layout.boxes),
            spynet_macs=2 * max(t - 1, 0) * spynet,
        )

    def _stats(self, passed: _Pass, route: Route, mode: str, seconds: float) -> UpscaleStats:
        """MACs from the executed block fractions (the same formula in both modes)."""
        t, _, h, w = passed.sr.shape
        block_fraction = float(sum(e.mean() for e in passed.executed.values()) / len(BRANCHES))
        fraction = cost.mac_fraction(block_fraction, self.net)
        full = cost.full_macs_per_pixel(self.net) * passed.pixels
        return UpscaleStats(
            frames=t,
            seconds=seconds,
            lr_size=(h // BasicVSR.scale, w // BasicVSR.scale),
            mode=mode,
            policy=route.policy,
            threshold=route.threshold,
            budget=route.budget,
            gmacs_per_frame=fraction * full / 1e9,
            full_gmacs_per_frame=full / 1e9,
            spynet_gmacs_per_frame=passed.spynet_macs / t / 1e9,
            mac_fraction=fraction,
            executed_block_fraction=block_fraction,
            thresholds=[float(x) for x in passed.thresholds],
            branch_blocks={b: float(e.mean()) for b, e in passed.executed.items()},
            routing_map=passed.routing_map,
            precision=self.precision,
            threads=torch.get_num_threads(),
            cpu_flags=self.cpu_flags,
            fused_kernels=kernels.extension() is not None,
            group=route.group_size(self.net.num_block),
        )

    @torch.inference_mode()
    def upscale(
        self,
        lr: torch.Tensor,
        route: Route | None = None,
        mode: str = "full",
        patch: int = 48,
        stride: int = 46,
        tube_flow: bool = False,
        tube_batch: int = 64,
    ) -> tuple[torch.Tensor, UpscaleStats]:
        """Super-resolve one clip x4.

        Args:
            lr: ``(T, 3, H, W)`` float32 in [0, 1], ``H, W >= 8``.
            route: which residual blocks run (:class:`skipvsr.Route`); ``None`` is the full
                network. A ``budget`` (:meth:`Route.for_budget`) is resolved against this
                model's shape. ``policy='learned'`` with skipping needs estimators.
            mode: ``full`` (whole frames, routing on a ``route.cell`` grid) or ``patch`` (the
                paper's tubes of ``patch`` pixels at ``stride``, each tube routed as a whole).
            tube_flow: patch mode: ``False`` (default) computes SpyNet once per full frame
                and crops the flow per tube; ``True`` runs SpyNet on each tube, the paper's
                protocol (+87 % SpyNet MACs at 180x320 with 48/46 tubes, and a slightly
                different output).
            tube_batch: tubes per forward pass in patch mode (memory).

        Returns:
            ``sr`` ``(T, 3, 4H, 4W)`` float32 clamped to [0, 1], and :class:`UpscaleStats`.
        """
        route = route or Route()
        self._check_inputs(lr, mode)
        self.check_route(route)
        route = self._route(route, mode, patch)
        lr = lr.to(self.device, torch.float32)
        start = time.perf_counter()
        if mode == "full":
            passed = self._run_full(lr, route)
        else:
            layout = TubeLayout(lr.shape[2], lr.shape[3], patch, stride)
            passed = self._run_tubes(lr, route, layout, tube_flow, tube_batch)
        stats = self._stats(passed, route, mode, time.perf_counter() - start)
        return passed.sr.clamp_(0, 1).float().cpu(), stats


def _blocks_run(block_map: dict[str, torch.Tensor | None]) -> torch.Tensor | None:
    """Blocks run per patch, both branches summed by name: ``(B, T, nH, nW)`` int, or ``None``
    without routing."""
    if any(block_map.get(b) is None for b in BRANCHES):
        return None
    return sum(block_map[b].int() for b in BRANCHES)


def load(
    name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str = "cpu", precision: str = "auto"
) -> Upscaler:
    """Load a registered model name or checkpoint path into an :class:`Upscaler` (with the
    registered full-cost network, :func:`skipvsr.weights.full_network`, when there is one)."""
    full = full_network(name_or_path)
    return Upscaler(
        load_model(name_or_path),
        device=device,
        precision=precision,
        full_model=None if full is None else load_model(full),
        backward_budgets=backward_budgets(name_or_path),
    )
