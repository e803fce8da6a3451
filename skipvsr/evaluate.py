"""Benchmark evaluation: PSNR/SSIM and measured cost of settings over a dataset (``skipvsr eval``).

Protocol (BasicSR / mmagic VSR benchmarks): the SR clip ``(T, 3, 4H, 4W)`` float32 in [0, 1] is
quantised to 8 bits (``round(clamp(sr) * 255)``), compared with the uint8 ground truth without
border crop, on the unrounded BT.601 luma (:func:`skipvsr.metrics.rgb_to_y`) and on RGB. Each
metric is averaged over the frames of a clip, then over the clips (:func:`metrics.aggregate`).

A *setting* is one routing configuration (``policy``, ``threshold`` or ``budget``, ``mode``).
The loop runs clips outside and settings inside, so each clip (and its LR frames) is loaded once
and shared by all settings, and the model is loaded once. Per-frame values of every
(setting, clip) pair are appended to ``frames.jsonl`` in the output folder; with ``resume`` the
pairs already there are not run again.

Outputs in ``out``: ``results.json`` (:func:`evaluate`'s object), ``results.csv`` (one row per
setting and clip), ``results.md`` (a table shaped like the paper's Table 2), ``psnr_mac.png``
(one curve per policy) and ``routing_<setting>_<clip>.png`` strips when blocks were skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skipvsr import cost, metrics
from skipvsr.data import Clip, FolderPairs, open_dataset
from skipvsr.degradation import DEGRADATIONS, bicubic_upscale

DATASETS = ("vid4", "reds4", "udm10", "vimeo90k-t", "folders")
BICUBIC = "bicubic"
METRIC_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
TABLE_SIZE = (180, 320)  # LR size of the paper's GMAC column
# The paper reports REDS4 on RGB and every other set on Y.
RGB_DATASETS = ("reds4",)


@dataclass(frozen=True)
class Setting:
    """One routing configuration to evaluate. ``budget`` is a MAC fraction without SpyNet."""

    policy: str = "learned"
    threshold: float = 0.0
    budget: float | None = None
    mode: str = "full"

    @property
    def label(self) -> str:
        """Readable key: ``bicubic``, ``full``, ``learned t=0.9`` or ``uniform b=0.63``."""
        if self.policy == BICUBIC:
            return BICUBIC
        if self.budget is not None:
            return f"{self.policy} b={self.budget:g}"
        if self.policy == "learned" and self.threshold == 0:
            return "full"
        return f"{self.policy} t={self.threshold:g}"

    @property
    def routes(self) -> bool:
        """Whether blocks may be skipped (anything but the full network or bicubic)."""
        return self.policy != BICUBIC and (
            self.budget is not None and self.budget < 1 or self.threshold > 0
        )


def make_settings(
    policies: list[str],
    thresholds: list[float] | None,
    budgets: list[float] | None,
    mode: str = "full",
) -> list[Setting]:
    """The sweep: ``learned`` takes every threshold (default ``[0]``) and every budget; frozen
    policies take every budget (and need at least one). A budget of 1 is the ``full`` setting.
    Duplicates are dropped, order kept."""
    out: list[Setting] = []
    for p in policies:
        if p == "learned":
            for t in thresholds or ([] if budgets else [0.0]):
                out.append(Setting("learned", t, None, mode))
            for b in budgets or []:
                out.append(Setting("learned", 0.0, b, mode))
        else:
            if not budgets:
                raise ValueError(f"policy {p!r} needs --budgets (MAC fractions)")
            # budget 1 is the full network whatever the policy: run it once, as "full"
            out.extend(Setting(p, 0.0, b, mode) if b < 1 else Setting(mode=mode) for b in budgets)
    seen: dict[str, Setting] = {}
    for s in out:
        seen.setdefault(s.label, s)
    return list(seen.values())


def to_uint8(sr: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` float in [0, 1] -> ``(T, H, W, 3)`` uint8, ``round(clamp(x) * 255)``."""
    x = (sr.clamp(0, 1) * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


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
    already built ``Upscaler``.
    """

    def __init__(
        self,
        model,
        device: str = "cpu",
        precision: str = "fp32",
        patch: int = 48,
        stride: int = 46,
        cell: int = 32,
        seed: int = 0,
    ) -> None:
        self.name = model if isinstance(model, str) else type(model.model).__name__
        self.upscaler = None if isinstance(model, str) else model
        if isinstance(model, str) and model != BICUBIC:
            import skipvsr

            self.upscaler = skipvsr.load(model, device=device, precision=precision)
        self.kw = {"patch": patch, "stride": stride, "cell": cell, "seed": seed}

    @property
    def has_estimators(self) -> bool:
        return self.upscaler is not None and self.upscaler.model.has_estimators

    def check(self, settings: list[Setting]) -> None:
        """Raise ``ValueError`` for settings this model cannot run."""
        for s in settings:
            if self.upscaler is None and s.policy != BICUBIC:
                raise ValueError("--model bicubic takes no routing flags")
            if s.policy == "learned" and s.routes and not self.has_estimators:
                raise ValueError(
                    f"model {self.name!r} has no confidence estimators: use --policy "
                    "uniform|shallow|deep|random with --budgets, or a SkipVSR model"
                )

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
            threshold=s.threshold,
            budget=s.budget,
            policy=s.policy,
            mode=s.mode,
            **self.kw,
        )
        stats = {
            "seconds": st.seconds,
            "mac_fraction": st.mac_fraction,
            "thresholds": st.thresholds,
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
        "policy": s.policy,
        "threshold": s.threshold,
        "budget": s.budget,
        "mode": s.mode,
        "s_per_frame": seconds / max(frames, 1),
        "frames": frames,
        "gmacs_per_frame_180x320": gmacs,
        "mac_percent": None if gmacs is None else 100.0 * mean["mac_fraction"],
        "mean": mean,
        "clips": clips,
        "pooled": pooled,
    }


NOT_KEYED = ("threads", "device", "data_root")


def _record_key(config: dict, label: str, clip: str) -> str:
    """Cache key of one (setting, clip) run: what changes the output, not how fast it ran."""
    keyed = {k: v for k, v in config.items() if k not in NOT_KEYED}
    return json.dumps({**keyed, "setting": label, "clip": clip}, sort_keys=True)


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
        clips: iterable of :class:`skipvsr.data.Clip` with ground truth (loaded lazily).
        settings: from :func:`make_settings`.
        config: dataset/model/degradation fields, recorded and used as the cache key.
        max_frames: only the first N frames of each clip.
        out: folder for ``frames.jsonl`` and routing-map strips (``None``: nothing written).
        resume: reuse the matching records of ``out/frames.jsonl``.

    Returns:
        ``{"config", "settings": {label: {...}}}`` plus, for a single setting, its ``mean``,
        ``clips`` and knobs at the top level.
    """
    from tqdm import tqdm

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
            key = _record_key(config, s.label, clip.name)
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
                from skipvsr.plots import routing_strip

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


def headline(dataset: str) -> str:
    """``"rgb"`` for sets the paper reports on RGB (REDS4), else ``"y"``."""
    return "rgb" if dataset.lower() in RGB_DATASETS else "y"


def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def write_markdown(result: dict, path: Path) -> None:
    """``results.md``: Table-2-like table (setting, GMACs/frame and % at 180x320, s/frame,
    dataset PSNR/SSIM, then per clip), then the same on the other channel."""
    cfg = result["config"]
    first = next(iter(result["settings"].values()))
    clips = list(first["clips"])
    ds = cfg["dataset"]
    main = headline(ds)
    full = cost.gmacs_per_frame(*TABLE_SIZE)["gmacs_per_frame"]
    lines = [
        f"# {cfg['model']} on {ds} {cfg['degradation']}",
        "",
        f"GMACs/frame: measured MAC fraction x {full:.2f} GMACs (full network at "
        f"{TABLE_SIZE[0]}x{TABLE_SIZE[1]} LR, without SpyNet). s/frame: measured on "
        f"{cfg.get('device', 'cpu')} ({cfg.get('threads')} threads), model only. "
        f"Frames: {cfg['max_frames'] or 'all'} per clip. PSNR/SSIM without border crop, "
        "mean over frames per clip, then over clips.",
        "",
    ]
    for chan in (main, "rgb" if main == "y" else "y"):
        name = "Y" if chan == "y" else "RGB"
        head = ["Setting", "GMACs/frame", "%", "s/frame", f"{ds} ({name})"] + clips
        lines += [
            f"## PSNR/SSIM on {name}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for label, r in result["settings"].items():
            row = [
                label,
                _fmt(r["gmacs_per_frame_180x320"], ".1f"),
                _fmt(r["mac_percent"], ".1f"),
                _fmt(r["s_per_frame"], ".2f"),
                f"{r['mean']['psnr_' + chan]:.4f}/{r['mean']['ssim_' + chan]:.4f}",
            ]
            row += [f"{c['psnr_' + chan]:.3f}/{c['ssim_' + chan]:.4f}" for c in r["clips"].values()]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def write_csv(result: dict, path: Path) -> None:
    """``results.csv``: one row per setting and clip, plus a ``mean`` row per setting."""
    cols = [
        "setting",
        "policy",
        "threshold",
        "budget",
        "mode",
        "clip",
        "frames",
        "mac_fraction",
        "s_per_frame",
        *METRIC_KEYS,
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for label, r in result["settings"].items():
            knobs = [label, r["policy"], r["threshold"], r["budget"], r["mode"]]
            for name, c in r["clips"].items():
                w.writerow(
                    knobs
                    + [name, c["frames"], c["mac_fraction"], c["s_per_frame"]]
                    + [c[k] for k in METRIC_KEYS]
                )
            m = r["mean"]
            w.writerow(
                knobs
                + ["mean", r["frames"], m["mac_fraction"], r["s_per_frame"]]
                + [m[k] for k in METRIC_KEYS]
            )


def write_outputs(result: dict, out: Path) -> None:
    """``results.json``, ``results.csv``, ``results.md`` and ``psnr_mac.png`` in ``out``."""
    from skipvsr.plots import psnr_mac_plot

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    write_csv(result, out / "results.csv")
    write_markdown(result, out / "results.md")
    psnr_mac_plot(result, out / "psnr_mac.png", channel=headline(result["config"]["dataset"]))


# ---- command line ----------------------------------------------------------------------------


def _floats(name: str, low: float, high: float, high_open: bool = False):
    """A comma list of numbers, each checked like a single ``--threshold`` or ``--budget``."""
    from skipvsr.cli import _fraction

    one = _fraction(name, low, high, high_open)

    def parse(text: str) -> list[float]:
        return [one(part) for part in text.split(",")]

    return parse


def _policies(text: str) -> list[str]:
    from skipvsr.routing import POLICIES

    out = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in out if p not in POLICIES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"policies must be from {', '.join(POLICIES)}: {text!r}")
    return out


def register(sub) -> None:
    """Add ``skipvsr eval`` to the CLI's subparsers."""
    from skipvsr.cli import _positive_int

    p = sub.add_parser("eval", help="PSNR/SSIM and cost of settings on a benchmark dataset")
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument(
        "--data-root",
        required=True,
        help="dataset folder (folders: HR folder of clip folders, or of frames)",
    )
    p.add_argument("--lr-root", default=None, help="folders: LR frames (default: degrade HR)")
    p.add_argument(
        "--degradation",
        choices=DEGRADATIONS,
        default="BI",
        help="how LR is made from HR when the dataset has no LR frames for it",
    )
    p.add_argument("--model", default=None, help="registered name, checkpoint path or 'bicubic'")
    p.add_argument("--clips", default=None, help="comma list of clip names (default: all)")
    p.add_argument(
        "--thresholds",
        type=_floats("thresholds", 0.0, 1.0, True),
        default=None,
        help="learned policy thresholds, comma list (default 0 = full network)",
    )
    p.add_argument(
        "--budgets",
        type=_floats("budgets", 0.0, 1.0),
        default=None,
        help="MAC fractions without SpyNet, comma list, e.g. 1,0.8,0.63,0.43",
    )
    p.add_argument(
        "--policy",
        type=_policies,
        default=["learned"],
        help="learned|uniform|shallow|deep|random, comma list",
    )
    p.add_argument("--mode", choices=("full", "patch"), default="full")
    p.add_argument("--patch", type=_positive_int("patch", 8), default=48)
    p.add_argument("--stride", type=_positive_int("stride"), default=46)
    p.add_argument("--cell", type=_positive_int("cell", 4), default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads",
        type=_positive_int("threads"),
        default=None,
        help="torch CPU threads (default: torch's)",
    )
    p.add_argument("--max-frames", type=_positive_int("max-frames"), default=None)
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--json", default=None, metavar="-", help="'-': print the results object")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the (setting, clip) records already in OUT/frames.jsonl",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from skipvsr.cli import UsageError, default_model

    if args.out is None and args.json is None:
        raise UsageError("give --out DIR, --json -, or both")
    if args.json not in (None, "-"):
        raise UsageError("--json takes '-' (stdout); results.json is written to --out")
    if args.mode == "patch" and args.stride > args.patch:
        raise UsageError(f"--stride must be <= --patch, got {args.stride} > {args.patch}")
    if args.budgets:
        for b in args.budgets:
            try:
                cost.block_fraction_for_budget(b)
            except ValueError as e:
                raise UsageError(str(e)) from None
    model = args.model or default_model()
    if model == BICUBIC:
        if args.thresholds or args.budgets or args.policy != ["learned"]:
            raise UsageError("--model bicubic takes no --thresholds/--budgets/--policy")
        settings = [Setting(BICUBIC)]
    else:
        try:
            settings = make_settings(args.policy, args.thresholds, args.budgets, args.mode)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = args.clips.split(",") if args.clips else None
    if args.dataset == "folders":
        dataset = FolderPairs(args.data_root, args.lr_root, args.degradation, clips)
    else:
        dataset = open_dataset(args.dataset, args.data_root, args.degradation, clips)
    runner = Runner(
        model, args.device, args.precision, args.patch, args.stride, args.cell, args.seed
    )
    config = {
        "dataset": args.dataset,
        "data_root": str(Path(args.data_root).resolve()),
        "degradation": args.degradation,
        "model": model,
        "mode": args.mode,
        "patch": args.patch,
        "stride": args.stride,
        "cell": args.cell,
        "seed": args.seed,
        "precision": args.precision,
        "device": args.device,
        "threads": torch.get_num_threads(),
    }
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    result = evaluate(
        runner, dataset, settings, config, args.max_frames, out, args.resume, args.quiet
    )
    if out is not None:
        write_outputs(result, out)
    if args.json == "-":
        print(json.dumps(result, indent=2))
    return 0
