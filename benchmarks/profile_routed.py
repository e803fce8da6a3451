"""Where a routed forward pass spends its time, against the same network unrouted.

Times one learned-routing pass and one full pass (flows precomputed, so SpyNet is out of both)
on real frames and splits the routed pass into the router's parts by wrapping them with timers:

    python benchmarks/profile_routed.py --threads 1 --budget 0.63 [--precision mixed]
        [--allocator glibc]

``--allocator`` sets glibc's allocator as ``skipvsr upscale`` does (``upscale``, the heap-reusing
``tune_allocator()``), mmaps every buffer (``mmap``), or leaves glibc's defaults (``glibc``);
the full pass's time shows what page faults cost. Run it alone on the machine: the
numbers are wall times.
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import real_frames  # noqa: E402
from skipvsr import backbone, flow, routing  # noqa: E402
from skipvsr.routing import Route  # noqa: E402
from skipvsr.video.heap import tune_allocator  # noqa: E402
from skipvsr.weights import load_model  # noqa: E402

PARTS = [
    (routing.Router, "decide", "decide (estimator, caches)"),
    (routing.Router, "_score", "  of which the estimator score"),
    (routing.Router, "apply", "apply (block, reuse)"),
    (routing.Router, "reuse_into", "  of which reused boxes warped"),
    (routing, "box_updates", "  of which boxes computed"),
    (routing, "residual_update", "  of which dense blocks"),
    (routing.ConfidenceEstimator, "features", "estimator features (pooled differences)"),
    (flow.WarpPlan, "__call__", "whole-map warps"),
    (flow.WarpPlan, "taps", "warp taps (once per frame)"),
    (routing, "split_boxes", "box lists"),
    (backbone.Trunk, "forward", "trunks"),
    (backbone.BasicVSR, "upsample", "upsampler"),
]


def timed(owner, name: str, label: str, totals: collections.Counter) -> None:
    """Wrap ``owner.name`` so its wall time adds to ``totals[label]``."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget", type=float, default=0.63)
    p.add_argument("--model", default="skipvsr-vimeo-bi")
    p.add_argument("--size", default="180x320")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--cell", type=int, default=32)
    p.add_argument("--precision", choices=routing.PRECISIONS, default="fp32")
    p.add_argument("--allocator", choices=("upscale", "mmap", "glibc"), default="upscale")
    args = p.parse_args()
    if args.allocator != "glibc":
        tune_allocator(fast=args.allocator == "upscale")
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    model = load_model(args.model).eval().channels_last()
    lr = real_frames(args.frames, h, w)[None]
    totals: collections.Counter = collections.Counter()
    for owner, name, label in PARTS:
        timed(owner, name, label, totals)
    route = Route.for_budget(args.budget, policy="learned", cell=args.cell)
    with torch.no_grad():
        flows = model.compute_flows(lr)
        for _ in range(2):  # the first round warms up; the second is reported
            totals.clear()
            start = time.perf_counter()
            out = model(lr, route=route, flows=flows, precision=args.precision)
            routed = time.perf_counter() - start
            parts = dict(totals)
            totals.clear()
            start = time.perf_counter()
            model(lr, flows=flows, precision=args.precision)
            full = time.perf_counter() - start
            full_parts = dict(totals)
    executed = float(torch.stack(list(out.executed.values())).mean())
    print(
        f"threads {args.threads}, {args.precision}, allocator {args.allocator}, "
        f"budget {args.budget}: "
        f"routed {routed:.2f} s, full {full:.2f} s, wall fraction {routed / full:.3f}, "
        f"executed blocks {executed:.3f}"
    )
    print(f"{'part':34s} {'routed s':>9s} {'full s':>8s}")
    for _, _, label in PARTS:
        print(f"{label:34s} {parts.get(label, 0.0):9.3f} {full_parts.get(label, 0.0):8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
