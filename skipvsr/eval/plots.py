"""Figures of an evaluation: the PSNR–MAC trade-off and routing-map strips (paper Fig. 4, 5),
the trade-off of several runs on one axis (trained model vs frozen policies vs teacher), and
before/after crops.

matplotlib runs headless (Agg); every function writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_BLOCKS = 60  # residual blocks of both branches of BasicVSR


def psnr_mac_plot(result: dict, path: str | Path, channel: str = "y") -> Path:
    """PSNR against GMACs/frame at 180x320 LR, one curve per policy.

    Args:
        result: the object of :func:`skipvsr.eval.evaluate.evaluate` (uses ``settings``).
        channel: ``"y"`` or ``"rgb"``, which PSNR to plot.

    Settings without a MAC count (bicubic) are drawn as a horizontal dashed line.
    """
    path = Path(path)
    curves: dict[str, list[tuple[float, float]]] = {}
    flat: list[tuple[str, float]] = []
    full = None
    for label, r in result["settings"].items():
        val = r["mean"][f"psnr_{channel}"]
        if r["gmacs_per_frame_180x320"] is None:
            flat.append((label, val))
        elif label == "full":
            full = (r["gmacs_per_frame_180x320"], val)
        else:
            curves.setdefault(r["policy"], []).append((r["gmacs_per_frame_180x320"], val))
    if full is not None:  # the full network ends every policy's curve
        for pts in curves.values():
            pts.append(full)
        if not curves:
            curves["full"] = [full]
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    for policy, pts in curves.items():
        pts.sort()
        x, y = zip(*pts, strict=True)
        ax.plot(x, y, marker="o", label=policy)
    for label, val in flat:
        ax.axhline(val, linestyle="--", color="gray", label=label)
    cfg = result.get("config", {})
    title = f"{cfg.get('model', '')} on {cfg.get('dataset', '')} {cfg.get('degradation', '')}"
    xlabel = "GMACs / frame at 180x320 LR (without SpyNet)"
    return _save_trade_off(fig, ax, path, xlabel, channel, title.strip())


def _save_trade_off(fig, ax, path: Path, xlabel: str, channel: str, title: str) -> Path:
    """Label, grid and legend a PSNR-against-cost axis, write the figure to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"PSNR ({channel.upper()}), dB")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@dataclass
class TradeOff:
    """PSNR against MAC fraction for several evaluation runs, ready to draw.

    ``curves``: label -> ``[(mac_fraction, psnr), ...]`` sorted, one per routed model and
    frozen policy; ``teachers``: label -> the full network's point of a model that was never
    routed with its own estimators; ``flat``: label -> PSNR of settings without a MAC count
    (bicubic).
    """

    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    teachers: dict[str, tuple[float, float]] = field(default_factory=dict)
    flat: dict[str, float] = field(default_factory=dict)


def trade_off(results: Sequence[dict], channel: str = "y") -> TradeOff:
    """The points of :func:`psnr_mac_compare` from objects of
    :func:`skipvsr.eval.evaluate.evaluate` (``results.json`` of ``skipvsr eval``).

    Learned settings of a model make one curve (``"<model>, learned"``), each frozen policy
    another (``"<model>, <policy> (frozen)"``) that ends at that model's full network; a
    model's ``full`` setting is its teacher point unless the model also routed itself, where it
    ends the learned curve instead.
    """
    out = TradeOff()
    full: dict[str, tuple[float, float]] = {}
    learned: set[str] = set()
    for result in results:
        model = result["config"]["model"]
        for label, r in result["settings"].items():
            fraction, value = r["mean"]["mac_fraction"], r["mean"][f"psnr_{channel}"]
            if fraction is None:
                out.flat[label] = value
            elif label == "full":
                full[model] = (fraction, value)
            elif r["policy"] == "learned":
                learned.add(model)
                out.curves.setdefault(f"{model}, learned", []).append((fraction, value))
            else:
                out.curves.setdefault(f"{model}, {r['policy']} (frozen)", []).append(
                    (fraction, value)
                )
    for model, point in full.items():
        for label, points in out.curves.items():
            if label.startswith(f"{model}, ") and (model in learned) == label.endswith("learned"):
                points.append(point)
        if model not in learned:
            out.teachers[f"{model}, full (teacher)"] = point
    for points in out.curves.values():
        points.sort()
    return out


def psnr_mac_compare(
    results: Sequence[dict], path: str | Path, channel: str = "y", title: str = ""
) -> Path:
    """PSNR against measured MAC fraction for several evaluation runs on one axis: the trained
    model's curve, the frozen policies' curves and the teacher's full-cost point
    (:func:`trade_off`), e.g. the ``results.json`` of the Vid4 runs in the README.

    Args:
        results: objects of :func:`skipvsr.eval.evaluate.evaluate`, one per run.
        channel: ``"y"`` or ``"rgb"``, which PSNR to plot.
        title: figure title.
    """
    path = Path(path)
    points = trade_off(results, channel)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for label, pts in points.curves.items():
        x, y = zip(*pts, strict=True)
        frozen = label.endswith("(frozen)")
        ax.plot(x, y, marker="o", linestyle="--" if frozen else "-", lw=1 if frozen else 2,
                label=label)  # fmt: skip
    for label, (x, y) in points.teachers.items():
        ax.plot([x], [y], marker="*", markersize=14, color="black", linestyle="none", label=label)
    for label, value in points.flat.items():
        ax.axhline(value, linestyle=":", color="gray", label=label)
    return _save_trade_off(fig, ax, path, "measured MAC fraction (without SpyNet)", channel, title)


def crops(panels: Sequence[tuple[str, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """Before/after: images side by side in one row, each under its title.

    Args:
        panels: ``(title, image)`` pairs, ``image`` ``(H, W, 3)`` uint8, all of one size.
        title: figure title.
    """
    path = Path(path)
    h, w = panels[0][1].shape[:2]
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.6 * h / w + 0.5), dpi=110, squeeze=False)
    for ax, (name, image) in zip(axes[0], panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def pick_frames(t: int, n: int) -> list[int]:
    """``n`` evenly spaced frame indices of ``t`` (all of them when ``t <= n``)."""
    if t <= n:
        return list(range(t))
    return sorted({int(round(i)) for i in np.linspace(0, t - 1, n)})


def routing_strip(
    frames: np.ndarray,
    routing_map: np.ndarray,
    path: str | Path,
    n: int = 4,
    title: str = "",
    max_blocks: int = MAX_BLOCKS,
) -> Path:
    """A strip of ``n`` frames with the blocks run per patch overlaid (like the paper's Fig. 5).

    Args:
        frames: ``(T, H, W, 3)`` uint8 (LR or SR; the map is stretched over the frame).
        routing_map: ``(T, nH, nW)`` int, residual blocks run per patch (0..``max_blocks``).
        title: figure title.
    """
    path = Path(path)
    routing_map = np.asarray(routing_map)
    idx = pick_frames(min(len(frames), len(routing_map)), n)
    h, w = frames.shape[1:3]
    fig, axes = plt.subplots(
        1, len(idx), figsize=(3.2 * len(idx), 3.2 * h / w + 0.6), dpi=110, squeeze=False
    )
    image = None
    for ax, i in zip(axes[0], idx, strict=True):
        m = routing_map[i]
        ax.imshow(frames[i], extent=(0, w, h, 0))
        image = ax.imshow(
            m,
            extent=(0, w, h, 0),
            cmap="viridis",
            vmin=0,
            vmax=max_blocks,
            alpha=0.5,
            interpolation="nearest",
        )
        nh, nw = m.shape
        if nh * nw <= 120:  # numbers stay readable
            for r in range(nh):
                for c in range(nw):
                    ax.text(
                        (c + 0.5) * w / nw,
                        (r + 0.5) * h / nh,
                        str(int(m[r, c])),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white",
                    )
        ax.set_title(f"frame {i}, {100 * m.mean() / max_blocks:.0f} % blocks", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="blocks run")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def read_training_log(
    path: str | Path, budget: float = 0.63, pause_factor: float = 3.0
) -> dict[str, list[float]]:
    """The validation curve at ``budget`` from a run's ``train.log``.

    Returns ``step``, ``psnr`` (dB, RGB on the held-out crops), ``mac`` (measured fraction) and
    ``hours`` (hours of training steps up to that step: the sum of the logged ``s/it``;
    multiply by the run's ``threads`` for thread-hours). A step logged at more than
    ``pause_factor`` times the run's median step spanned a pause (training is stopped with
    SIGSTOP while benchmarks and evaluations run, and the log's ``s/it`` is wall time), so it
    counts as a median step.
    """
    key = f"{budget:g}"
    events: list[float | list[str]] = []  # a step's seconds, or a validation line's words
    for line in Path(path).read_text().splitlines():
        words = line.split()
        if words[:1] == ["step"] and "s/it" in words:
            events.append(float(words[words.index("s/it") + 1]))
        elif words[:2] == ["val", "step"] and f"psnr@{key}" in words:
            events.append(words)
    times = [e for e in events if isinstance(e, float)]
    typical = float(np.median(times)) if times else 0.0
    steps, psnrs, macs, hours = [], [], [], []
    seconds = 0.0
    for event in events:
        if isinstance(event, float):
            seconds += typical if event > pause_factor * typical else event
        else:
            words = event
            steps.append(int(words[2]))
            psnrs.append(float(words[words.index(f"psnr@{key}") + 1]))
            macs.append(float(words[words.index(f"mac@{key}") + 1]))
            hours.append(seconds / 3600.0)
    return {"step": steps, "psnr": psnrs, "mac": macs, "hours": hours}


def chain_curves(curves: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """One curve from :func:`read_training_log` curves of runs that each start from the one
    before (``init:`` its exported model): a run's steps and hours are offset by where the
    previous run ended (its last logged step and its hours of steps)."""
    out: dict[str, list[float]] = {"step": [], "psnr": [], "mac": [], "hours": []}
    step0, hours0 = 0, 0.0
    for curve in curves:
        out["step"] += [step0 + s for s in curve["step"]]
        out["hours"] += [hours0 + h for h in curve["hours"]]
        out["psnr"] += curve["psnr"]
        out["mac"] += curve["mac"]
        if curve["step"]:
            step0 += curve["step"][-1]
            hours0 += curve["hours"][-1]
    return out


def training_curve_plot(
    runs: dict[str, dict[str, list[float]]],
    path: str | Path,
    budget: float = 0.63,
    references: dict[str, float] | None = None,
) -> Path:
    """Validation PSNR at ``budget`` against steps (left) and training hours (right).

    ``runs`` maps a label to :func:`read_training_log` output; ``references`` maps a label to
    a PSNR drawn as a horizontal line (e.g. the teacher, or the shipped model).
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for label, curve in runs.items():
        axes[0].plot(curve["step"], curve["psnr"], marker="o", ms=3, label=label)
        axes[1].plot(curve["hours"], curve["psnr"], marker="o", ms=3, label=label)
    for label, value in (references or {}).items():
        for ax in axes:
            ax.axhline(value, ls="--", lw=1, color="gray")
        axes[1].annotate(label, (0, value), textcoords="offset points", xytext=(2, 3), fontsize=8)
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("training hours (1 CPU thread)")
    axes[0].set_ylabel(f"val PSNR (dB) at {budget:g} MACs")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
