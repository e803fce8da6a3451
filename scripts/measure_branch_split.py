"""Measure how a SkipVSR model's fixed thresholds split block work between its two branches.

A fixed threshold compares both branches' redundancy scores on one scale, so it gives the
branch whose skips cost more the larger share; a budget that makes each branch spend the same
loses ~0.3 dB at the same MACs on Vid4. This runs thresholds on the held-out validation clips
(never Vid4) and prints the ``(block budget, backward block fraction)`` points for the
model's ``backward_budgets`` registry entry (:func:`skipvsr.weights.backward_budgets`):

    python scripts/measure_branch_split.py skipvsr-vimeo-bi [--frames 24] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skipvsr.frames import to_tensor  # noqa: E402
from skipvsr.routing import Route  # noqa: E402
from skipvsr.train.data import default_cache, load_split  # noqa: E402
from skipvsr.weights import load_model  # noqa: E402

THRESHOLDS = (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--data", default=None, help="prepared training data (default: the cache)")
    p.add_argument("--frames", type=int, default=24, help="first frames of each clip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="mixed")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval().channels_last()
    try:
        clips = load_split(args.data or default_cache(), "val", with_hr=False)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lrs = [to_tensor(np.array(c.lr[: args.frames]))[None] for c in clips]
    points = []
    for tau in THRESHOLDS:
        spent = {"backward": [], "forward": []}
        with torch.no_grad():
            for lr in lrs:
                out = model(lr, Route(threshold=tau), precision=args.precision)
                for name, executed in out.executed.items():
                    spent[name].append(float(executed.mean()))
        back, fwd = float(np.mean(spent["backward"])), float(np.mean(spent["forward"]))
        points.append((round((back + fwd) / 2, 4), round(back, 4)))
        print(f"threshold {tau}: backward {back:.4f} forward {fwd:.4f}", file=sys.stderr)
    print(json.dumps(sorted(set(points))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
