"""Figures of an evaluation: the PSNR–MAC trade-off and routing-map strips (paper Fig. 4, 5).

matplotlib runs headless (Agg); every function writes one PNG and returns its path.
"""

from __future__ import annotations

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
    ax.set_xlabel("GMACs / frame at 180x320 LR (without SpyNet)")
    ax.set_ylabel(f"PSNR ({channel.upper()}), dB")
    ax.set_title(
        f"{cfg.get('model', '')} on {cfg.get('dataset', '')} {cfg.get('degradation', '')}".strip()
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
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


def read_training_log(path: str | Path, budget: float = 0.63) -> dict[str, list[float]]:
    """The validation curve at ``budget`` from a run's ``train.log``.

    Returns ``step``, ``psnr`` (dB, RGB on the held-out crops), ``mac`` (measured fraction) and
    ``hours`` (wall hours of training steps up to that step: the sum of the logged ``s/it``;
    multiply by the run's ``threads`` for thread-hours).
    """
    key = f"{budget:g}"
    steps, psnrs, macs, hours = [], [], [], []
    seconds = 0.0
    for line in Path(path).read_text().splitlines():
        words = line.split()
        if words[:1] == ["step"] and "s/it" in words:
            seconds += float(words[words.index("s/it") + 1])
        elif words[:2] == ["val", "step"] and f"psnr@{key}" in words:
            steps.append(int(words[2]))
            psnrs.append(float(words[words.index(f"psnr@{key}") + 1]))
            macs.append(float(words[words.index(f"mac@{key}") + 1]))
            hours.append(seconds / 3600.0)
    return {"step": steps, "psnr": psnrs, "mac": macs, "hours": hours}


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
