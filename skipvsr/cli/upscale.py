"""``skipvsr upscale``: x4 video files or frame folders with a model and a route.

One input goes to ``-o OUT``; many (files, folders of videos, globs, ``@list.txt``) go to the
folder ``-o OUTDIR``, one output each, with a summary table and a JSON manifest at the end.
Every job keeps its finished chunks beside its output until it completes, so ``--resume``
continues a killed one (:mod:`skipvsr.video.job`).
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

import av
import torch

from skipvsr.api import Upscaler, UpscaleStats, load
from skipvsr.cli.args import UsageError, budget, default_model, fraction, positive_int
from skipvsr.frames import MediaError, list_frames, natural_key
from skipvsr.routing import POLICIES, Route
from skipvsr.video.io import VIDEO_SUFFIXES, FrameSource
from skipvsr.video.job import Resumable, job_folder
from skipvsr.video.streaming import (
    DEFAULT_CHUNK,
    DEFAULT_OVERLAP,
    EncodeOptions,
    StreamSummary,
    limit_heap_growth,
    upscale_media,
)

TILE_OVERLAP = 16  # LR pixels shared by neighbouring --tile tiles
GLOB_CHARS = "*?["
# What a bad input may raise inside one job of a batch (the others go on); av's errors that
# are not OSError or ValueError come from a damaged file or a refusing muxer.
JOB_ERRORS = (ValueError, OSError, RuntimeError, av.error.FFmpegError)


def add_routing_args(p: argparse.ArgumentParser) -> None:
    """Model, routing and frame-layout flags."""
    p.add_argument(
        "--model",
        default=None,
        help="registered name (see `skipvsr weights`) or checkpoint path "
        "(default: the shipped SkipVSR model if present, else basicvsr-vimeo-bi)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--threshold",
        type=fraction("threshold", high_open=True),
        default=0.0,
        help="learned policy: a block runs on a patch iff its redundancy score "
        "S <= 1 - threshold; 0 = full network (default)",
    )
    g.add_argument(
        "--budget", type=budget, default=None, help="target MAC fraction (without SpyNet), e.g. 0.6"
    )
    p.add_argument("--policy", choices=POLICIES, default="learned")
    m = p.add_mutually_exclusive_group()
    m.add_argument(
        "--full-frame",
        dest="mode",
        action="store_const",
        const="full",
        help="whole frames, routing on a grid of --cell patches (default)",
    )
    m.add_argument(
        "--patch",
        type=positive_int("patch", 8),
        default=None,
        help="the paper's tube protocol: LR patch size (48)",
    )
    p.add_argument(
        "--stride", type=positive_int("stride"), default=46, help="tube stride with --patch (46)"
    )
    p.add_argument(
        "--cell",
        type=positive_int("cell", 4),
        default=32,
        help="routing patch size in LR pixels in full-frame mode (32)",
    )
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy")


def add_parser(sub) -> None:
    p = sub.add_parser("upscale", help="x4 upscale video files or folders of frames")
    p.add_argument(
        "input",
        nargs="+",
        help="video file (mp4, mkv, mov, webm, avi, ...) or frame folder; several, a folder of "
        "videos, a quoted glob or @LIST.txt (one path a line) make a batch",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output video (by extension) or folder of PNG frames; for a batch, the folder "
        "that receives one output per input (same name)",
    )
    add_routing_args(p)
    p.add_argument(
        "--chunk",
        type=positive_int("chunk"),
        default=None,
        help="frames per chunk (default: measured, see README)",
    )
    p.add_argument(
        "--chunk-overlap",
        type=positive_int("chunk-overlap", 0),
        default=None,
        help="warm-up frames on each side of a chunk, discarded",
    )
    p.add_argument(
        "--tile",
        type=positive_int("tile", 16),
        default=None,
        help="spatial tile size in LR pixels for frames too large for memory",
    )
    p.add_argument("--max-frames", type=positive_int("max-frames"), default=None)
    p.add_argument(
        "--start",
        type=fraction("start", 0.0, float("inf")),
        default=0.0,
        help="start time in seconds",
    )
    p.add_argument("--crf", type=positive_int("crf", 0), default=18)
    p.add_argument(
        "--codec", default=None, help="video encoder (default libx264, libvpx-vp9 for .webm)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (and drop an unfinished job's progress)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished job kept beside each output (same settings and input)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--stats", default=None, help="write run statistics as JSON (one input)")
    p.add_argument(
        "--manifest", default=None, help="batch manifest JSON (default OUTDIR/manifest.json)"
    )
    p.set_defaults(func=run)


def route_from_args(args: argparse.Namespace) -> Route:
    """The :class:`Route` of the routing flags (``UsageError`` for combinations that cannot be)."""
    if args.policy != "learned" and args.budget is None:
        raise UsageError(f"--policy {args.policy} needs --budget (a MAC fraction)")
    fields = {"policy": args.policy, "cell": args.cell, "seed": args.seed}
    if args.budget is not None:
        return Route.for_budget(args.budget, **fields)
    return Route(threshold=args.threshold, **fields)


def check_layout(args: argparse.Namespace) -> None:
    """``UsageError`` for frame-layout flags that do not go together."""
    if args.patch is not None and args.tile is not None:
        raise UsageError("--tile and --patch both split frames: give one of them")
    if args.patch is not None and args.stride > args.patch:
        raise UsageError(f"--stride must be <= --patch, got {args.stride} > {args.patch}")


def model_fn(model: Upscaler, args: argparse.Namespace, route: Route):
    """``upscale_fn`` for :func:`upscale_media`: ``model.upscale`` with ``route`` and the frame
    layout of the flags (``--patch`` tubes, ``--tile`` tiles or whole frames)."""
    if args.patch is not None:
        return functools.partial(model.upscale, route=route, mode="patch", patch=args.patch,
                                 stride=args.stride)  # fmt: skip
    if args.tile is not None:
        # Tiles overlap, and flow is computed once per full frame.
        stride = max(args.tile - TILE_OVERLAP, 1)
        return functools.partial(model.upscale, route=route, mode="patch", patch=args.tile,
                                 stride=stride, tube_flow=False)  # fmt: skip
    return functools.partial(model.upscale, route=route)


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
    frames = _chunk(args) + 2 * _overlap(args)
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


def _chunk(args: argparse.Namespace) -> int:
    return DEFAULT_CHUNK if args.chunk is None else args.chunk


def _overlap(args: argparse.Namespace) -> int:
    return DEFAULT_OVERLAP if args.chunk_overlap is None else args.chunk_overlap


def _codec(args: argparse.Namespace, output: Path) -> str:
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
        "tile": args.tile,
        "precision": args.precision,
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


def upscale_one(src: Path, dst: Path, model: Upscaler, route: Route, args, settings: dict):
    """Upscale ``src`` into ``dst`` as a resumable job; returns the :class:`StreamSummary`."""
    check_memory(src, model, args)
    job = Resumable(
        job_folder(dst),
        settings=settings,
        resume=args.resume,
        stats_to_json=UpscaleStats.as_dict,
        stats_from_json=UpscaleStats.from_dict,
    )
    return upscale_media(
        src,
        dst,
        model_fn(model, args, route),
        chunk=_chunk(args),
        overlap=_overlap(args),
        max_frames=args.max_frames,
        start=args.start,
        encode=EncodeOptions(codec=_codec(args, dst), crf=args.crf),
        overwrite=args.overwrite,
        progress=not args.quiet,
        job=job,
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
        except JOB_ERRORS as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"skipvsr: {src}: error: {text}", file=sys.stderr, flush=True)
            outcomes.append(Outcome(str(src), str(dst), "failed", message=text))
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


def run(args: argparse.Namespace) -> int:
    route = route_from_args(args)
    check_layout(args)
    inputs, batch = expand_inputs(args.input)
    pairs = plan_outputs(inputs, args.output, batch)
    if batch and args.stats:
        raise UsageError("--stats is for one input; a batch writes --manifest")
    check_stats_path(args.stats)
    check_stats_path(args.manifest)
    model = load(args.model or default_model(), device=args.device, precision=args.precision)
    try:
        model.check_route(route)
    except ValueError as e:
        raise UsageError(f"--model {args.model or default_model()}: {e}") from None
    limit_heap_growth()
    settings = job_settings(args, model, route)
    if not batch:
        summary = upscale_one(*pairs[0], model, route, args, settings)
        write_stats(args.stats, report(summary, args.quiet))
        return 0
    Path(args.output).mkdir(exist_ok=True)
    outcomes = run_batch(pairs, model, route, args, settings)
    print(table(outcomes), flush=True)
    write_manifest(Path(args.manifest or Path(args.output) / "manifest.json"), outcomes)
    return 0 if all(o.status != "failed" for o in outcomes) else 1
