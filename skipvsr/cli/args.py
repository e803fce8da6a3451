"""Argument types and helpers shared by the commands, and the usage error (exit code 2)."""

from __future__ import annotations

import argparse

import av

from skipvsr.api import PRECISIONS
from skipvsr.cost import block_fraction_for_budget
from skipvsr.routing import ESTIMATOR_STRIDE, FRAME_CELL, POLICIES, ROTATE_GROUP, SKIP_OUTPUTS
from skipvsr.weights import DEFAULT_MODEL, REGISTRY, CheckpointError, resolve


class UsageError(ValueError):
    """A bad argument value: exit code 2."""


# What bad input, a bad checkpoint or a full disk raise: one line and exit code 1 (one input of
# a batch fails and the others go on). av's errors that are neither OSError nor ValueError come
# from a damaged file or a muxer that refuses a stream.
FAILURES = (ValueError, OSError, RuntimeError, av.error.FFmpegError)


def fraction(name: str, low: float = 0.0, high: float = 1.0, high_open: bool = False):
    """Parser of one number in ``[low, high]`` (``[low, high)`` with ``high_open``)."""

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


def floats(name: str, low: float, high: float, high_open: bool = False):
    """Parser of a comma list of numbers, each checked like :func:`fraction`."""
    one = fraction(name, low, high, high_open)

    def parse(text: str) -> list[float]:
        return [one(part) for part in text.split(",")]

    return parse


def budget(text: str) -> float:
    """A MAC fraction the official network can reach (at least its non-block floor)."""
    v = fraction("budget")(text)
    try:
        block_fraction_for_budget(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return v


def positive_int(name: str, minimum: int = 1):
    """Parser of an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {v}")
        return v

    return parse


def cell_size(text: str) -> int:
    """Parser of ``--cell``: a routing patch size in LR pixels (>= 4), or ``frame`` for
    :data:`skipvsr.routing.FRAME_CELL` (every frame one patch)."""
    if text == "frame":
        return FRAME_CELL
    try:
        cell = int(text)
    except ValueError:
        cell = 0
    if cell < 4:
        raise argparse.ArgumentTypeError(f"cell must be an integer >= 4 or 'frame', got {text!r}")
    return cell


CELL_HELP = (
    "routing patch size in LR pixels in full-frame mode (default 32), or 'frame': each block "
    "runs on the whole frame or not at all, which costs 0.13 dB on Vid4 at 0.63 but takes 0.92 "
    "of the 32-pixel routing's time on 2 threads (README: patches or whole frames)"
)


def policies(text: str) -> list[str]:
    """A comma list of routing policies."""
    out = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in out if p not in POLICIES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"policies must be from {', '.join(POLICIES)}: {text!r}")
    return out


def default_model() -> str:
    """The shipped SkipVSR model if its file is present, else the official BasicVSR."""
    for name in ("skipvsr-vimeo-bi", DEFAULT_MODEL):
        if name in REGISTRY:
            try:
                resolve(name)
                return name
            except CheckpointError:
                continue
    return DEFAULT_MODEL


def add_skip_args(p: argparse.ArgumentParser) -> None:
    """``--skip``, ``--refresh``, ``--estimator-stride`` and ``--group``: what a skipped block
    gives, full-cost refresh frames, how much of the map the estimator reads, and how many
    consecutive blocks ``rotate`` runs and skips together."""
    p.add_argument(
        "--skip",
        choices=SKIP_OUTPUTS,
        default=None,
        help="what a skipped block gives: reuse = its last update warped by the flow, identity ="
        " nothing (the paper's skip); default: the one the model was trained with (reuse for"
        " models without a record)",
    )
    p.add_argument(
        "--refresh",
        type=positive_int("refresh", 0),
        default=0,
        help="run every N-th frame fully, counted in the budget (0 = never, default)",
    )
    p.add_argument(
        "--estimator-stride",
        type=positive_int("estimator-stride"),
        default=None,
        help=f"the confidence estimator reads every N-th row and column of its input (default"
        f" {ESTIMATOR_STRIDE}, or the largest divisor of it that divides the cell: a sixteenth"
        " of the map, faster, within 0.01 dB of 2 on Vid4; 1: the paper's)",
    )
    p.add_argument(
        "--group",
        type=positive_int("group"),
        default=None,
        help=f"--policy rotate: run and skip blocks in groups of N consecutive blocks (N divides"
        f" the trunk's 30 blocks); a skipped group adds its last total update, warped, in one"
        f" pass (default {ROTATE_GROUP}; 1: block by block)",
    )


def add_device_args(p: argparse.ArgumentParser, precision: str = "auto") -> None:
    """``--precision`` (default ``precision``) and ``--device``."""
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=precision,
        help=f"default {precision}. auto: on a CPU with native bf16 (avx512_bf16/amx_bf16), the "
        "fastest of bf16 | mixed (bf16 blocks, upsampler and input convs' features; fp32 stream "
        "and LR frame) that meets the quality bar (>= 55 dB from fp32, <= 0.02 dB on Vid4), "
        "else fp32",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
