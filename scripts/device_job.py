"""Train and time on a lent GPU machine: pack the inputs here, run the job there.

Here, on the CPU machine (once the training cache exists, ``scripts/prepare_train_data.py``)::

    python scripts/device_job.py pack [--config CFG] [--megabytes 20]

writes the git-ignored folder ``.device/``: the teacher's checkpoint under ``.device/cache/``
(``$SKIPVSR_CACHE`` there) and ``.device/data.npz``, a lossless sample of the training cache
(windows of every training clip, delta-coded along time and zlib-compressed), the validation
crops with their HR, and 8 real 180x320 frames to time. The device tool carries at most 64 MiB
with the working tree (16 MB), so the sample is sized to fit.

There, through the ``device`` tool (``carry: [".device"]``)::

    python scripts/device_job.py run --minutes 7

unpacks the sample, times a 3-step probe, sizes the run so that its cosine schedule ends
inside the minutes left, trains (a watchdog SIGTERMs the loop, which checkpoints, should a
step run long), exports the student as float16 and times the full and the routed network on
the GPU. Everything it reports lands in ``$OUT``: ``candidate.pt``, ``train.log``,
``job.json``. Bring ``candidate.pt`` back and evaluate it on Vid4 here (README, Training).
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = ROOT / "configs" / "skipvsr-vimeo-bi-reuse-ft-gpu.yaml"
PACK = ROOT / ".device"  # git-ignored
WINDOW = 24  # frames per training window: num_frames (16) plus room to start at 9 places


def delta_code(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 -> each frame minus the one before, modulo 256 (the first kept):
    lossless, and near zero where little moves, so zlib packs it several times smaller."""
    return np.diff(frames, axis=0, prepend=np.zeros_like(frames[:1]))


def delta_decode(deltas: np.ndarray) -> np.ndarray:
    """Inverse of :func:`delta_code`: the running sum modulo 256."""
    return np.cumsum(deltas, axis=0, dtype=np.uint8)


def windows(frames: int, count: int, length: int) -> list[int]:
    """Start frames of ``count`` windows of ``length`` spread evenly over ``frames`` frames."""
    if frames <= length:
        return [0]
    count = min(count, frames // length)
    return sorted({round(i * (frames - length) / max(count - 1, 1)) for i in range(count)})


def _xz(array: np.ndarray) -> int:
    return len(lzma.compress(array.tobytes(), preset=6))


def sample_arrays(root: Path, megabytes: float, val_frames: int, val_patch: int) -> dict:
    """Arrays for :func:`pack`: ``val/<clip>/lr`` and ``val/<clip>/hr``, the centre crops that
    :func:`skipvsr.train.loop.validate` reads, and ``train/<clip>.<k>`` windows of ``WINDOW``
    frames (delta-coded), added a window per clip per round, spread over each clip, while
    their compressed size stays under ``megabytes``: low-motion clips pack several times
    smaller than DAVIS's, so they get more windows."""
    from skipvsr.train.data import load_split

    out = {}
    for clip in load_split(root, "val"):
        t, h, w = clip.lr.shape[:3]
        p, n = min(val_patch, h, w), min(val_frames, t)
        y, x = (h - p) // 2, (w - p) // 2
        out[f"val/{clip.name}/lr"] = np.asarray(clip.lr[:n, y : y + p, x : x + p])
        hr = clip.hr[:n, 4 * y : 4 * (y + p), 4 * x : 4 * (x + p)]
        out[f"val/{clip.name}/hr"] = np.asarray(hr)
    budget = megabytes * 1e6 - sum(_xz(a) for a in out.values())
    clips = load_split(root, "train", with_hr=False)
    starts = {c.name: windows(c.lr.shape[0], 64, WINDOW) for c in clips}
    for k in range(max(len(v) for v in starts.values())):
        for clip in clips:
            spread = starts[clip.name]
            if k >= len(spread):
                continue
            # the k-th window in an order that halves the gaps: first, last, middle, ...
            t0 = spread[_spread_order(len(spread))[k]]
            coded = delta_code(np.asarray(clip.lr[t0 : t0 + WINDOW]))
            size = _xz(coded)
            if size <= budget:
                out[f"train/{clip.name}.{t0}"] = coded
                budget -= size
    return out


def _spread_order(n: int) -> list[int]:
    """Indices ``0 .. n-1`` ordered so that every prefix is spread over the range."""
    order, seen = [], set()
    step = n
    while len(order) < n:
        for i in range(0, n, max(step, 1)):
            if i not in seen:
                seen.add(i)
                order.append(i)
        step //= 2
        if step == 0:
            step = 1
    return order


def unpack(packed: Path, root: Path) -> int:
    """Write the sample as a training cache under ``root`` (``train/`` and ``val/`` clips of
    ``lr.npy``, and ``hr.npy`` for validation); returns the number of training frames."""
    frames = 0
    with np.load(io.BytesIO(lzma.decompress(packed.read_bytes()))) as data:
        for key in data.files:
            split, _, name = key.partition("/")
            if split == "train":
                clip = root / "train" / name
                clip.mkdir(parents=True, exist_ok=True)
                lr = delta_decode(data[key])
                np.save(clip / "lr.npy", lr)
                frames += lr.shape[0]
            elif split == "val":
                name, kind = name.rsplit("/", 1)
                clip = root / "val" / name
                clip.mkdir(parents=True, exist_ok=True)
                np.save(clip / f"{kind}.npy", data[key])
    return frames


def pack(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.bench import real_frames
    from skipvsr.train.data import default_cache
    from skipvsr.train.loop import load_config
    from skipvsr.weights import REGISTRY, read_state_dict, resolve

    cfg = load_config(args.config)
    root = Path(cfg.data or default_cache())
    pack_dir = Path(args.pack)
    cache = pack_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    # float16 halves the teacher (25 -> 13 MB of the 64 MiB that travel); as a distillation
    # target it moves by float16 rounding of the weights, far below the student's error
    teacher = None
    if cfg.teacher in REGISTRY:  # else a file the run reads by path, or a random init
        teacher = resolve(cfg.teacher)
        half = {k: v.half() for k, v in read_state_dict(teacher).items()}
        torch.save(half, cache / REGISTRY[cfg.teacher]["file"])
    arrays = sample_arrays(root, args.megabytes, cfg.val_frames, cfg.val_patch)
    bench = real_frames(8, 180, 320)
    arrays["bench"] = (bench * 255).round().byte().permute(0, 2, 3, 1).numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = pack_dir / "data.npz.xz.tmp"
    tmp.write_bytes(lzma.compress(buffer.getvalue(), preset=6))
    os.replace(tmp, pack_dir / "data.npz.xz")
    frames = sum(a.shape[0] for k, a in arrays.items() if k.startswith("train/"))
    clips = len({k.rsplit(".", 1)[0] for k in arrays if k.startswith("train/")})
    size = sum(f.stat().st_size for f in pack_dir.rglob("*") if f.is_file())
    print(
        f"{pack_dir}: {frames} training frames ({clips} clips, windows of {WINDOW}), "
        f"{size / 1e6:.1f} MB in all" + (f" (teacher {teacher.name} in float16)" if teacher else "")
    )
    return 0


def probe_seconds(log: Path) -> float:
    """The fastest step time (s/it) in a run's ``train.log``: the first steps carry warm-up."""
    times = [
        float(line.rsplit("s/it", 1)[1])
        for line in log.read_text().splitlines()
        if line.startswith("step ") and "s/it" in line
    ]
    if not times:
        raise ValueError(f"{log}: no step lines")
    return min(times)


def planned_steps(seconds: float, step_s: float, validations: int, val_s: float) -> int:
    """Steps that fit in ``seconds`` with ``validations`` validations of ``val_s`` each, with
    a tenth kept in reserve (checkpoints, slower steps)."""
    return max(1, int((0.9 * seconds - validations * val_s) / step_s))


def timed_inference(frames: np.ndarray, device: str) -> dict:
    """s/frame of the shipped ``skipvsr-vimeo-bi-ft`` at full cost and at budget 0.63."""
    import torch

    from skipvsr.api import load
    from skipvsr.routing import Route

    lr = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    out = {}
    for precision in ("fp32", "bf16"):
        up = load("skipvsr-vimeo-bi-ft", device=device, precision=precision)
        for name, route in (("full", None), ("0.63", Route.for_budget(0.63))):
            up.upscale(lr, route)  # warm-up
            times = []
            for _ in range(3):
                torch.cuda.synchronize() if device == "cuda" else None
                start = time.perf_counter()
                up.upscale(lr, route)
                torch.cuda.synchronize() if device == "cuda" else None
                times.append(time.perf_counter() - start)
            out[f"{precision} {name} s/frame"] = sorted(times)[1] / lr.shape[0]
    return out


def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    pack_dir = Path(args.pack)
    os.environ["SKIPVSR_CACHE"] = str(pack_dir / "cache")  # the carried teacher
    import torch

    from skipvsr.train.loop import load_config, train

    out = Path(args.out or os.environ.get("OUT") or "out/device")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name()
    report["train_frames"] = unpack(pack_dir / "data.npz.xz", data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    common = [f"data={data}", f"device={device}", *args.set]

    probe = load_config(
        args.config,
        [*common, f"run_dir={work / 'probe'}", "steps=3", "val_every=3", "val_at_start=false"],
    )
    t0 = time.monotonic()
    train(probe)
    step_s = probe_seconds(work / "probe" / "train.log")
    # the probe's wall time minus its steps: start-up, one validation, a checkpoint
    overhead = time.monotonic() - t0 - 3 * step_s
    left = args.minutes * 60 - (time.monotonic() - start) - args.reserve
    validations = 6
    steps = planned_steps(left, step_s, validations, overhead)
    report.update(step_s=step_s, probe_overhead_s=overhead, steps=steps)
    print(f"probe: {step_s:.2f} s/step, {overhead:.1f} s overhead; planning {steps} steps")

    cfg = load_config(
        args.config,
        [
            *common,
            f"run_dir={work / 'run'}",
            f"steps={steps}",
            f"val_every={max(1, steps // validations)}",
        ],
    )
    deadline = threading.Timer(max(left, 1.0), os.kill, (os.getpid(), signal.SIGTERM))
    deadline.daemon = True
    deadline.start()
    t0 = time.monotonic()
    train(cfg)
    deadline.cancel()
    report["train_s"] = time.monotonic() - t0
    shutil.copyfile(work / "run" / "train.log", out / "train.log")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "export_model.py"),
            str(work / "run"),
            str(out / "candidate.pt"),
            "--fp16",
        ],
        check=True,
    )
    with np.load(io.BytesIO(lzma.decompress((pack_dir / "data.npz.xz").read_bytes()))) as packed:
        frames = packed["bench"]
    if not args.no_timing:
        report["inference"] = timed_inference(frames, device)
    report["wall_s"] = time.monotonic() - start
    (out / "job.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack", help="write .device/ here")
    r = sub.add_parser("run", help="train and time on the device")
    for verb in (p, r):
        verb.add_argument("--config", default=str(DEFAULT_CONFIG))
        verb.add_argument("--pack", default=str(PACK), help="the packed folder")
    p.add_argument("--megabytes", type=float, default=34.0, help="limit for the sample")
    r.add_argument("--minutes", type=float, default=7.0, help="wall time for the whole job")
    r.add_argument("--reserve", type=float, default=60.0, help="seconds kept for export/timing")
    r.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    r.add_argument("--out", default=None, help="default: $OUT")
    r.add_argument("--work", default="/tmp/skipvsr-device")
    r.add_argument("--no-timing", action="store_true")
    args = ap.parse_args(argv)
    return pack(args) if args.verb == "pack" else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
