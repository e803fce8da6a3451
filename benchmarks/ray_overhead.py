"""Wall time of ``skipvsr upscale --ray`` against one process on the same CPUs.

Makes a synthetic clip (a texture panning one pixel a frame, with AAC audio), then times, as
whole commands, the plain run (torch on ``--threads`` threads) and the Ray run, both against a
Ray cluster started beforehand with ``ray start --head --num-cpus N`` (``--ray auto``; Ray's
own start-up is timed apart) and with a local Ray started by the command (``--ray``). Runs
alternate, ``--repeat`` times each; the medians are printed, and the decoded frames of the
outputs are compared (the plain run on more than one thread may differ in the last bits).

    python benchmarks/ray_overhead.py --size 96x64 --frames 64 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np


def make_clip(path: Path, frames: int, w: int, h: int) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h // 4 + 1, (w + frames) // 4 + 1, 3)).astype(np.uint8)
    big = np.kron(base, np.ones((4, 4, 1), np.uint8))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=24, options={"crf": "18"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=44100, layout="stereo")
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[:h, i : i + w]), "rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        t = np.arange(int(44100 * frames / 24)) / 44100
        tone = np.sin(2 * np.pi * 440 * t).astype(np.float32) * 0.2
        for k in range(0, len(tone) - 1024, 1024):
            a = av.AudioFrame.from_ndarray(np.stack([tone[k : k + 1024]] * 2), "fltp", "stereo")
            a.sample_rate, a.pts = 44100, k
            out.mux(aus.encode(a))
        out.mux(vs.encode())
        out.mux(aus.encode())
    return path


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def frames_of(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").tobytes() for f in c.decode(video=0)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="96x64", help="LR WxH")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the plain run, "
                   "and Ray CPUs")  # fmt: skip
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--model", default="skipvsr-vimeo-bi")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="ray_overhead_"))
    clip = make_clip(work / "in.mp4", args.frames, w, h)
    n = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    base = [sys.executable, "-m", "skipvsr", "upscale", str(clip), "--model", args.model,
            "--quiet", "--overwrite"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(["ray", "start", "--head", "--num-cpus", n, "--include-dashboard=false"],
                   check=True, env=env, capture_output=True)  # fmt: skip
    startup = time.perf_counter() - t0
    times: dict[str, list[float]] = {"plain": [], "ray auto": [], "ray local": []}
    try:
        for _ in range(args.repeat):
            times["plain"].append(timed([*base, "-o", str(work / "plain.mp4")], env))
            times["ray auto"].append(
                timed([*base, "-o", str(work / "ray.mp4"), "--ray", "auto"], env)
            )
    finally:
        subprocess.run(["ray", "stop", "--force"], check=True, capture_output=True)
    for _ in range(args.repeat):
        times["ray local"].append(timed([*base, "-o", str(work / "local.mp4"), "--ray"], env))
    plain = statistics.median(times["plain"])
    print(f"{args.frames} frames of {w}x{h} LR, {args.model}, {n} CPUs; ray start {startup:.1f} s")
    for name, values in times.items():
        med = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:10s} median {med:7.1f} s ({runs}), {100 * (med / plain - 1):+.1f} % vs plain")
    same = frames_of(work / "plain.mp4") == frames_of(work / "ray.mp4")
    print(f"decoded frames identical to the plain run: {same}")


if __name__ == "__main__":
    main()
