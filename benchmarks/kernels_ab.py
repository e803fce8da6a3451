"""The fused CPU kernels (:mod:`skipvsr.kernels`) against the torch ops they replace, on the whole
network, from alternating runs in one process (an A/B: this VM's timings drift between runs).

    python benchmarks/kernels_ab.py [--model skipvsr-vimeo-bi] [--budgets 0.8,0.63]
        [--cells 32,frame] [--policy learned|rotate]
        [--without all|cells|warps|estimator|runs] [--frames 5] [--rounds 5] [--threads 2]

``--without`` picks what the B side runs without: ``all``, every kernel (``kernels.extension``
returning ``None``, as with ``SKIPVSR_KERNELS=0``); ``cells``, the routed cell batches only
(routed blocks compute box by box); ``warps``, the warp kernels (``embedding_bag`` warps every
map, a skipped block warps and then adds, the estimator reads its inputs through torch ops);
``estimator``, only the estimator's inputs in one pass (``kernels.score_inputs``,
``kernels.refresh_cells_``); ``runs``, a run of blocks skipped everywhere in one pass over the
stream (each block of the run then warps and adds on its own). Each round runs the full network
and each (budget, cell) once with the kernels and once without, in turn (which side goes first
alternates), on real frames with the flows computed once beforehand, in ``mixed``. Printed: the
median over the rounds of each pair's time ratio (with / without) and, with ``--check``, the
largest output difference between the two sides. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import cpu_info, real_frames  # noqa: E402
from skipvsr import kernels, routing  # noqa: E402
from skipvsr.cli.args import cell_size  # noqa: E402
from skipvsr.flow import WarpPlan  # noqa: E402
from skipvsr.routing import FRAME_CELL, Route  # noqa: E402
from skipvsr.video.heap import tune_allocator  # noqa: E402
from skipvsr.weights import load_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="skipvsr-vimeo-bi")
    p.add_argument("--budgets", default="0.8,0.63")
    p.add_argument("--cells", default="32", help="comma list of sizes in LR pixels or 'frame'")
    p.add_argument(
        "--without", choices=("all", "cells", "warps", "estimator", "runs"), default="all"
    )
    p.add_argument("--policy", choices=("learned", "rotate"), default="learned")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--size", default="180x320")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--check", action="store_true", help="also compare the two sides' outputs")
    args = p.parse_args()
    if kernels.extension() is None:
        print("the fused kernels are not built here: nothing to compare")
        return 1
    tune_allocator(fast=True)
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    model = load_model(args.model).eval().channels_last()
    lr = real_frames(args.frames, h, w)[None]
    routes: dict[str, Route | None] = {"full": None}
    for b in (float(v) for v in args.budgets.split(",")):
        for c in (cell_size(v) for v in args.cells.split(",")):
            name = f"{args.policy} {b:.2f} cell {'frame' if c == FRAME_CELL else c}"
            routes[name] = Route.for_budget(b, cell=c, policy=args.policy)
    built, batches, warps = kernels.extension, kernels.batches_cells, kernels.warps
    in_one_pass, refreshes, warp_add = (
        routing.Router._scores_in_one_pass,
        kernels.refreshes,
        WarpPlan.warp_add_,
    )

    def block_by_block(plan, xs, h, cast_into=None):
        return [
            warp_add(plan, [x], h, cast_into if i == len(xs) - 1 else None)[0]
            for i, x in enumerate(xs)
        ]

    def side(on: bool) -> None:
        if args.without == "all":
            kernels.extension = built if on else (lambda: None)
        elif args.without == "cells":
            kernels.batches_cells = batches if on else (lambda h, out: False)
        elif args.without == "warps":
            kernels.warps = warps if on else (lambda x: False)
        elif args.without == "estimator":
            routing.Router._scores_in_one_pass = in_one_pass if on else (lambda *a: False)
            kernels.refreshes = refreshes if on else (lambda *a: False)
        else:
            WarpPlan.warp_add_ = warp_add if on else block_by_block

    ratios: dict[str, list[float]] = {k: [] for k in routes}
    print({k: v for k, v in cpu_info().items() if k != "cpu_has"})
    with torch.no_grad():
        flows = model.compute_flows(lr)
        for name, route in routes.items():
            outs = {}
            for on in (True, False):  # warm-up, and the outputs to compare
                side(on)
                outs[on] = model(lr, route=route, flows=flows, precision="mixed").sr
            if args.check:
                diff = float((outs[True] - outs[False]).abs().max())
                print(f"{name}: largest output difference {diff:.3g}")
        for i in range(args.rounds):
            for name, route in routes.items():
                t = {}
                for on in (True, False) if i % 2 == 0 else (False, True):
                    side(on)
                    start = time.perf_counter()
                    model(lr, route=route, flows=flows, precision="mixed")
                    t[on] = time.perf_counter() - start
                ratios[name].append(t[True] / t[False])
    side(True)
    for name, rs in ratios.items():
        print(f"{name}: with / without {args.without} {statistics.median(rs):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
