"""Reports of an evaluation: ``results.json``, ``results.csv``, ``results.md`` and the PSNR-MAC
figure, written from the object :func:`skipvsr.eval.evaluate.evaluate` returns.

``results.csv`` has one row per setting and clip, ``results.md`` a table shaped like the paper's
Table 2, and ``psnr_mac.png`` one curve per policy.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from skipvsr import cost
from skipvsr.eval.evaluate import METRIC_KEYS, TABLE_SIZE
from skipvsr.eval.plots import psnr_mac_plot

# The paper reports REDS4 on RGB and every other set on Y.
RGB_DATASETS = ("reds4",)


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
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    write_csv(result, out / "results.csv")
    write_markdown(result, out / "results.md")
    psnr_mac_plot(result, out / "psnr_mac.png", channel=headline(result["config"]["dataset"]))
