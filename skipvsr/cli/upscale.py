"""``skipvsr upscale``: x4 video files or frame folders with a model and a route.

One input goes to ``-o OUT``; many (files, folders of videos, globs, ``@list.txt``) go to the
folder ``-o OUTDIR``, one output each, with a summary table and a JSON manifest at the end
(:mod:`skipvsr.cli.jobs`); ``--ray`` spreads them over a Ray cluster
(:mod:`skipvsr.cli.ray_jobs`). ``--resume`` continues killed jobs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skipvsr.api import load
from skipvsr.cli import jobs, ray_jobs
from skipvsr.cli.args import (
    CELL_HELP,
    UsageError,
    add_device_args,
    add_skip_args,
    budget,
    cell_size,
    default_model,
    fraction,
    positive_int,
)
from skipvsr.routing import POLICIES, Route
from skipvsr.video.heap import tune_allocator
from skipvsr.video.streaming import MapVideo
from skipvsr.weights import recommended_budget, registered_skip


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
        type=cell_size,
        default=32,
        help=CELL_HELP,
    )
    add_device_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    add_skip_args(p)


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
        "--routing-video",
        default=None,
        metavar="MAP",
        help="also write the output with blocks run per patch overlaid (video or PNG folder; "
        "one input)",
    )
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="with --routing-video: bicubic, output and map in one frame",
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
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="spread videos and chunk ranges over a Ray cluster (ADDRESS, e.g. auto or "
        "ray://head:10001; none: start a local Ray); needs pip install 'skipvsr[ray]'",
    )
    p.set_defaults(func=run)


def route_from_args(args: argparse.Namespace, model: str) -> Route:
    """The :class:`Route` of the routing flags for ``model`` (``UsageError`` for combinations
    that cannot be). The learned policy with no ``--threshold``/``--budget``/``--full`` runs at
    the model's recommended budget (:func:`skipvsr.weights.recommended_budget`), or the full
    network without one; frozen policies need ``--budget``."""
    fields = {"policy": args.policy, "cell": args.cell, "seed": args.seed}
    fields.update(
        skip=args.skip or registered_skip(model),
        refresh=args.refresh,
        estimator_stride=args.estimator_stride,
        group=args.group,
    )
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


def run(args: argparse.Namespace) -> int:
    name = args.model or default_model()
    route = route_from_args(args, name)
    check_layout(args)
    if args.side_by_side and args.routing_video is None:
        raise UsageError("--side-by-side draws the --routing-video: give --routing-video MAP")
    inputs, batch = jobs.expand_inputs(args.input)
    pairs = jobs.plan_outputs(inputs, args.output, batch)
    if (batch or args.ray is not None) and (args.stats or args.routing_video):
        raise UsageError(
            "--stats and --routing-video are for one input without --ray; a batch writes --manifest"
        )
    jobs.check_stats_path(args.stats)
    jobs.check_stats_path(args.manifest)
    if args.ray is not None:
        ray_jobs.import_ray()  # before the model loads: a missing Ray is a usage error
    model = load(name, device=args.device, precision=args.precision)
    try:
        model.check_route(route)
    except ValueError as e:
        raise UsageError(f"--model {args.model or default_model()}: {e}") from None
    maps = ()
    if args.routing_video is not None:
        cell = args.cell if args.patch is None and args.tile is None else None
        maps = (MapVideo(args.routing_video, jobs.map_view(model, cell, args.side_by_side)),)
    tune_allocator()
    settings = jobs.job_settings(args, model, route)
    if not batch and args.ray is None:
        summary = jobs.upscale_one(*pairs[0], model, route, args, settings, maps)
        jobs.write_stats(args.stats, jobs.report(summary, args.quiet))
        return 0
    if batch:
        Path(args.output).mkdir(exist_ok=True)
    if args.ray is not None:
        outcomes = ray_jobs.run_on_ray(pairs, model, route, args, settings)
    else:
        outcomes = jobs.run_batch(pairs, model, route, args, settings)
    print(jobs.table(outcomes), flush=True)
    if batch:
        manifest = Path(args.manifest or Path(args.output) / "manifest.json")
        jobs.write_manifest(manifest, outcomes)
    return 0 if all(o.status != "failed" for o in outcomes) else 1
