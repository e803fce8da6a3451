"""Peak memory of streaming must not grow with video length.

Generates synthetic H.264 clips of N frames (default 100 and 1000, 64x48 LR), then runs
:func:`skipvsr.video.streaming.upscale_media` (decode, chunking, x4 encode) with a cheap bilinear
stand-in model in a fresh subprocess per clip and reports its peak RSS (``VmHWM``).

    python benchmarks/stream_memory.py --frames 100 1000 [--size 320x180] [--mmap]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

# VmHWM, not getrusage's ru_maxrss: ru_maxrss survives execve, so a child forked from a large
# parent (the benchmark) would report the parent's peak.
CHILD = """
import sys
from skipvsr.video.heap import tune_allocator
from skipvsr.video.streaming import bilinear_upscale, upscale_media
tune_allocator(fast=sys.argv[3] == "0")  # as `skipvsr upscale` does, or every buffer mmapped
s = upscale_media(sys.argv[1], sys.argv[2], bilinear_upscale, progress=False)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(s.frames, hwm)
"""


def make_clip(path: Path, n: int, w: int = 64, h: int = 48) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)


def measure(counts: list[int], w: int = 64, h: int = 48, mmap: bool = False) -> dict[int, float]:
    """Peak RSS in MiB of one fresh streamed job per frame count in ``counts`` at ``w x h`` LR
    (the allocator set as by ``skipvsr upscale``, or ``tune_allocator(fast=False)``)."""
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            clip = Path(tmp) / f"in{n}.mp4"
            make_clip(clip, n, w, h)
            res = subprocess.run(
                [sys.executable, "-c", CHILD, str(clip), str(Path(tmp) / f"out{n}.mp4"),
                 str(int(mmap))],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            frames, kib = res.stdout.split()[-2:]
            peaks[n] = int(kib) / 1024
            print(f"{frames} frames: peak RSS {peaks[n]:.1f} MiB")
    return peaks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--size", default="64x48", help="LR width x height")
    p.add_argument("--mmap", action="store_true", help="tune_allocator(fast=False)")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    peaks = measure(args.frames, w, h, args.mmap)
    if len(peaks) > 1:
        lo, hi = min(peaks), max(peaks)
        print(f"ratio {hi} vs {lo} frames: {peaks[hi] / peaks[lo]:.3f}")


if __name__ == "__main__":
    main()
