"""Wall time of routing against the same model unrouted, for several routing cells and budgets
(and, with ``--policy rotate``, group sizes), from alternating runs in one process (an A/B: this
VM's timings drift between runs).

    python benchmarks/routing_ab.py --model skipvsr-vimeo-bi-ft --budgets 0.63,0.7,0.75
        --cells 32,frame [--threads 2] [--frames 8] [--repeats 3] [--json out/ab.json]
    python benchmarks/routing_ab.py --model basicvsr-vimeo-bi --policy rotate --groups 1,3
        --budgets 0.8,0.63,0.43 --cells frame

Each round runs the unrouted network and then every (budget, cell, group) once, on real frames
(:func:`benchmarks.bench.real_frames`), SpyNet included, in the model's ``auto`` precision; a
setting's ``wall_fraction`` is the median over the rounds of its time over the same round's
unrouted time (the order of the settings turns by one every round). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import cpu_info, real_frames  # noqa: E402
from skipvsr.api import load  # noqa: E402
from skipvsr.cli.args import cell_size  # noqa: E402
from skipvsr.routing import FRAME_CELL, POLICIES, Route  # noqa: E402
from skipvsr.video.heap import tune_allocator  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="skipvsr-vimeo-bi-ft")
    p.add_argument("--budgets", default="0.63,0.7,0.75")
    p.add_argument(
        "--cells", default="32,frame", help="comma list of sizes in LR pixels or 'frame'"
    )
    p.add_argument("--policy", default="learned", choices=POLICIES)
    p.add_argument(
        "--groups", default="", help="comma list of Route.group (rotate only; default: its own)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", default="180x320")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    cells = [cell_size(c) for c in args.cells.split(",")]
    groups = [int(g) for g in args.groups.split(",")] if args.groups else [None]
    tune_allocator(fast=True)
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    up = load(args.model)
    lr = real_frames(args.frames, h, w)
    settings = [(b, c, g) for b in budgets for c in cells for g in groups]
    routes = {
        (b, c, g): Route.for_budget(b, cell=c, policy=args.policy, group=g) for b, c, g in settings
    }
    times: dict[tuple[float, int, int | None], list[float]] = {s: [] for s in settings}
    full: list[float] = []

    def timed(route: Route | None) -> float:
        start = time.perf_counter()
        up.upscale(lr, route)
        return time.perf_counter() - start

    ratios: dict[tuple[float, int, int | None], list[float]] = {s: [] for s in settings}
    with torch.no_grad():
        timed(routes[settings[0]])  # warm-up
        timed(None)
        for i in range(args.repeats):
            full.append(timed(None))
            k = i % len(settings)
            for s in settings[k:] + settings[:k]:
                times[s].append(timed(routes[s]))
                ratios[s].append(times[s][-1] / full[-1])
    unrouted = statistics.median(full)
    rows = []
    for (b, c, g), rs in ratios.items():
        cell = "frame" if c == FRAME_CELL else c
        size = routes[b, c, g].group_size(up.model.num_block)
        rows.append(
            {"budget": b, "cell": cell, "group": size, "wall_fraction": statistics.median(rs)}
        )
        print(
            f"budget {b:.2f} cell {cell!s:>5} group {size}: wall fraction "
            f"{rows[-1]['wall_fraction']:.3f}"
        )
    result = {
        **cpu_info(),
        "model": args.model,
        "policy": args.policy,
        "precision": up.precision,
        "threads": args.threads,
        "frames": args.frames,
        "size": [h, w],
        "unrouted_s_per_frame": unrouted / args.frames,
        "rows": rows,
    }
    print(f"unrouted {unrouted / args.frames:.2f} s/frame, precision {up.precision}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
