"""``skipvsr macs``: analytic MACs per frame at an LR size, optionally at a budget."""

from __future__ import annotations

import argparse
import json

from skipvsr import cost
from skipvsr.cli.args import budget


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW like 180x320, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def add_parser(sub) -> None:
    p = sub.add_parser("macs", help="analytic MACs per frame")
    p.add_argument("--size", type=_size, default=(180, 320), help="LR HxW (180x320)")
    p.add_argument("--budget", type=budget, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    h, w = args.size
    out = cost.gmacs_per_frame(h, w)
    if args.budget is not None:
        out["budget"] = args.budget
        out["executed_block_fraction"] = cost.block_fraction_for_budget(args.budget)
        out["routed_gmacs_per_frame"] = out["gmacs_per_frame"] * args.budget
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{h}x{w} LR: {out['gmacs_per_frame']:.2f} GMAC/frame without SpyNet, "
            f"SpyNet +{out['spynet_gmacs_per_frame']:.2f}, residual blocks "
            f"{100 * out['block_share']:.1f} %"
        )
    return 0
