"""Upscale a whole video in bounded memory: decode -> chunked model -> encode.

BasicVSR propagates features forwards and backwards through the whole clip, so a long video
is cut into temporal chunks of ``chunk`` output frames, each run together with up to
``overlap`` neighbouring frames on either side. The neighbours warm up both recurrences and
their outputs are thrown away, so every output frame is computed with at least ``overlap``
frames of context on each side (fewer only at the ends of the video).

Three stages run concurrently and talk through small bounded queues:

* a decoder thread reads ``(rgb, pts, time_base)`` frames from :class:`FrameSource`;
* the calling thread groups them into chunks and calls ``upscale_fn`` on each;
* an encoder thread converts and writes the upscaled frames through :class:`FrameSink`.

At most about ``chunk + 2 * overlap`` low-resolution frames, one model output and a few
queued frames are alive at any time, so peak memory does not grow with video length.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from skipvsr.video_io import (
    MIN_SIZE,
    FrameSink,
    FrameSource,
    MediaError,
    check_output,
    sigterm_as_interrupt,
)

# Chosen by benchmarks/chunk_overlap.py (see the numbers printed there): overlap 4 already
# brings chunked output within a small fraction of a dB of whole-sequence processing.
DEFAULT_CHUNK = 32
DEFAULT_OVERLAP = 4

UpscaleFn = Callable[[torch.Tensor], tuple[torch.Tensor, dict]]

_DONE = object()


def limit_heap_growth(mmap_threshold: int = 64 * 1024) -> None:
    """Serve buffers of ``mmap_threshold`` bytes and more (frames) from mmap (glibc only).

    glibc raises its mmap threshold as large buffers are freed, after which frame buffers land
    on the heap and fragment it: a 1000-frame job then peaked 1.22x higher than a 100-frame
    job; with a fixed threshold the ratio is 1.03-1.05 (``benchmarks/stream_memory.py``).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, mmap_threshold)


def _validate_args(chunk: int, overlap: int, crf: int) -> None:
    if not isinstance(chunk, int) or chunk < 1:
        raise MediaError(f"chunk: {chunk!r} (expected an integer >= 1)")
    if not isinstance(overlap, int) or overlap < 0:
        raise MediaError(f"overlap: {overlap!r} (expected an integer >= 0)")
    if not 0 <= crf <= 63:
        raise MediaError(f"crf: {crf!r} (expected 0..51 for libx264, lower is better)")


class _Worker(threading.Thread):
    """A daemon thread whose exception is kept and re-raised by :meth:`check`."""

    def __init__(self, target, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put with a timeout loop so that a stopped pipeline never blocks forever."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event, producer: _Worker | None = None):
    """Get, but give up (returning the end marker) once ``stop`` is set, and re-raise the
    error of ``producer`` if that thread died."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _DONE
            if producer is not None and not producer.is_alive():
                producer.check()
                if q.empty():
                    raise RuntimeError(f"{producer.name} thread stopped unexpectedly") from None


def to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """List of ``(H, W, 3) uint8`` -> ``(T, 3, H, W) float32 in [0, 1]``."""
    arr = np.stack(frames)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(sr: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` float in [0, 1] -> ``(T, H, W, 3) uint8`` (rounded, clamped)."""
    out = sr.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def iter_chunks(frames, chunk: int, overlap: int):
    """Group a frame stream into overlapping windows without reading it all.

    Yields ``(window, keep_from, keep_to)``: ``window`` is a list of items (at most
    ``chunk + 2 * overlap``) and ``window[keep_from:keep_to]`` are the items this chunk
    outputs. Every item is output exactly once, in order.
    """
    it = iter(frames)
    buf: deque = deque()  # buf[0] is stream item number `base`
    base = 0
    start = 0  # first output item of the next chunk
    exhausted = False
    while True:
        want = start + chunk + overlap  # items needed in the stream (exclusive end)
        while not exhausted and base + len(buf) < want:
            try:
                buf.append(next(it))
            except StopIteration:
                exhausted = True
        total = base + len(buf)
        if start >= total:
            return
        lo = max(0, start - overlap)
        hi = min(total, want)
        window = [buf[i - base] for i in range(lo, hi)]
        end = min(start + chunk, total)
        yield window, start - lo, end - lo
        start = end
        while base < start - overlap:
            buf.popleft()
            base += 1


def upscale_media(
    input: str | os.PathLike,
    output: str | os.PathLike,
    upscale_fn: UpscaleFn,
    *,
    chunk: int = DEFAULT_CHUNK,
    overlap: int = DEFAULT_OVERLAP,
    max_frames: int | None = None,
    start: float = 0.0,
    crf: int = 18,
    codec: str = "libx264",
    fps: float | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    progress: bool = True,
    scale: float = 4,
) -> dict:
    """Upscale ``input`` (video file or PNG/JPG folder) x4 into ``output`` (video or folder).

    ``upscale_fn(lr)`` takes ``(T, 3, H, W) float32 in [0, 1]`` and returns ``(sr, stats)``
    with ``sr`` ``(T, 3, 4H, 4W)`` float in [0, 1] (clamped here) and a stats dict (keys such
    as ``mac_fraction`` are averaged over chunks, weighted by frames). ``fps`` is the frame
    rate for folder input (default 25). Raises :class:`MediaError` for bad inputs/outputs;
    on any error or interrupt the output path is left untouched.

    Returns a summary dict: ``frames``, ``seconds``, ``fps``, ``chunks`` (list of per-chunk
    stats), ``processed_frames`` (including overlap), ``mac_fraction`` (frame-weighted mean
    or None), ``messages`` (notes such as audio re-encoding) and ``output``. ``scale`` is the
    factor of ``upscale_fn`` (4; the demo uses a downscaling function with 1/8).
    """
    _validate_args(chunk, overlap, crf)
    check_output(output, overwrite=overwrite)
    limit_heap_growth()
    t0 = time.perf_counter()
    stop = threading.Event()
    with (
        sigterm_as_interrupt(),
        FrameSource(input, start_seconds=start, max_frames=max_frames, fps=fps) as source,
    ):
        if source.width < MIN_SIZE or source.height < MIN_SIZE:
            raise MediaError(
                f"input: frames are {source.width}x{source.height} "
                f"(expected at least {MIN_SIZE}x{MIN_SIZE})"
            )
        depth = chunk + 2 * overlap
        decoded: queue.Queue = queue.Queue(maxsize=depth)
        # One finished chunk waits while the encoder works on another: inference is far slower
        # than encoding, so a deeper queue only raises the memory ceiling (x4 uint8 frames).
        to_encode: queue.Queue = queue.Queue(maxsize=1)

        def decode() -> None:
            for item in source:
                if not _put(decoded, item, stop):
                    return
            _put(decoded, _DONE, stop)

        def frames_from_decoder():
            while True:
                item = _get(decoded, stop, decoder)
                if item is _DONE:
                    return
                yield item

        sink = FrameSink(
            output,
            width=round(scale * source.width),
            height=round(scale * source.height),
            source=source,
            fps=source.fps,
            time_base=source.time_base,
            codec=codec,
            crf=crf,
            overwrite=overwrite,
        )

        def encode() -> None:
            while True:
                item = _get(to_encode, stop)
                if item is _DONE:
                    return
                images, stamps = item
                for img, (pts, tb) in zip(images, stamps, strict=True):
                    sink.write(img, pts, tb)

        decoder = _Worker(decode, "decoder")
        encoder = _Worker(encode, "encoder")
        stats_list: list[dict] = []
        bar = tqdm(
            total=_expected_frames(source),
            unit="frame",
            disable=quiet or not progress,
            dynamic_ncols=True,
        )
        try:
            decoder.start()
            encoder.start()
            for window, a, b in iter_chunks(frames_from_decoder(), chunk, overlap):
                lr = to_tensor([w[0] for w in window])
                if lr.shape[-1] < MIN_SIZE or lr.shape[-2] < MIN_SIZE:
                    raise MediaError(f"input: frames are {lr.shape[-1]}x{lr.shape[-2]}")
                with torch.inference_mode():
                    sr, stats = upscale_fn(lr)
                expected = (
                    lr.shape[0],
                    3,
                    round(scale * lr.shape[-2]),
                    round(scale * lr.shape[-1]),
                )
                if tuple(sr.shape) != expected:
                    raise MediaError(
                        f"upscale_fn: returned shape {tuple(sr.shape)} (expected {expected})"
                    )
                images = to_uint8(sr[a:b])
                del sr
                stamps = [(w[1], w[2]) for w in window[a:b]]
                entry = dict(stats or {})
                entry.update(index=len(stats_list), output_frames=b - a, input_frames=len(window))
                stats_list.append(entry)
                if not _put(to_encode, (images, stamps), stop):
                    break
                encoder.check()
                bar.update(b - a)
            if not stats_list:
                raise MediaError(
                    f"input: {input} has no video frames after start={start} s "
                    "(expected at least 1)"
                )
            _put(to_encode, _DONE, stop)
            while encoder.is_alive():
                encoder.join(timeout=0.1)
            encoder.check()
            decoder.check()
            sink.close()
        except BaseException:
            stop.set()
            for w in (encoder, decoder):
                if w.is_alive():
                    w.join(timeout=5)
            sink.abort()
            raise
        finally:
            stop.set()
            bar.close()
    seconds = time.perf_counter() - t0
    summary = _summarize(stats_list, seconds, sink, output)
    if not quiet:
        print(summary_line(summary), flush=True)
    return summary


def _expected_frames(source: FrameSource) -> int | None:
    if source.is_folder:
        n = len(source._files) - int(round(source.start_seconds * source.fps))
    else:
        n = source.stream.frames or 0
        if not n and source.container.duration:
            n = int(source.container.duration / 1e6 * float(source.fps))
        n -= int(source.start_seconds * float(source.fps))
    if source.max_frames is not None:
        n = min(n, source.max_frames) if n > 0 else source.max_frames
    return n if n > 0 else None


def _summarize(stats_list: list[dict], seconds: float, sink: FrameSink, output) -> dict:
    frames = sum(s["output_frames"] for s in stats_list)
    processed = sum(s["input_frames"] for s in stats_list)

    def frame_mean(key: str) -> float | None:
        pairs = [(s[key], s["input_frames"]) for s in stats_list if s.get(key) is not None]
        if not pairs:
            return None
        return sum(float(v) * n for v, n in pairs) / sum(n for _, n in pairs)

    return {
        "output": str(output),
        "frames": frames,
        "processed_frames": processed,
        "seconds": seconds,
        "fps": frames / seconds if seconds > 0 else 0.0,
        "mac_fraction": frame_mean("mac_fraction"),
        "gmacs_per_frame": frame_mean("gmacs_per_frame"),
        "executed_block_fraction": frame_mean("executed_block_fraction"),
        "chunks": stats_list,
        "messages": list(sink.messages),
    }


def summary_line(summary: dict) -> str:
    """One line: frames, wall time, throughput, average MAC fraction, notes."""
    mac = summary["mac_fraction"]
    mac_s = f", MAC fraction {mac:.3f}" if mac is not None else ""
    line = (
        f"{summary['frames']} frames in {summary['seconds']:.1f} s "
        f"({summary['fps']:.2f} frames/s{mac_s}) -> {summary['output']}"
    )
    for msg in summary["messages"]:
        line += f"; {msg}"
    return line


def bilinear_upscale(lr: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Cheap per-frame x4 stand-in for a model: ``(T, 3, H, W)`` -> ``(T, 3, 4H, 4W)``."""
    sr = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False)
    return sr.clamp_(0, 1), {"frames": lr.shape[0], "mac_fraction": 0.0}
