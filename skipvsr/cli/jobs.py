"""Running upscale jobs for the command: one input, or a batch with a summary and a manifest.

An input is a video file or a frame folder; a batch is several, a folder of videos, a glob or
a ``@list`` file. Every job keeps its finished chunks beside its output until it completes
(:mod:`skipvsr.video.job`), so ``--resume`` continues a killed one. Helpers here are shared by
the single-process path (:func:`run_batch`) and the Ray path (:mod:`skipvsr.cli.ray_jobs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skipvsr.api import Upscaler, UpscaleStats
from skipvsr.backbone import BasicVSR
from skipvsr.cli.args import FAILURES, UsageError, default_model
from skipvsr.frames import MediaError, list_frames, natural_key
from skipvsr.routing import Route
from skipvsr.video.io import VIDEO_SUFFIXES, FrameSource
from skipvsr.video.job import Resumable, job_folder
from skipvsr.video.overlay import MapView
from skipvsr.video.streaming import (
    DEFAULT_CHUNK,
    DEFAULT_OVERLAP,
    EncodeOptions,
    MapVideo,
    StreamSummary,
    upscale_media,
)

TILE_OVERLAP = 16  # LR pixels shared by neighbouring --tile tiles
GLOB_CHARS = "*?["


def model_fn(model: Upscaler, args: argparse.Namespace, route: Route):
    """``upscale_fn`` for :func:`upscale_media`: ``model.upscale`` with ``route`` and the frame
    layout of the flags (``--patch`` tubes, ``--tile`` tiles or whole frames)."""
    if args.patch is not None:
        return functools.partial(model.upscale, route=route, mode="patch", patch=args.patch,
                                 stride=args.stride, tube_flow=args.tube_flow)  # fmt: skip
    if args.tile is not None:
        # Tiles overlap, and flow is computed once per full frame.
        stride = max(args.tile - TILE_OVERLAP, 1)
        return functools.partial(model.upscale, route=route, mode="patch", patch=args.tile,
                                 stride=stride, tube_flow=False)  # fmt: skip
    return functools.partial(model.upscale, route=route)


def map_view(model: Upscaler, cell: int | None, side_by_side: bool = False) -> MapView:
    """How this model's routing maps are drawn: colours up to every block of both branches,
    patches of ``cell`` LR pixels (whole frames) or stretched over the frame (``None``: tubes
    and tiles)."""
    return MapView(
        side_by_side=side_by_side,
        cell=None if cell is None else BasicVSR.scale * cell,
        max_blocks=2 * model.model.num_block,
    )


def routing_maps(stats: UpscaleStats, max_blocks: int) -> np.ndarray:
    """``(T, nH, nW)`` int blocks run per patch of one call, both branches summed: the stats'
    map, or, when nothing was routed, ``max_blocks`` on one patch per frame."""
    if stats.routing_map is not None:
        return stats.routing_map.cpu().numpy()
    return np.full((stats.frames, 1, 1), max_blocks, dtype=np.int32)


def map_fn(model: Upscaler):
    """``map_fn`` for :func:`upscale_media`: a chunk's :class:`UpscaleStats` -> its maps."""
    return functools.partial(routing_maps, max_blocks=2 * model.model.num_block)


def stats_record(stats: UpscaleStats) -> dict:
    """A chunk's stats as a job keeps them: :meth:`UpscaleStats.as_dict` plus the routing map
    (so that a resumed job can draw its routing video)."""
    routing = None if stats.routing_map is None else stats.routing_map.tolist()
    return {**stats.as_dict(), "routing_map": routing}


def merged_stats(summary: StreamSummary) -> UpscaleStats:
    """One :class:`UpscaleStats` for a streamed video, chunks weighted by frames processed."""
    chunks = summary.chunks
    return UpscaleStats.merge([c.stats for c in chunks], [c.input_frames for c in chunks])


def report(summary: StreamSummary, quiet: bool = False) -> dict:
    """Print the summary line (unless ``quiet``); return the ``--stats`` JSON object: the
    stream summary, every chunk's stats, and their frame-weighted MAC figures."""
    merged = merged_stats(summary)
    if not quiet:
        print(summary.line(f", MAC fraction {merged.mac_fraction:.3f}"), flush=True)
    return {
        **summary.as_dict(UpscaleStats.as_dict),
        "mac_fraction": merged.mac_fraction,
        "gmacs_per_frame": merged.gmacs_per_frame,
        "executed_block_fraction": merged.executed_block_fraction,
    }


def write_stats(path: str | None, record: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(record, indent=2, default=str))


# --------------------------------------------------------------------------- inputs


def _one_input(text: str) -> list[Path]:
    """The inputs one command-line item names (``UsageError`` for what cannot be read)."""
    if text == "-":
        raise UsageError("input: '-' (stdin) is not supported (expected a file or folder path)")
    if "://" in text:
        raise UsageError(
            f"input: {text} is a URL, which is not supported (expected a local file or folder; "
            "download it first)"
        )
    path = Path(text)
    if not path.exists() and any(c in text for c in GLOB_CHARS):
        found = sorted(glob.glob(text), key=natural_key)
        if not found:
            raise UsageError(f"input: the pattern {text} matches nothing")
        return [Path(f) for f in found]
    if path.is_dir() and not list_frames(path):
        videos = [p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES]
        return sorted(videos, key=lambda p: natural_key(p.name)) or [path]
    return [path]


def expand_inputs(items: list[str]) -> tuple[list[Path], bool]:
    """The input paths of the command line and whether they make a batch: several inputs, a
    folder of videos, a glob or a ``@list`` file (one path a line, ``#`` comments)."""
    out: list[Path] = []
    batch = len(items) > 1
    for item in items:
        if item.startswith("@"):
            listed = Path(item[1:])
            try:
                lines = listed.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise UsageError(f"input: list file {listed} cannot be read ({e})") from None
            names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            if not names:
                raise UsageError(f"input: list file {listed} names no inputs")
            out += [p for name in names for p in _one_input(name)]
            batch = True
        else:
            found = _one_input(item)
            batch = batch or found != [Path(item)]
            out += found
    return out, batch


def plan_outputs(inputs: list[Path], output: str, batch: bool) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs: ``output`` itself for one input, else ``output/<name>``."""
    if not batch:
        pairs = [(inputs[0], Path(output))]
    else:
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--output: {folder} is a file (expected a folder for many inputs)")
        pairs = [(src, folder / src.name) for src in inputs]
        seen: dict[Path, Path] = {}
        for src, dst in pairs:
            if dst in seen:
                raise UsageError(f"input: {seen[dst]} and {src} would both write {dst}")
            seen[dst] = src
    for src, dst in pairs:
        if src.exists() and dst.exists() and src.resolve() == dst.resolve():
            raise UsageError(f"--output: {dst} is the input itself (expected another path)")
    return pairs


def check_memory(src: Path, model: Upscaler, args: argparse.Namespace) -> None:
    """``MediaError`` before any work if one chunk of ``src`` clearly cannot fit in memory.

    A rough upper estimate: per frame of a chunk (with its warm-up frames) the x4 output as
    float32 twice (model output and its clamp) and the features of both branches plus flows on
    the frame (or on one tile with ``--tile``/``--patch``), and the upsampler of one frame.
    """
    with FrameSource(src) as source:
        w, h = source.width, source.height
    chunking = chunk_args(args)
    frames = chunking["chunk"] + 2 * chunking["overlap"]
    side = args.tile or args.patch
    area = side * side if side else w * h
    feat = model.model.num_feat
    need = frames * (w * h * 16 * 3 * 4 * 2 + area * feat * 4 * 3) + area * 16 * feat * 4 * 2
    have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        hint = "a smaller --chunk" if side else "--tile 256 or a smaller --chunk"
        raise MediaError(
            f"input: {src} has {w}x{h} frames; a chunk of {frames} frames needs about "
            f"{need / 2**30:.1f} GiB and {have / 2**30:.1f} GiB is free (expected {hint})"
        )


def chunk_args(args: argparse.Namespace) -> dict:
    """The chunking keywords of :func:`upscale_media` (and :func:`render_chunks`)."""
    return {
        "chunk": DEFAULT_CHUNK if args.chunk is None else args.chunk,
        "overlap": DEFAULT_OVERLAP if args.chunk_overlap is None else args.chunk_overlap,
        "max_frames": args.max_frames,
        "start": args.start,
    }


def codec_for(args: argparse.Namespace, output: Path) -> str:
    if args.codec is not None:
        return args.codec
    return "libvpx-vp9" if output.suffix.lower() == ".webm" else "libx264"


def weights_sha256(model: Upscaler) -> str:
    """sha256 of the model's weights (names and float32 bytes), for a job's settings."""
    digest = hashlib.sha256()
    for name, tensor in model.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def job_settings(args: argparse.Namespace, model: Upscaler, route: Route) -> dict:
    """What a resumed job must share with the one it continues, besides the streaming settings
    (the thread count too: it can change the floating-point sums)."""
    return {
        "model": args.model or default_model(),
        "weights_sha256": weights_sha256(model),
        "route": dataclasses.asdict(route),
        "patch": args.patch,
        "stride": args.stride if args.patch is not None else None,
        "tube_flow": args.tube_flow if args.patch is not None else None,
        "tile": args.tile,
        "precision": model.precision,
        "device": args.device,
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """One input of a batch: ``status`` is ``done``, ``skipped`` (the output exists) or
    ``failed`` (``message`` says why); frames, seconds and MAC fraction when done."""

    input: str
    output: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    mac_fraction: float | None = None
    message: str = ""


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def make_job(dst: Path, settings: dict, args: argparse.Namespace) -> Resumable:
    """The resumable job writing ``dst``, its per-chunk stats stored as JSON."""
    return Resumable(
        job_folder(dst),
        settings=settings,
        resume=args.resume,
        stats_to_json=stats_record,
        stats_from_json=UpscaleStats.from_dict,
    )


def upscale_one(src: Path, dst: Path, model: Upscaler, route: Route, args, settings: dict,
                maps: tuple[MapVideo, ...] = ()) -> StreamSummary:  # fmt: skip
    """Upscale ``src`` into ``dst`` as a resumable job (with the routing videos ``maps``);
    returns the :class:`StreamSummary`."""
    check_memory(src, model, args)
    return upscale_media(
        src,
        dst,
        model_fn(model, args, route),
        **chunk_args(args),
        encode=EncodeOptions(codec=codec_for(args, dst), crf=args.crf),
        overwrite=args.overwrite,
        progress=not args.quiet,
        job=make_job(dst, settings, args),
        maps=maps,
        map_fn=map_fn(model),
    )


def run_batch(pairs, model: Upscaler, route: Route, args, settings: dict) -> list[Outcome]:
    """Every pair in turn; one failing (or existing, without ``--overwrite``) does not stop
    the others."""
    outcomes = []
    for src, dst in pairs:
        if dst.exists() and not args.overwrite:
            outcomes.append(Outcome(str(src), str(dst), "skipped", message="output exists"))
            continue
        try:
            summary = upscale_one(src, dst, model, route, args, settings)
        except FAILURES as e:
            print(f"skipvsr: {src}: error: {one_line(e)}", file=sys.stderr, flush=True)
            outcomes.append(Outcome(str(src), str(dst), "failed", message=one_line(e)))
            continue
        stats = merged_stats(summary)
        if not args.quiet:
            print(summary.line(f", MAC fraction {stats.mac_fraction:.3f}"), flush=True)
        outcomes.append(Outcome(str(src), str(dst), "done", summary.frames, summary.seconds,
                                stats.mac_fraction, "; ".join(summary.messages)))  # fmt: skip
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    """The batch summary: one row per input (input, frames, seconds, MAC fraction, status)."""
    rows = [("input", "frames", "seconds", "MAC fraction", "status")]
    for o in outcomes:
        mac = "" if o.mac_fraction is None else f"{o.mac_fraction:.3f}"
        status = o.status + (f": {o.message}" if o.status == "failed" else "")
        rows.append((o.input, str(o.frames), f"{o.seconds:.1f}", mac, status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]]).rstrip()
        for r in rows
    )


def write_manifest(path: Path, outcomes: list[Outcome]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps([dataclasses.asdict(o) for o in outcomes], indent=2))
    os.replace(temp, path)


def check_stats_path(path: str | None) -> None:
    """A statistics or manifest file whose folder is missing fails now, not after the work."""
    if path and not Path(path).parent.is_dir():
        raise UsageError(f"{path}: folder {Path(path).parent} does not exist")
