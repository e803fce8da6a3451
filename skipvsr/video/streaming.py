"""Upscale a whole video in bounded memory: decode -> chunked model -> encode.

BasicVSR propagates features forwards and backwards through the whole clip, so a long video
is cut into temporal chunks of ``chunk`` output frames, each run together with up to
``overlap`` neighbouring frames on either side. The neighbours warm up both recurrences and
their outputs are thrown away, so every output frame is computed with at least ``overlap``
frames of context on each side (fewer only at the ends of the video).

Three stages run concurrently and talk through small bounded queues:

* a decoder thread reads ``(rgb, pts, time_base)`` frames from :class:`FrameSource`;
* the calling thread groups them into chunks and calls ``upscale_fn`` on each;
* an encoder thread converts and writes the upscaled frames through :class:`FrameSink`, and
  draws and writes each :class:`MapVideo` (the frames with their routing maps) beside them.

At most about ``chunk + 2 * overlap`` low-resolution frames, one model output and a few
queued frames are alive at any time, so peak memory does not grow with video length; a
routing-map video is drawn from the chunk being written, so it adds one chunk's frames at most.

Streaming never sees the model: ``upscale_fn`` is any function of a clip, and whatever stats
it returns come back per chunk in the :class:`StreamSummary` for the caller to merge. Nothing
here changes a process setting (allocator, printing): entry points call
:func:`skipvsr.video.heap.tune_allocator`; between chunks the pipeline only hands the heap's
free memory back (:func:`skipvsr.video.heap.release_free_memory`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from skipvsr.frames import MediaError, to_tensor, to_uint8
from skipvsr.signals import sigterm_as_interrupt
from skipvsr.video.heap import release_free_memory
from skipvsr.video.io import MIN_SIZE, FrameSink, FrameSource, check_output
from skipvsr.video.job import Resumable
from skipvsr.video.overlay import MapView

# Chosen by benchmarks/chunk_overlap.py (see the numbers printed there): overlap 4 already
# brings chunked output within a small fraction of a dB of whole-sequence processing.
DEFAULT_CHUNK = 32
DEFAULT_OVERLAP = 4

UpscaleFn = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]
# A chunk's stats -> its routing maps, (T, nH, nW) int, one per frame the chunk was given.
MapFn = Callable[[Any], np.ndarray]

_DONE = object()


class _Worker(threading.Thread):
    """A daemon thread whose exception is kept and re-raised by :meth:`check`."""

    def __init__(self, target: Callable, name: str, *args) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self._args = args
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn(*self._args)
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


@dataclass(frozen=True)
class EncodeOptions:
    """How a video output is encoded (a PNG folder ignores them): ``codec`` and its ``crf``."""

    codec: str = "libx264"
    crf: int = 18

    def __post_init__(self) -> None:
        if not isinstance(self.crf, int) or not 0 <= self.crf <= 63:
            raise MediaError(
                f"crf: {self.crf!r} (expected 0..63, 0..51 for libx264; lower is better)"
            )


@dataclass(frozen=True)
class MapVideo:
    """A second output of :func:`upscale_media`: every output frame drawn with its routing map
    by ``view``, written to ``output`` (a video or a PNG folder, like the main output) with the
    main output's timestamps."""

    output: str | os.PathLike
    view: MapView = MapView()


@dataclass
class Chunk:
    """One call of ``upscale_fn``: frames it output and read (with overlap), and the ``stats``
    it returned, kept as they are (streaming never looks inside)."""

    index: int
    output_frames: int
    input_frames: int
    stats: Any = None


@dataclass
class StreamSummary:
    """What :func:`upscale_media` did: frames written, frames processed (with overlap), wall
    time in seconds, the chunks in order, and notes such as audio re-encoding."""

    output: str
    frames: int
    processed_frames: int
    seconds: float
    chunks: list[Chunk] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self, chunk_stats: Callable[[Any], dict] = lambda stats: {}) -> dict:
        """JSON-ready fields; ``chunk_stats(stats)`` turns each chunk's stats into fields."""
        chunks = [
            {**chunk_stats(c.stats), "index": c.index, "output_frames": c.output_frames,
             "input_frames": c.input_frames}
            for c in self.chunks
        ]  # fmt: skip
        return {
            "output": self.output,
            "frames": self.frames,
            "processed_frames": self.processed_frames,
            "seconds": self.seconds,
            "fps": self.fps,
            "chunks": chunks,
            "messages": list(self.messages),
        }

    def line(self, note: str = "") -> str:
        """One line: frames, wall time, throughput (then ``note``), output, and the notes."""
        line = (
            f"{self.frames} frames in {self.seconds:.1f} s "
            f"({self.fps:.2f} frames/s{note}) -> {self.output}"
        )
        return "".join([line, *(f"; {msg}" for msg in self.messages)])


def _check_size(width: int, height: int) -> None:
    if width < MIN_SIZE or height < MIN_SIZE:
        raise MediaError(
            f"input: frames are {width}x{height} (expected at least {MIN_SIZE}x{MIN_SIZE})"
        )


def decode_worker(source: FrameSource, out: queue.Queue, stop: threading.Event) -> None:
    """Thread body: every ``(rgb, pts, time_base)`` of ``source`` into ``out``, then the end."""
    for item in source:
        if not _put(out, item, stop):
            return
    _put(out, _DONE, stop)


def encode_worker(
    sink: FrameSink,
    todo: queue.Queue,
    stop: threading.Event,
    maps: tuple[tuple[FrameSink, MapView], ...] = (),
    job: Resumable | None = None,
) -> None:
    """Thread body: write each ``(images, stamps, lr, routing, keep)`` of ``todo`` through
    ``sink`` until the end, and each frame drawn by every view of ``maps`` through its sink
    (``lr`` and ``routing`` hold the input frames and routing maps of ``images``, or are empty).
    ``keep`` is ``(chunk index, stats)`` for a new chunk to save as a segment of ``job`` first
    (``None`` for a replayed one)."""
    while True:
        item = _get(todo, stop)
        if item is _DONE:
            return
        images, stamps, lr, routing, keep = item
        if job is not None and keep is not None:
            job.save(keep[0], images, stamps, keep[1])
        for i, (pts, tb) in enumerate(stamps):
            sink.write(images[i], pts, tb)
            for map_sink, view in maps:
                side = lr[i] if view.side_by_side else None
                map_sink.write(view.render(images[i], routing[i], side), pts, tb)


def drain(q: queue.Queue, stop: threading.Event, producer: _Worker) -> Iterator:
    """The items of ``q`` until the end marker (or ``stop``)."""
    while True:
        item = _get(q, stop, producer)
        if item is _DONE:
            return
        yield item


def upscale_window(
    upscale_fn: UpscaleFn, window: list, keep_from: int, keep_to: int, scale: float
) -> tuple[np.ndarray, Any]:
    """Run ``upscale_fn`` on a window of decoded ``(rgb, pts, time_base)`` items.

    Returns the kept output frames ``window[keep_from:keep_to]`` as ``(n, sH, sW, 3)`` uint8
    (``s = scale``) and the stats ``upscale_fn`` returned.
    """
    lr = to_tensor([w[0] for w in window])
    _check_size(lr.shape[-1], lr.shape[-2])
    with torch.inference_mode():
        sr, stats = upscale_fn(lr)
    expected = (lr.shape[0], 3, round(scale * lr.shape[-2]), round(scale * lr.shape[-1]))
    if tuple(sr.shape) != expected:
        raise MediaError(f"upscale_fn: returned shape {tuple(sr.shape)} (expected {expected})")
    return to_uint8(sr[keep_from:keep_to]), stats


def window_maps(map_fn: MapFn, stats: Any, frames: int) -> np.ndarray:
    """``map_fn(stats)`` checked to hold one ``(nH, nW)`` map per frame of a ``frames`` window."""
    maps = np.asarray(map_fn(stats))
    if maps.ndim != 3 or maps.shape[0] != frames:
        raise MediaError(
            f"map_fn: returned routing maps of shape {maps.shape} (expected ({frames}, nH, nW))"
        )
    return maps


def _check_map_outputs(output, maps, map_fn, overwrite: bool) -> None:
    if maps and map_fn is None:
        raise MediaError("map_fn: None (expected a function from chunk stats to routing maps)")
    paths = [os.path.abspath(output)]
    for m in maps:
        check_output(m.output, overwrite=overwrite)
        if os.path.abspath(m.output) in paths:
            raise MediaError(
                f"maps: {m.output} is written twice (expected a path of its own for each output)"
            )
        paths.append(os.path.abspath(m.output))


def _shutdown(stop: threading.Event, workers: tuple[_Worker, ...]) -> None:
    stop.set()
    for w in workers:
        if w.is_alive():
            w.join(timeout=5)


def upscale_media(
    input: str | os.PathLike,
    output: str | os.PathLike,
    upscale_fn: UpscaleFn,
    *,
    chunk: int = DEFAULT_CHUNK,
    overlap: int = DEFAULT_OVERLAP,
    max_frames: int | None = None,
    start: float = 0.0,
    fps: float | None = None,
    encode: EncodeOptions = EncodeOptions(),
    overwrite: bool = False,
    progress: bool = True,
    scale: float = 4,
    maps: tuple[MapVideo, ...] = (),
    map_fn: MapFn | None = None,
    job: Resumable | None = None,
) -> StreamSummary:
    """Upscale ``input`` (video file or PNG/JPG folder) x4 into ``output`` (video or folder).

    ``upscale_fn(lr)`` takes ``(T, 3, H, W) float32 in [0, 1]`` and returns ``(sr, stats)``
    with ``sr`` ``(T, 3, sH, sW)`` float in [0, 1] (clamped here), ``s = scale`` (4; the demo
    shrinks with 1/8), and any ``stats``, handed back per chunk in the summary. ``fps`` is the
    frame rate for folder input (default 25); ``progress`` shows a bar on stderr. Raises
    :class:`MediaError` for bad inputs/outputs; on any error or interrupt (SIGTERM included)
    the output path is left untouched.

    ``maps`` are routing-map videos written beside ``output``, frame for frame with the same
    timestamps; ``map_fn(stats)`` gives each chunk's routing maps ``(T, nH, nW)`` int from the
    stats ``upscale_fn`` returned for it. They are drawn chunk by chunk, like the main output.

    With a ``job``, every finished chunk is kept as a segment in the job's folder, and a resumed
    job replays its segments (their stats too, so the maps can be drawn again) instead of
    running ``upscale_fn`` on those chunks again; the folder goes once the output is complete
    (see :mod:`skipvsr.video.job`).
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise MediaError(f"chunk: {chunk!r} (expected an integer >= 1)")
    if not isinstance(overlap, int) or overlap < 0:
        raise MediaError(f"overlap: {overlap!r} (expected an integer >= 0)")
    check_output(output, overwrite=overwrite)
    _check_map_outputs(output, maps, map_fn, overwrite)
    t0 = time.perf_counter()
    stop = threading.Event()
    chunks: list[Chunk] = []
    done: list = []
    with contextlib.ExitStack() as stack:
        if job is not None:
            settings = stream_settings(chunk, overlap, max_frames, start, fps, encode, scale)
            done = job.begin(input, settings, overwrite)
            stack.enter_context(job)  # first in, so it ends after the sink has finished
        stack.enter_context(sigterm_as_interrupt())
        source = stack.enter_context(
            FrameSource(input, start_seconds=start, max_frames=max_frames, fps=fps)
        )
        _check_size(source.width, source.height)
        width, height = round(scale * source.width), round(scale * source.height)

        def open_sink(path, size: tuple[int, int], temp: Path | None = None) -> FrameSink:
            return stack.enter_context(
                FrameSink(path, width=size[0], height=size[1], source=source, fps=source.fps,
                          time_base=source.time_base, codec=encode.codec, crf=encode.crf,
                          overwrite=overwrite, temp=temp)
            )  # fmt: skip

        partial = None if job is None else job.partial(Path(output).suffix)
        sink = open_sink(output, (width, height), partial)
        map_sinks = tuple((open_sink(m.output, m.view.size(width, height)), m.view) for m in maps)
        decoded: queue.Queue = queue.Queue(maxsize=chunk + 2 * overlap)
        # One finished chunk waits while the encoder works on another: inference is far slower
        # than encoding, so a deeper queue only raises the memory ceiling (x4 uint8 frames).
        to_encode: queue.Queue = queue.Queue(maxsize=1)
        decoder = _Worker(decode_worker, "decoder", source, decoded, stop)
        encoder = _Worker(encode_worker, "encoder", sink, to_encode, stop, map_sinks, job)
        # Registered after the sink, so the threads stop before it finishes or aborts.
        stack.callback(_shutdown, stop, (encoder, decoder))
        bar = stack.enter_context(
            tqdm(total=_expected_frames(source), unit="frame", disable=not progress,
                 dynamic_ncols=True)
        )  # fmt: skip
        decoder.start()
        encoder.start()
        for window, a, b in iter_chunks(drain(decoded, stop, decoder), chunk, overlap):
            index, stamps = len(chunks), [(w[1], w[2]) for w in window[a:b]]
            if index < len(done):
                images, saved, stats = job.load(done[index])
                if saved != stamps:
                    raise MediaError(f"--resume: {done[index]} does not match the input's frames")
                keep = None
            else:
                images, stats = upscale_window(upscale_fn, window, a, b, scale)
                keep = (index, stats)
            chunks.append(Chunk(index, b - a, len(window), stats))
            lr, routing = [], []
            if maps:
                lr = [w[0] for w in window[a:b]]
                routing = window_maps(map_fn, stats, len(window))[a:b]
            if not _put(to_encode, (images, stamps, lr, routing, keep), stop):
                break
            release_free_memory()
            encoder.check()
            bar.update(b - a)
        if not chunks:
            raise MediaError(
                f"input: {input} has no video frames after start={start} s (expected at least 1)"
            )
        _put(to_encode, _DONE, stop)
        while encoder.is_alive():
            encoder.join(timeout=0.1)
        encoder.check()
        decoder.check()
    return StreamSummary(
        output=str(output),
        frames=sum(c.output_frames for c in chunks),
        processed_frames=sum(c.input_frames for c in chunks),
        seconds=time.perf_counter() - t0,
        chunks=chunks,
        messages=list(sink.messages),
    )


def stream_settings(
    chunk: int,
    overlap: int,
    max_frames: int | None,
    start: float,
    fps: float | None,
    encode: EncodeOptions,
    scale: float,
) -> dict:
    """The streaming arguments a resumed job must share, JSON-ready (see :class:`Resumable`)."""
    return {"chunk": chunk, "overlap": overlap, "max_frames": max_frames, "start": start,
            "fps": None if fps is None else str(fps), "codec": encode.codec, "crf": encode.crf,
            "scale": scale}  # fmt: skip


def render_chunks(
    input: str | os.PathLike,
    upscale_fn: UpscaleFn,
    first: int,
    last: int | None,
    *,
    chunk: int = DEFAULT_CHUNK,
    overlap: int = DEFAULT_OVERLAP,
    max_frames: int | None = None,
    start: float = 0.0,
    fps: float | None = None,
    scale: float = 4,
) -> Iterator[tuple[int, np.ndarray, list, Any]]:
    """The chunks ``first <= index < last`` (``last=None``: to the end) of the chunking that
    :func:`upscale_media` applies with the same arguments, as ``(index, images, stamps, stats)``
    with ``images`` ``(n, sH, sW, 3) uint8`` and ``stamps`` ``[(pts, time_base)]``.

    Every chunk sees the same window (warm-up frames included) as in :func:`upscale_media`, so
    a range computed elsewhere (a Ray task) is the same as the single-process one. Frames before
    the range are decoded, not upscaled.
    """
    with FrameSource(input, start_seconds=start, max_frames=max_frames, fps=fps) as source:
        _check_size(source.width, source.height)
        for index, (window, a, b) in enumerate(iter_chunks(source, chunk, overlap)):
            if last is not None and index >= last:
                return
            if index >= first:
                images, stats = upscale_window(upscale_fn, window, a, b, scale)
                yield index, images, [(w[1], w[2]) for w in window[a:b]], stats


def expected_chunks(
    input: str | os.PathLike,
    chunk: int,
    *,
    max_frames: int | None = None,
    start: float = 0.0,
    fps: float | None = None,
) -> int | None:
    """How many chunks :func:`upscale_media` will likely run on ``input`` (from the container's
    frame count; ``None`` when unknown)."""
    with FrameSource(input, start_seconds=start, max_frames=max_frames, fps=fps) as source:
        frames = _expected_frames(source)
    return None if frames is None else -(-frames // chunk)


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


def bilinear_upscale(lr: torch.Tensor) -> tuple[torch.Tensor, None]:
    """Cheap per-frame x4 stand-in for a model: ``(T, 3, H, W)`` -> ``(T, 3, 4H, 4W)``, no stats."""
    sr = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False)
    return sr.clamp_(0, 1), None
