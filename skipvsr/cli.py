"""The ``skipvsr`` command line.

Exit codes: 0 success, 1 failure (bad input file, unusable checkpoint, ...), 2 usage error.
Errors print one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """A bad argument value: exit code 2."""


def _fraction(name: str, low: float = 0.0, high: float = 1.0, high_open: bool = False):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        ok = low <= v < high if high_open else low <= v <= high
        if not ok:
            bracket = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"{name} must be in [{low}, {high}{bracket}, got {v}")
        return v

    return parse


def _budget(text: str) -> float:
    from skipvsr.cost import block_fraction_for_budget

    v = _fraction("budget")(text)
    try:
        block_fraction_for_budget(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return v


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW like 180x320, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def _positive_int(name: str, minimum: int = 1):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {v}")
        return v

    return parse


def add_routing_args(p: argparse.ArgumentParser) -> None:
    """Model and routing flags shared by ``upscale`` and ``eval``."""
    from skipvsr.routing import POLICIES

    p.add_argument(
        "--model",
        default=None,
        help="registered name (see `skipvsr weights`) or checkpoint path "
        "(default: the shipped SkipVSR model if present, else basicvsr-vimeo-bi)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--threshold",
        type=_fraction("threshold", high_open=True),
        default=0.0,
        help="learned policy: a block runs on a patch iff its redundancy score "
        "S <= 1 - threshold; 0 = full network (default)",
    )
    g.add_argument(
        "--budget",
        type=_budget,
        default=None,
        help="target MAC fraction (without SpyNet), e.g. 0.6",
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
        type=_positive_int("patch", 8),
        default=None,
        help="the paper's tube protocol: LR patch size (48)",
    )
    p.add_argument(
        "--stride", type=_positive_int("stride"), default=46, help="tube stride with --patch (46)"
    )
    p.add_argument(
        "--cell",
        type=_positive_int("cell", 4),
        default=32,
        help="routing patch size in LR pixels in full-frame mode (32)",
    )
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy")


def default_model() -> str:
    from skipvsr.weights import DEFAULT_MODEL, REGISTRY, CheckpointError, resolve

    for name in ("skipvsr-vimeo-bi", DEFAULT_MODEL):
        if name in REGISTRY:
            try:
                resolve(name)
                return name
            except CheckpointError:
                continue
    return DEFAULT_MODEL


def routing_kwargs(args: argparse.Namespace) -> dict:
    if args.policy != "learned" and args.budget is None:
        raise UsageError(f"--policy {args.policy} needs --budget (a MAC fraction)")
    if args.patch is not None and args.stride > args.patch:
        raise UsageError(f"--stride must be <= --patch, got {args.stride} > {args.patch}")
    mode = "patch" if args.patch is not None else "full"
    return {
        "threshold": args.threshold,
        "budget": args.budget,
        "policy": args.policy,
        "mode": mode,
        "patch": args.patch or 48,
        "stride": args.stride,
        "cell": args.cell,
        "seed": args.seed,
    }


def cmd_weights(args: argparse.Namespace) -> int:
    from skipvsr.weights import presence

    rows = presence()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        pub = ", ".join(f"{k} {v[0]:.2f}/{v[1]:.4f}" for k, v in r["published"].items())
        where = r["path"] or "absent"
        print(f"{r['name']:<20} {r['degradation']}  {r['train_set']:<22} {pub}")
        print(f"{'':<20} {where}")
    return 0


def cmd_macs(args: argparse.Namespace) -> int:
    from skipvsr import cost

    h, w = args.size
    out = cost.gmacs_per_frame(h, w)
    if args.budget is not None:
        out["budget"] = args.budget
        out["executed_block_fraction"] = cost.block_fraction_for_budget(args.budget)
        out["routed_gmacs_per_frame"] = out["gmacs_per_frame"] * args.budget
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{h}x{w} LR: {out['gmacs_per_frame']:.2f} GMAC/frame without SpyNet, "
            f"SpyNet +{out['spynet_gmacs_per_frame']:.2f}, residual blocks "
            f"{100 * out['block_share']:.1f} %"
        )
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    import skipvsr
    from skipvsr.streaming import upscale_media

    kwargs = routing_kwargs(args)
    if args.tile is not None:
        if kwargs["mode"] == "patch":
            raise UsageError("--tile and --patch both split frames: give one of them")
        # Tiles with a 16-pixel LR overlap, flow computed once per full frame.
        kwargs.update(mode="patch", patch=args.tile, stride=max(args.tile - 16, 1), tube_flow=False)
    model = skipvsr.load(
        args.model or default_model(), device=args.device, precision=args.precision
    )
    if (
        kwargs["policy"] == "learned"
        and not model.model.has_estimators
        and (kwargs["threshold"] > 0 or kwargs["budget"] is not None)
    ):
        raise UsageError(
            f"model {args.model or default_model()!r} has no confidence estimators: use "
            "--policy uniform|shallow|deep|random with --budget, or a SkipVSR model"
        )

    def upscale_fn(lr):
        sr, stats = model.upscale(lr, **kwargs)
        return sr, stats.as_dict()

    chunking = {}
    if args.chunk is not None:
        chunking["chunk"] = args.chunk
    if args.chunk_overlap is not None:
        chunking["overlap"] = args.chunk_overlap
    summary = upscale_media(
        args.input,
        args.output,
        upscale_fn,
        **chunking,
        max_frames=args.max_frames,
        start=args.start,
        crf=args.crf,
        codec=args.codec,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    if args.stats:
        Path(args.stats).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from skipvsr.video_io import format_info, probe

    print(format_info(probe(args.input)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skipvsr", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="x4 upscale a video file or a folder of frames")
    up.add_argument("input", help="video file (mp4, mkv, mov, webm, avi, ...) or frame folder")
    up.add_argument(
        "-o", "--output", required=True, help="output video (by extension) or folder of PNG frames"
    )
    add_routing_args(up)
    up.add_argument(
        "--chunk",
        type=_positive_int("chunk"),
        default=None,
        help="frames per chunk (default: measured, see README)",
    )
    up.add_argument(
        "--chunk-overlap",
        type=_positive_int("chunk-overlap", 0),
        default=None,
        help="warm-up frames on each side of a chunk, discarded",
    )
    up.add_argument(
        "--tile",
        type=_positive_int("tile", 16),
        default=None,
        help="spatial tile size in LR pixels for frames too large for memory",
    )
    up.add_argument("--max-frames", type=_positive_int("max-frames"), default=None)
    up.add_argument(
        "--start",
        type=_fraction("start", 0.0, float("inf")),
        default=0.0,
        help="start time in seconds",
    )
    up.add_argument("--crf", type=_positive_int("crf", 0), default=18)
    up.add_argument("--codec", default="libx264")
    up.add_argument("--overwrite", action="store_true", help="replace an existing output")
    up.add_argument("--quiet", action="store_true", help="no progress bar")
    up.add_argument("--stats", default=None, help="write run statistics as JSON")
    up.set_defaults(func=cmd_upscale)

    inf = sub.add_parser("info", help="streams, size, frames, fps and duration of a video")
    inf.add_argument("input")
    inf.set_defaults(func=cmd_info)

    wt = sub.add_parser("weights", help="list registered checkpoints and where they are")
    wt.add_argument("--json", action="store_true")
    wt.set_defaults(func=cmd_weights)

    mc = sub.add_parser("macs", help="analytic MACs per frame")
    mc.add_argument("--size", type=_size, default=(180, 320), help="LR HxW (180x320)")
    mc.add_argument("--budget", type=_budget, default=None)
    mc.add_argument("--json", action="store_true")
    mc.set_defaults(func=cmd_macs)

    for register in _extra_commands():
        register(sub)
    return p


def _extra_commands():
    """Subcommands that live beside their concept (evaluation, degradation, training)."""
    out = []
    for module, attr in (
        ("skipvsr.evaluate", "register"),
        ("skipvsr.degradation", "register"),
        ("skipvsr.training", "register"),
        ("skipvsr.demo", "register"),
    ):
        try:
            mod = __import__(module, fromlist=[attr])
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        if hasattr(mod, attr):
            out.append(getattr(mod, attr))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        if args.debug:
            raise
        print(f"skipvsr: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("skipvsr: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        if args.debug:
            raise
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"skipvsr: error: {text}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
