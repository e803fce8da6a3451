"""``skipvsr upscale``: x4 a video file or a frame folder with a model and a route."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from skipvsr.api import Upscaler, UpscaleStats, load
from skipvsr.backbone import BasicVSR
from skipvsr.cli.args import (
    UsageError,
    add_device_args,
    add_skip_args,
    budget,
    default_model,
    fraction,
    positive_int,
)
from skipvsr.routing import POLICIES, Route
from skipvsr.video.overlay import MapView
from skipvsr.video.streaming import (
    DEFAULT_CHUNK,
    DEFAULT_OVERLAP,
    EncodeOptions,
    MapVideo,
    StreamSummary,
    limit_heap_growth,
    upscale_media,
)
from skipvsr.weights import recommended_budget, registered_skip

TILE_OVERLAP = 16  # LR pixels shared by neighbouring --tile tiles


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
        default=None,
        help="learned policy: a block runs on a patch iff its redundancy score "
        "S <= 1 - threshold; 0 = full network",
    )
    g.add_argument(
        "--budget",
        type=budget,
        default=None,
        help="target MAC fraction (without SpyNet), e.g. 0.6 (default: the model's recommended "
        "budget, see `skipvsr weights`; the full network for models without one)",
    )
    g.add_argument(
        "--full", action="store_true", help="run every block: the full network (= --budget 1)"
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
        "--tube-flow",
        action="store_true",
        help="with --patch: SpyNet on every tube, the paper's protocol (default: one flow per "
        "frame, cropped per tube; +87 %% SpyNet MACs at 180x320)",
    )
    p.add_argument(
        "--cell",
        type=positive_int("cell", 4),
        default=32,
        help="routing patch size in LR pixels in full-frame mode (32)",
    )
    add_device_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    add_skip_args(p)


def add_parser(sub) -> None:
    p = sub.add_parser("upscale", help="x4 upscale a video file or a folder of frames")
    p.add_argument("input", help="video file (mp4, mkv, mov, webm, avi, ...) or frame folder")
    p.add_argument(
        "-o", "--output", required=True, help="output video (by extension) or folder of PNG frames"
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
    p.add_argument("--codec", default="libx264")
    p.add_argument(
        "--routing-video",
        default=None,
        metavar="MAP",
        help="also write the output with blocks run per patch overlaid (video or PNG folder)",
    )
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="with --routing-video: bicubic, output and map in one frame",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--stats", default=None, help="write run statistics as JSON")
    p.set_defaults(func=run)


def route_from_args(args: argparse.Namespace, model: str) -> Route:
    """The :class:`Route` of the routing flags for ``model`` (``UsageError`` for combinations
    that cannot be). The learned policy with no ``--threshold``/``--budget``/``--full`` runs at
    the model's recommended budget (:func:`skipvsr.weights.recommended_budget`), or the full
    network without one; frozen policies need ``--budget``."""
    fields = {"policy": args.policy, "cell": args.cell, "seed": args.seed}
    fields.update(skip=args.skip or registered_skip(model), refresh=args.refresh)
    if args.full:
        return Route(**fields)
    chosen = args.budget
    if chosen is None and args.threshold is None and args.policy == "learned":
        chosen = recommended_budget(model)
    if args.policy != "learned" and chosen is None:
        raise UsageError(f"--policy {args.policy} needs --budget (a MAC fraction)")
    if chosen is not None and chosen < 1.0:
        return Route.for_budget(chosen, **fields)
    return Route(threshold=args.threshold or 0.0, **fields)


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


def run(args: argparse.Namespace) -> int:
    name = args.model or default_model()
    route = route_from_args(args, name)
    check_layout(args)
    if args.side_by_side and args.routing_video is None:
        raise UsageError("--side-by-side draws the --routing-video: give --routing-video MAP")
    model = load(name, device=args.device, precision=args.precision)
    try:
        model.check_route(route)
    except ValueError as e:
        raise UsageError(f"--model {args.model or default_model()}: {e}") from None
    maps = ()
    if args.routing_video is not None:
        cell = args.cell if args.patch is None and args.tile is None else None
        maps = (MapVideo(args.routing_video, map_view(model, cell, args.side_by_side)),)
    limit_heap_growth()
    summary = upscale_media(
        args.input,
        args.output,
        model_fn(model, args, route),
        chunk=DEFAULT_CHUNK if args.chunk is None else args.chunk,
        overlap=DEFAULT_OVERLAP if args.chunk_overlap is None else args.chunk_overlap,
        max_frames=args.max_frames,
        start=args.start,
        encode=EncodeOptions(codec=args.codec, crf=args.crf),
        overwrite=args.overwrite,
        progress=not args.quiet,
        maps=maps,
        map_fn=map_fn(model),
    )
    write_stats(args.stats, report(summary, args.quiet))
    return 0
