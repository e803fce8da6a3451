"""Draw the training curve of a run (validation PSNR at a budget vs steps and training hours).

Usage::

    python scripts/plot_training.py RUN_DIR/train.log [LABEL=LOG ...] -o docs/training_curve.png
        [--budget 0.63] [--ref NAME=PSNR ...]

Each log is a run's ``train.log`` (``skipvsr train`` writes it), or several joined by commas
(``LABEL=A/train.log,B/train.log``) for runs that each continue the one before: they are
drawn as one curve (:func:`skipvsr.eval.plots.chain_curves`). ``--ref`` draws horizontal
reference lines, e.g. the teacher's PSNR on the same validation crops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skipvsr.eval.plots import (  # noqa: E402
    chain_curves,
    read_training_log,
    training_curve_plot,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", help="train.log paths, optionally LABEL=PATH")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--budget", type=float, default=0.63)
    ap.add_argument("--ref", action="append", default=[], metavar="NAME=PSNR")
    args = ap.parse_args(argv)
    runs = {}
    for item in args.logs:
        label, _, path = item.rpartition("=")
        paths = path.split(",")
        curves = [read_training_log(p, args.budget) for p in paths]
        runs[label or Path(paths[0]).parent.name] = chain_curves(curves)
    refs = {}
    for item in args.ref:
        name, _, value = item.rpartition("=")
        refs[name] = float(value)
    print(training_curve_plot(runs, args.out, args.budget, refs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
