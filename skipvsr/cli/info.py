"""``skipvsr info``: streams, size, frames, fps and duration of a video or frame folder."""

from __future__ import annotations

import argparse

from skipvsr.video.io import format_info, probe


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="streams, size, frames, fps and duration of a video")
    p.add_argument("input")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(format_info(probe(args.input)))
    return 0
