"""``skipvsr weights``: the registered checkpoints and where they were found."""

from __future__ import annotations

import argparse
import json

from skipvsr.weights import presence


def add_parser(sub) -> None:
    p = sub.add_parser("weights", help="list registered checkpoints and where they are")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = presence()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        pub = ", ".join(f"{k} {v[0]:.2f}/{v[1]:.4f}" for k, v in r["published"].items())
        where = r["path"] or "absent"
        print(f"{r['name']:<20} {r['degradation']}  {r['train_set']:<22} {pub}")
        print(f"{'':<20} {where}")
    return 0
