"""``skipvsr eval``: PSNR/SSIM and measured cost of settings on a benchmark dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from skipvsr.api import cpu_flags, resolve_precision
from skipvsr.cli.args import (
    CELL_HELP,
    UsageError,
    add_device_args,
    add_skip_args,
    cell_size,
    default_model,
    floats,
    policies,
    positive_int,
)
from skipvsr.degradation import DEGRADATIONS
from skipvsr.eval.datasets import FolderPairs, open_dataset
from skipvsr.eval.evaluate import BICUBIC, DATASETS, Runner, Setting, evaluate, make_settings
from skipvsr.eval.report import write_outputs
from skipvsr.weights import registered_skip


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM and cost of settings on a benchmark dataset")
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument(
        "--data-root",
        required=True,
        help="dataset folder (folders: HR folder of clip folders, or of frames)",
    )
    p.add_argument("--lr-root", default=None, help="folders: LR frames (default: degrade HR)")
    p.add_argument(
        "--degradation",
        choices=DEGRADATIONS,
        default="BI",
        help="how LR is made from HR when the dataset has no LR frames for it",
    )
    p.add_argument("--model", default=None, help="registered name, checkpoint path or 'bicubic'")
    p.add_argument("--clips", default=None, help="comma list of clip names (default: all)")
    p.add_argument(
        "--thresholds",
        type=floats("thresholds", 0.0, 1.0, True),
        default=None,
        help="learned policy thresholds, comma list (default 0 = full network)",
    )
    p.add_argument(
        "--budgets",
        type=floats("budgets", 0.0, 1.0),
        default=None,
        help="MAC fractions without SpyNet, comma list, e.g. 1,0.8,0.63,0.43",
    )
    p.add_argument(
        "--policy",
        type=policies,
        default=["learned"],
        help="learned|uniform|shallow|deep|random, comma list",
    )
    p.add_argument("--mode", choices=("full", "patch"), default="full")
    p.add_argument("--patch", type=positive_int("patch", 8), default=48)
    p.add_argument("--stride", type=positive_int("stride"), default=46)
    p.add_argument("--cell", type=cell_size, default=32, help=CELL_HELP)
    p.add_argument("--seed", type=int, default=0)
    add_skip_args(p)
    add_device_args(p, precision="fp32")  # evaluation measures the model, not the fast path
    p.add_argument(
        "--threads",
        type=positive_int("threads"),
        default=None,
        help="torch CPU threads (default: torch's)",
    )
    p.add_argument("--max-frames", type=positive_int("max-frames"), default=None)
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--json", default=None, metavar="-", help="'-': print the results object")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the (setting, clip) records already in OUT/frames.jsonl",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace, model: str) -> list[Setting]:
    """The sweep of the flags (``UsageError`` for one that cannot run)."""
    if model == BICUBIC:
        if args.thresholds or args.budgets or args.policy != ["learned"]:
            raise UsageError("--model bicubic takes no --thresholds/--budgets/--policy")
        return [Setting(None)]
    try:
        return make_settings(
            args.policy,
            args.thresholds,
            args.budgets,
            args.mode,
            args.cell,
            args.seed,
            args.skip or registered_skip(model),
            args.refresh,
            args.estimator_stride,
            args.group,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    if args.out is None and args.json is None:
        raise UsageError("give --out DIR, --json -, or both")
    if args.json not in (None, "-"):
        raise UsageError("--json takes '-' (stdout); results.json is written to --out")
    if args.mode == "patch" and args.stride > args.patch:
        raise UsageError(f"--stride must be <= --patch, got {args.stride} > {args.patch}")
    model = args.model or default_model()
    settings = settings_from_args(args, model)
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = args.clips.split(",") if args.clips else None
    if args.dataset == "folders":
        dataset = FolderPairs(args.data_root, args.lr_root, args.degradation, clips)
    else:
        dataset = open_dataset(args.dataset, args.data_root, args.degradation, clips)
    runner = Runner(model, args.device, args.precision, args.patch, args.stride)
    try:
        runner.check(settings)
    except ValueError as e:
        raise UsageError(str(e)) from None
    config = {
        "dataset": args.dataset,
        "data_root": str(Path(args.data_root).resolve()),
        "degradation": args.degradation,
        "model": model,
        "mode": args.mode,
        "patch": args.patch,
        "stride": args.stride,
        "cell": args.cell,
        "seed": args.seed,
        "precision": resolve_precision(args.precision, args.device.split(":")[0], cpu_flags()),
        "device": args.device,
        "threads": torch.get_num_threads(),
    }
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    result = evaluate(
        runner, dataset, settings, config, args.max_frames, out, args.resume, args.quiet
    )
    if out is not None:
        write_outputs(result, out)
    if args.json == "-":
        print(json.dumps(result, indent=2))
    return 0
