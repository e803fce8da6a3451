"""``skipvsr train``: SkipVSR by distillation from a frozen BasicVSR (:mod:`skipvsr.train.loop`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from skipvsr.train.loop import load_config, train


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train SkipVSR by distillation from a frozen BasicVSR")
    p.add_argument(
        "--config",
        help="YAML file of TrainConfig keys (default: all defaults); the run goes to "
        "runs/<config name> unless it sets run_dir",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "last.pt").exists():
            raise ValueError(f"--resume {run_dir}: no last.pt checkpoint there")
        cfg = load_config(run_dir / "config.yaml", [*args.set, f"run_dir={run_dir}"])
        train(cfg, resume=True)
        return 0
    cfg = load_config(args.config, args.set)
    if (Path(cfg.run_dir) / "last.pt").exists():
        raise ValueError(f"{cfg.run_dir} already holds a run: use --resume {cfg.run_dir}")
    train(cfg)
    return 0
