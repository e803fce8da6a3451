"""The Python API: load a model, upscale a clip within a compute budget.

>>> model = skipvsr.load("basicvsr-vimeo-bi")
>>> sr, stats = model.upscale(lr, budget=0.8, policy="shallow")  # lr: (T, 3, H, W) in [0, 1]
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import torch

from skipvsr import cost
from skipvsr.backbone import BasicVSR, VSROutput
from skipvsr.routing import POLICIES, Route
from skipvsr.tiling import TubeLayout, tube_starts
from skipvsr.weights import DEFAULT_MODEL, load_model

MODES = ("full", "patch")
PRECISIONS = ("fp32", "bf16")
MIN_LR_SIDE = 8


@dataclass
class UpscaleStats:
    """What one :meth:`Upscaler.upscale` call computed and cost.

    MAC fields exclude SpyNet (reported separately), as in the paper. ``mac_fraction`` is the
    executed MACs over the same input's MACs with every block run, in the same ``mode``.
    ``routing_map`` is ``(T, nH, nW)`` int: residual blocks run per patch and frame, both
    branches together (0..60); ``None`` when nothing was routed.
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
    routing_map: torch.Tensor | None = None

    def as_dict(self) -> dict:
        """JSON-ready fields (the routing map is left out)."""
        out = asdict(self)
        out.pop("routing_map")
        out["lr_size"] = list(self.lr_size)
        out["seconds_per_frame"] = self.seconds / max(self.frames, 1)
        return out


class Upscaler:
    """A loaded model plus the knobs of inference: device and precision."""

    def __init__(self, model: BasicVSR, device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device")
        self.device = torch.device(device)
        self.precision = precision
        self.model = model.to(self.device).eval().upsampler_channels_last()
        self.net = cost.NetworkShape(model.num_feat, model.num_block)

    def make_route(
        self,
        policy: str = "learned",
        threshold: float = 0.0,
        budget: float | None = None,
        keep: float | None = None,
        cell: int = 32,
        seed: int = 0,
        skip: str = "reuse",
        refresh: int = 0,
    ) -> Route:
        """Resolve user-facing knobs into a :class:`Route` (validating each)."""
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        block_budget = None
        if budget is not None:
            block_budget = cost.block_fraction_for_budget(budget, self.net)
            if threshold:
                raise ValueError("give either threshold or budget, not both")
        elif policy != "learned" and keep is None:
            raise ValueError(f"policy {policy!r} needs budget or keep")
        return Route(
            policy=policy,
            threshold=threshold,
            keep=keep,
            budget=budget,
            block_budget=block_budget,
            cell=cell,
            seed=seed,
            skip=skip,
            refresh=refresh,
        )

    def _forward(self, lr: torch.Tensor, route: Route, flows=None) -> VSROutput:
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self.model(lr, route, flows)
            out.sr = out.sr.float()
            return out
        return self.model(lr, route, flows)

    @torch.inference_mode()
    def upscale(
        self,
        lr: torch.Tensor,
        threshold: float = 0.0,
        budget: float | None = None,
        policy: str = "learned",
        keep: float | None = None,
        mode: str = "full",
        patch: int = 48,
        stride: int = 46,
        cell: int = 32,
        tube_flow: bool = True,
        tube_batch: int = 64,
        seed: int = 0,
        skip: str = "reuse",
        refresh: int = 0,
    ) -> tuple[torch.Tensor, UpscaleStats]:
        """Super-resolve one clip x4.

        Args:
            lr: ``(T, 3, H, W)`` float32 in [0, 1], ``H, W >= 8``.
            threshold: learned policy: block runs on a patch iff its redundancy score
                ``S <= 1 - threshold``; 0 is the full network.
            budget: target MAC fraction (without SpyNet) instead of a threshold or ``keep``.
            policy: ``learned`` | ``uniform`` | ``shallow`` | ``deep`` | ``random`` |
                ``rotate``.
            keep: frozen policies: fraction of residual blocks kept.
            mode: ``full`` (whole frames, routing on a ``cell`` grid) or ``patch`` (the
                paper's tubes of ``patch`` pixels at ``stride``, each tube routed as a whole).
            tube_flow: patch mode: SpyNet on each tube (the paper's protocol); ``False`` crops
                one full-frame flow per tube (cheaper, slightly different output).
            tube_batch: tubes per forward pass in patch mode (memory).
            skip: what a skipped block gives: ``reuse`` (its last update, warped by the flow)
                or ``identity`` (nothing, the paper's skip).
            refresh: run every ``refresh``-th frame fully (0 = never).

        Returns:
            ``sr`` ``(T, 3, 4H, 4W)`` float32 clamped to [0, 1], and :class:`UpscaleStats`.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must be (T, 3, H, W), got {tuple(lr.shape)}")
        t, _, h, w = lr.shape
        if t < 1:
            raise ValueError("lr must hold at least one frame")
        if h < MIN_LR_SIDE or w < MIN_LR_SIDE:
            raise ValueError(f"frames must be at least {MIN_LR_SIDE}x{MIN_LR_SIDE} LR, got {h}x{w}")
        route = self.make_route(
            policy, threshold, budget, keep, patch if mode == "patch" else cell, seed, skip, refresh
        )
        lr = lr.to(self.device, torch.float32)
        start = time.perf_counter()
        if mode == "full":
            out = self._forward(lr[None], route)
            sr = out.sr[0]
            executed = [out.executed[b] for b in out.executed]
            maps = [m[0] for m in out.block_map.values() if m is not None]
            routing_map = (maps[0].int() + maps[1].int()) if maps else None
            pixels = h * w
            spynet = 2 * max(t - 1, 0) * cost.spynet_macs(h, w)
            thresholds = out.thresholds.get("forward", [])
        else:
            layout = TubeLayout(h, w, patch, stride)
            tubes = layout.split(lr)
            flows = None
            if not tube_flow and t > 1:
                fb, ff = self.model.compute_flows(lr[None])
                flows = (layout.split(fb[0]), layout.split(ff[0]))
            srs, maps, thresholds = [], [], []
            weighted = {}  # branch -> sum over tube batches of (T, num_block) * batch size
            for s in range(0, len(tubes), tube_batch):
                part = (
                    None
                    if flows is None
                    else (flows[0][s : s + tube_batch], flows[1][s : s + tube_batch])
                )
                out = self._forward(tubes[s : s + tube_batch], route, part)
                srs.append(out.sr)
                n = out.sr.shape[0]
                for b, e in out.executed.items():
                    weighted[b] = weighted.get(b, 0) + e * n
                bm = [m for m in out.block_map.values() if m is not None]
                if bm:
                    maps.append((bm[0].int() + bm[1].int())[:, :, 0, 0])
                thresholds = out.thresholds.get("forward", [])
            sr = layout.merge(torch.cat(srs))
            n_tubes = len(tubes)
            executed = [e / n_tubes for e in weighted.values()]
            routing_map = None
            if maps:
                rows = len(tube_starts(h, patch, stride))
                routing_map = torch.cat(maps).view(rows, -1, t).permute(2, 0, 1)
            pixels = sum(bh * bw for _, _, bh, bw in layout.boxes)
            spynet = (
                2
                * max(t - 1, 0)
                * (
                    sum(cost.spynet_macs(bh, bw) for _, _, bh, bw in layout.boxes)
                    if tube_flow
                    else cost.spynet_macs(h, w)
                )
            )
        seconds = time.perf_counter() - start
        block_fraction = float(sum(e.mean() for e in executed) / len(executed))
        full = cost.full_macs_per_pixel(self.net) * pixels
        fixed = cost.fixed_macs_per_pixel(self.net) * pixels
        done = fixed + (full - fixed) * block_fraction
        stats = UpscaleStats(
            frames=t,
            seconds=seconds,
            lr_size=(h, w),
            mode=mode,
            policy=policy,
            threshold=threshold,
            budget=budget,
            gmacs_per_frame=done / 1e9,
            full_gmacs_per_frame=full / 1e9,
            spynet_gmacs_per_frame=spynet / t / 1e9,
            mac_fraction=done / full,
            executed_block_fraction=block_fraction,
            thresholds=[float(x) for x in thresholds],
            routing_map=routing_map,
        )
        return sr.clamp_(0, 1).float().cpu(), stats


def load(
    name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str = "cpu", precision: str = "fp32"
) -> Upscaler:
    """Load a registered model name or checkpoint path into an :class:`Upscaler`."""
    return Upscaler(load_model(name_or_path), device=device, precision=precision)
