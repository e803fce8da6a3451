"""What a skipped residual block still costs, next to the block it replaces (micro-benchmark).

    python benchmarks/skip_passes.py [--threads 2] [--size 180x320] [--repeats 20]

Times, on one random 64-channel map: a 3x3 conv in bf16 and fp32 (channels-last; a block is
two), a cached update's warp by :class:`skipvsr.flow.WarpPlan` (bf16 and fp32) and by
:func:`skipvsr.flow.flow_warp`, and the fp32 residual add. Prints the CPU flags with the medians
in ms; compare the numbers of one run only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import median_time  # noqa: E402
from skipvsr.api import cpu_flags  # noqa: E402
from skipvsr.flow import WarpPlan, flow_warp  # noqa: E402
from skipvsr.video.heap import tune_allocator  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", default="180x320", help="HxW of the LR map")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    tune_allocator()  # as `skipvsr upscale`: fresh outputs reuse the heap, not new pages
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(64, 64, 3, 3, generator=gen) * 0.05
    flow = torch.randn(1, 2, h, w, generator=gen) * 2
    xb, wb = x.bfloat16(), weight.bfloat16()
    plan = WarpPlan(flow)
    plan.taps()  # built once per frame in the engine, not per map
    rows = {
        "conv3x3 bf16": lambda: F.conv2d(xb, wb, padding=1),
        "conv3x3 fp32": lambda: F.conv2d(x, weight, padding=1),
        "WarpPlan bf16": lambda: plan(xb),
        "WarpPlan fp32": lambda: plan(x),
        "flow_warp fp32": lambda: flow_warp(x, flow),
        "residual add fp32": lambda: x + x,
    }
    print(f"cpu flags {' '.join(cpu_flags())}; {args.threads} threads; 64x{h}x{w}")
    for name, fn in rows.items():
        fn()  # warm-up: first-call allocation and oneDNN primitive creation
        print(f"{name:18s} {median_time(fn, args.repeats) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
