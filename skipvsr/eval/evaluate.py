"""Benchmark evaluation: PSNR/SSIM and measured cost of settings over a dataset.

Protocol (BasicSR / mmagic VSR benchmarks): the SR clip ``(T, 3, 4H, 4W)`` float32 in [0, 1] is
quantised to 8 bits (``round(clamp(sr) * 255)``), compared with the uint8 ground truth without
border crop, on the unrounded BT.601 luma (:func:`skipvsr.metrics.rgb_to_y`) and on RGB. Each
metric is averaged over the frames of a clip, then over the clips (:func:`metrics.aggregate`).

A *setting* is one :class:`skipvsr.Route` and a ``mode`` (:class:`Setting`).
The loop runs clips outside and settings inside, so each clip (and its LR frames) is loaded once
and shared by all settings, and the model is loaded once. Per-frame values of every
(setting, clip) pair are appended to ``frames.jsonl`` in the output folder; with ``resume`` the
pairs already there are not run again.

:func:`evaluate` writes ``frames.jsonl`` and the ``routing_<setting>_<clip>.png`` strips (when
blocks were skipped) into ``out``; :mod:`skipvsr.eval.report` writes the tables and the
PSNR-MAC figure.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from skipvsr import cost, metrics
from skipvsr.api import load
from skipvsr.degradation import bicubic_upscale
from skipvsr.eval.datasets import Clip
from skipvsr.eval.plots import routing_strip
from skipvsr.frames import to_tensor, to_uint8
from skipvsr.routing import Route

DATASETS = ("vid4", "reds4", "udm10", "vimeo90k-t", "folders")
BICUBIC = "bicubic"
METRIC_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
TABLE_SIZE = (180, 320)  # LR size of the paper's GMAC column


@dataclass(frozen=True)
class Setting:
    """One configuration to evaluate: a ``route`` (``None`` is the bicubic baseline) and the
    ``mode`` of :meth:`skipvsr.api.Upscaler.upscale`."""

    route: Route | None = Route()
    mode: str = "full"

    @property
    def label(self) -> str:
        """Readable key: ``bicubic``, ``full``, ``learned t=0.9``, ``uniform b=0.63``, with
        `` identity`` / `` refresh=N`` / `` estimator-stride=N`` where those route fields are
        not their defaults."""
        r = self.route
        if r is None:
            return BICUBIC
        if r.budget is None and r.policy == "learned" and r.threshold == 0:
            return "full"
        knob = f"b={r.budget:g}" if r.budget is not None else f"t={r.threshold:g}"
        extra = (" identity" if r.skip == "identity" else "") + (
            f" refresh={r.refresh}" if r.refresh else ""
        )
        if r.estimator_stride is not None:
            extra += f" estimator-stride={r.estimator_stride}"
        if r.group is not None:
            extra += f" group={r.group}"
        return f"{r.policy} {knob}{extra}"

    @property
    def routes(self) -> bool:
        """Whether blocks may be skipped (anything but the full network or bicubic)."""
        return self.route is not None and not self.route.runs_everything()

    def knobs(self) -> dict:
        """``policy``, ``threshold``, ``budget`` and ``mode``, as the reports list them."""
        r = self.route
        if r is None:
            return {"policy": BICUBIC, "threshold": 0.0, "budget": None, "mode": self.mode}
        return {
            "policy": r.policy,
            "threshold": r.threshold,
            "budget": r.budget,
            "mode": self.mode,
            "skip": r.skip,
            "refresh": r.refresh,
            "group": r.group_size(cost.NetworkShape().num_block),
        }


def make_settings(
    policies: list[str],
    thresholds: list[float] | None,
    budgets: list[float] | None,
    mode: str = "full",
    cell: int = 32,
    seed: int = 0,
    skip: str = "reuse",
    refresh: int = 0,
    estimator_stride: int | None = None,
    group: int | None = None,
) -> list[Setting]:
    """The sweep: ``learned`` takes every threshold (default ``[0]``) and every budget; frozen
    policies take every budget (and need at least one). A budget of 1 is the ``full`` setting.
    ``cell``, ``seed``, ``skip``, ``refresh``, ``estimator_stride`` and, where given, ``group``
    go into every route (a group over 1 is refused for any policy but ``rotate``).
    Duplicates are dropped, order kept."""
    common = {
        "cell": cell,
        "seed": seed,
        "skip": skip,
        "refresh": refresh,
        "estimator_stride": estimator_stride,
        "group": group,
    }
    full = Setting(Route(**{**common, "group": None}), mode)
    out: list[Setting] = []
    for p in policies:
        if p == "learned":
            for t in thresholds or ([] if budgets else [0.0]):
                out.append(Setting(Route(threshold=t, **common), mode))
            for b in budgets or []:
                out.append(Setting(Route.for_budget(b, **common), mode))
        else:
            if not budgets:
                raise ValueError(f"policy {p!r} needs --budgets (MAC fractions)")
            # budget 1 is the full network whatever the policy: run it once, as "full"
            for b in budgets:
                route = Route.for_budget(b, policy=p, **common)
                out.append(Setting(route, mode) if b < 1 else full)
    seen: dict[str, Setting] = {}
    for s in out:
        seen.setdefault(s.label, s)
    return list(seen.values())


def frame_metrics(
    sr: np.ndarray, hr: np.ndarray, sr_float: torch.Tensor | None = None
) -> dict[str, list[float]]:
    """Per-frame PSNR/SSIM on Y and RGB of two ``(T, H, W, 3)`` uint8 clips (no crop).

    With ``sr_float`` (``(T, 3, H, W)`` in [0, 1], before 8-bit rounding) the Y PSNR of the
    unrounded output is added as ``psnr_y_unrounded`` (a diagnostic, not the protocol).
    """
    out: dict[str, list[float]] = {k: [] for k in METRIC_KEYS}
    if sr_float is not None:
        out["psnr_y_unrounded"] = []
    for i, (a, b) in enumerate(zip(sr, hr, strict=True)):
        ya, yb = metrics.rgb_to_y(a), metrics.rgb_to_y(b)
        out["psnr_y"].append(metrics.psnr(ya, yb))
        out["ssim_y"].append(metrics.ssim(ya, yb))
        out["psnr_rgb"].append(metrics.psnr(a, b))
        out["ssim_rgb"].append(metrics.ssim(a, b))
        if sr_float is not None:
            f = sr_float[i].permute(1, 2, 0).double().numpy() * 255.0
            out["psnr_y_unrounded"].append(metrics.psnr(metrics.rgb_to_y(f), yb))
    return out


class Runner:
    """Upscales one clip under one setting: a loaded :class:`skipvsr.api.Upscaler` or bicubic.

    ``model``: a registered name or checkpoint path (loaded once), ``"bicubic"``, or an
    already built ``Upscaler``. ``patch`` and ``stride`` are the tube layout of patch mode.
    """

    def __init__(
        self,
        model,
        device: str = "cpu",
        precision: str = "fp32",
        patch: int = 48,
        stride: int = 46,
    ) -> None:
        self.name = model if isinstance(model, str) else type(model.model).__name__
        self.upscaler = None if isinstance(model, str) else model
        if isinstance(model, str) and model != BICUBIC:
            self.upscaler = load(model, device=device, precision=precision)
        self.patch, self.stride = patch, stride

    def check(self, settings: list[Setting]) -> None:
        """Raise ``ValueError`` for a setting this model cannot run (before any work)."""
        for s in settings:
            if self.upscaler is None and s.route is not None:
                raise ValueError("--model bicubic takes no routing flags")
            if self.upscaler is not None and s.route is not None:
                self.upscaler.check_route(s.route)

    def run(
        self, lr: np.ndarray, s: Setting
    ) -> tuple[np.ndarray, dict, np.ndarray | None, torch.Tensor | None]:
        """``lr`` ``(T, h, w, 3)`` uint8 -> SR ``(T, 4h, 4w, 3)`` uint8, stats, routing map
        ``(T, nH, nW)`` int (blocks run per patch, 0..60) or ``None``, and the unrounded SR
        ``(T, 3, 4h, 4w)`` float32 in [0, 1] (``None`` for bicubic)."""
        if self.upscaler is None:
            start = time.perf_counter()
            sr = np.stack([bicubic_upscale(f) for f in lr])
            seconds = time.perf_counter() - start
            return sr, {"seconds": seconds, "mac_fraction": None, "thresholds": []}, None, None
        sr, st = self.upscaler.upscale(
            to_tensor(lr),
            s.route,
            mode=s.mode,
            patch=self.patch,
            stride=self.stride,
            tube_flow=True,  # patch mode here is the paper's protocol: SpyNet per tube
        )
        stats = {
            "seconds": st.seconds,
            "mac_fraction": st.mac_fraction,
            "thresholds": st.thresholds,
            "branch_blocks": st.branch_blocks,
        }
        rmap = None if st.routing_map is None else st.routing_map.cpu().numpy().astype(np.int16)
        return to_uint8(sr), stats, rmap, sr


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def summarise_clip(rec: dict) -> dict:
    """Per-clip summary from a ``frames.jsonl`` record."""
    out = {k: _mean(rec["frames"][k]) for k in METRIC_KEYS}
    out["mac_fraction"] = rec["mac_fraction"]
    out["frames"] = len(rec["frames"]["psnr_y"])
    out["s_per_frame"] = rec["seconds"] / max(out["frames"], 1)
    return out


def summarise_setting(s: Setting, recs: dict[str, dict]) -> dict:
    """Results object of one setting: ``mean``, ``clips`` and the setting's knobs."""
    clips = {name: summarise_clip(r) for name, r in recs.items()}
    mean = {}
    for k in METRIC_KEYS:
        _, mean[k] = metrics.aggregate({n: r["frames"][k] for n, r in recs.items()})
    fracs = [c["mac_fraction"] for c in clips.values()]
    mean["mac_fraction"] = None if None in fracs else _mean(fracs)
    frames = sum(c["frames"] for c in clips.values())
    seconds = sum(r["seconds"] for r in recs.values())
    # all frames pooled (not the benchmark protocol; for comparison with tools that pool)
    pooled = {k: _mean([v for r in recs.values() for v in r["frames"][k]]) for k in METRIC_KEYS}
    full = cost.gmacs_per_frame(*TABLE_SIZE)["gmacs_per_frame"]
    gmacs = None if mean["mac_fraction"] is None else mean["mac_fraction"] * full
    return {
        **s.knobs(),
        "s_per_frame": seconds / max(frames, 1),
        "frames": frames,
        "gmacs_per_frame_180x320": gmacs,
        "mac_percent": None if gmacs is None else 100.0 * mean["mac_fraction"],
        "mean": mean,
        "clips": clips,
        "pooled": pooled,
    }


NOT_KEYED = ("threads", "device", "data_root")


def _record_key(config: dict, setting: Setting, clip: str) -> str:
    """Cache key of one (setting, clip) run: what changes the output, not how fast it ran. A
    learned route's resolved estimator stride is part of it, so that records made under
    another default stride are not reused."""
    keyed = {k: v for k, v in config.items() if k not in NOT_KEYED}
    keyed.update(setting=setting.label, clip=clip)
    if setting.routes and setting.route.policy == "learned":
        keyed["score_stride"] = setting.route.score_stride
    return json.dumps(keyed, sort_keys=True)


def load_cache(path: Path) -> dict[str, dict]:
    """Records of ``frames.jsonl`` keyed by their configuration (later lines win)."""
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[rec["key"]] = rec
    return out


def evaluate(
    runner: Runner,
    clips,
    settings: list[Setting],
    config: dict,
    max_frames: int | None = None,
    out: Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    routing_frames: int = 4,
) -> dict:
    """Run every setting on every clip and return the results object.

    Args:
        runner: the model (or bicubic).
        clips: iterable of :class:`skipvsr.eval.datasets.Clip` with ground truth (loaded lazily).
        settings: from :func:`make_settings`.
        config: dataset/model/degradation fields, recorded and used as the cache key.
        max_frames: only the first N frames of each clip.
        out: folder for ``frames.jsonl`` and routing-map strips (``None``: nothing written).
        resume: reuse the matching records of ``out/frames.jsonl``.

    Returns:
        ``{"config", "settings": {label: {...}}}`` plus, for a single setting, its ``mean``,
        ``clips`` and knobs at the top level.
    """
    runner.check(settings)
    cache_path = None if out is None else out / "frames.jsonl"
    cache = load_cache(cache_path) if resume and cache_path is not None else {}
    config = {**config, "max_frames": max_frames}
    recs: dict[str, dict[str, dict]] = {s.label: {} for s in settings}
    names = list(getattr(clips, "names", []))
    bar = tqdm(
        total=len(names) * len(settings) or None,
        unit="run",
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    for clip in clips:
        clip = _limit(clip, max_frames)
        if clip.hr is None:
            raise ValueError(f"clip {clip.name!r} has no ground truth frames")
        for s in settings:
            key = _record_key(config, s, clip.name)
            rec = cache.get(key)
            if rec is None:
                bar.set_postfix_str(f"{s.label} / {clip.name}")
                sr, stats, rmap, sr_float = runner.run(clip.lr, s)
                rec = {
                    "key": key,
                    "setting": s.label,
                    "clip": clip.name,
                    **stats,
                    "frames": frame_metrics(sr, clip.hr, sr_float),
                    "routing_map": None if rmap is None else rmap.tolist(),
                }
                if cache_path is not None:
                    with open(cache_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
            recs[s.label][clip.name] = rec
            if out is not None and rec["routing_map"] is not None and s.routes:
                routing_strip(
                    clip.lr,
                    np.asarray(rec["routing_map"]),
                    out / f"routing_{slug(s.label)}_{clip.name}.png",
                    n=routing_frames,
                    title=f"{s.label}, {clip.name}",
                )
            c = summarise_clip(rec)
            bar.update(1)
            if not quiet:
                mac = "" if c["mac_fraction"] is None else f"  MAC {100 * c['mac_fraction']:.1f} %"
                tqdm.write(
                    f"{s.label:<16} {clip.name:<12} {c['frames']:>4} fr  "
                    f"Y {c['psnr_y']:.4f} dB / {c['ssim_y']:.4f}  "
                    f"RGB {c['psnr_rgb']:.4f} / {c['ssim_rgb']:.4f}{mac}  "
                    f"{c['s_per_frame']:.2f} s/fr",
                    file=sys.stderr,
                )
    bar.close()
    if not any(recs.values()):
        raise ValueError("no clips to evaluate")
    result = {
        "config": config,
        "settings": {s.label: summarise_setting(s, recs[s.label]) for s in settings},
    }
    if len(settings) == 1:
        result.update(next(iter(result["settings"].values())))
    return result


def _limit(clip: Clip, max_frames: int | None) -> Clip:
    if max_frames is None:
        return clip
    hr = None if clip.hr is None else clip.hr[:max_frames]
    return Clip(clip.name, hr, clip.lr[:max_frames], clip.frames[:max_frames])


def slug(label: str) -> str:
    """File-name-safe form of a setting label: ``uniform b=0.63`` -> ``uniform_b0.63``."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", label.replace("=", "")).strip("_")
