"""``skipvsr degrade --bi|--bd[=recipe] HR_DIR -o LR_DIR``: x4 LR frames from HR frames.

``HR_DIR`` holds frames, or clip folders of frames (one level); ``LR_DIR`` gets the same layout
with every frame degraded x4 and written as 8-bit RGB PNG under its own stem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from skipvsr.cli.args import UsageError
from skipvsr.degradation import BD_RECIPES, degrade_bd, degrade_bi
from skipvsr.frames import list_frames, read_rgb8


def add_parser(sub) -> None:
    p = sub.add_parser("degrade", help="make x4 LR frames from HR frames (BI or BD)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--bi", action="store_true", help="MATLAB bicubic imresize(hr, 1/4)")
    g.add_argument(
        "--bd",
        nargs="?",
        const="basicvsr",
        default=None,
        metavar="RECIPE",
        help="Gaussian blur (sigma 1.6) and decimation; recipe basicvsr (default, "
        "BD_degradation.m) or duf, as --bd=duf",
    )
    p.add_argument("input", nargs="?", metavar="HR_DIR", help="folder of frames or clip folders")
    p.add_argument("-o", "--output", required=True, metavar="LR_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Returns 0; ``ValueError`` for unusable input."""
    if args.bd is not None and args.bd not in BD_RECIPES:
        if args.input is not None:  # "--bd X HR_DIR": X is a wrong recipe
            raise UsageError(f"--bd recipe must be one of {', '.join(BD_RECIPES)}, got {args.bd!r}")
        args.input, args.bd = args.bd, "basicvsr"  # "--bd HR_DIR": argparse took HR_DIR
    if args.input is None:
        raise UsageError("HR_DIR is required")
    src, dst = Path(args.input), Path(args.output)
    if not src.is_dir():
        raise ValueError(f"HR folder not found: {src}")
    if src.resolve() == dst.resolve():
        raise ValueError("the output folder must differ from the input folder")
    jobs = (
        [(src, dst)]
        if list_frames(src)
        else [(d, dst / d.name) for d in sorted(src.iterdir()) if d.is_dir() and list_frames(d)]
    )
    if not jobs:
        raise ValueError(f"{src} holds neither frames nor clip folders of frames")
    count = 0
    for hr_dir, lr_dir in jobs:
        lr_dir.mkdir(parents=True, exist_ok=True)
        for path in list_frames(hr_dir):
            hr = read_rgb8(path)
            lr = degrade_bi(hr) if args.bi else degrade_bd(hr, args.bd)
            Image.fromarray(lr).save(lr_dir / f"{path.stem}.png")
            count += 1
        if not args.quiet:
            print(f"{hr_dir} -> {lr_dir}", file=sys.stderr)
    if not args.quiet:
        kind = "BI" if args.bi else f"BD ({args.bd})"
        print(f"{count} frames degraded {kind} x4 into {dst}", file=sys.stderr)
    return 0
