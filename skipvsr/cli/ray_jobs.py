"""``skipvsr upscale --ray [ADDRESS]``: videos, and chunk ranges of long videos, as Ray tasks.

Ray is optional (``pip install 'skipvsr[ray]'``) and imported here only when ``--ray`` is
given. Each task renders a range of chunks with :func:`render_chunks` (every chunk with its
warm-up frames, exactly the windows of the single-process run) on one CPU and one thread, and
returns the upscaled frames through Ray's object store. The driver keeps each returned chunk
as a segment of the output's job (:mod:`skipvsr.video.job`) as soon as it arrives, then
encodes every output from its segments the way a resumed job does; so the file is the one a
single process writes, and a killed driver can be resumed like any job. A task whose worker
dies is run again by Ray (``max_retries``); nothing here retries.

Workers read the inputs by path: on a cluster, inputs must lie at the same path on every node
(a shared file system); only the driver writes.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from skipvsr.api import Upscaler, UpscaleStats
from skipvsr.cli.args import FAILURES, UsageError
from skipvsr.cli.jobs import (
    Outcome,
    check_memory,
    chunk_args,
    codec_for,
    make_job,
    merged_stats,
    model_fn,
    one_line,
    upscale_one,
)
from skipvsr.routing import Route
from skipvsr.video.io import check_output
from skipvsr.video.job import Resumable
from skipvsr.video.streaming import EncodeOptions, expected_chunks, render_chunks, stream_settings

MAX_RETRIES = 3  # Ray's retries of a task whose worker died


def import_ray():
    """The ``ray`` module, or a usage error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--ray needs Ray: pip install 'skipvsr[ray]' (or make ray), or run without --ray"
        ) from None
    return ray


def connect(ray, address: str) -> None:
    """Join the cluster at ``address`` (``""``: start a local Ray) unless already joined."""
    if not ray.is_initialized():
        ray.init(
            address=address or None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )


def render_range(model: Upscaler, args: argparse.Namespace, route: Route, src: str,
                 first: int, last: int | None) -> list:  # fmt: skip
    """Ray task body: chunks ``first..last`` of ``src`` as ``(index, images, stamps, stats)``."""
    torch.set_num_threads(1)
    return list(render_chunks(src, model_fn(model, args, route), first, last, **chunk_args(args)))


def ranges(done: int, total: int | None, pieces: int) -> list[tuple[int, int | None]]:
    """Chunk ranges ``[first, last)`` covering ``done..total`` in about ``pieces`` tasks; the
    last is open (``None``) in case the container's frame count was short."""
    if total is None or total - done <= 1 or pieces <= 1:
        return [(done, None)]
    size = -(-(total - done) // pieces)
    firsts = list(range(done, total, size))
    return [(f, f + size) for f in firsts[:-1]] + [(firsts[-1], None)]


def begin(src: Path, dst: Path, model: Upscaler, args, settings: dict):
    """Check ``src -> dst`` and start (or continue) its job on the driver; returns the job, the
    number of chunks already done and the expected number in all (``None``: unknown)."""
    check_output(dst, overwrite=args.overwrite)
    check_memory(src, model, args)
    job = make_job(dst, settings, args)
    chunking = chunk_args(args)
    encode = EncodeOptions(codec=codec_for(args, dst), crf=args.crf)
    done = job.begin(src, stream_settings(**chunking, fps=None, encode=encode, scale=4),
                     args.overwrite)  # fmt: skip
    total = expected_chunks(src, chunking["chunk"], max_frames=args.max_frames, start=args.start)
    return job, len(done), total


def run_on_ray(pairs, model: Upscaler, route: Route, args, settings: dict) -> list:
    """Every ``(input, output)`` pair through Ray; one :class:`Outcome` each, in order."""
    ray = import_ray()
    connect(ray, args.ray)
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(render_range)
    settings = {**settings, "threads": 1}
    model_ref = ray.put(model)
    t0 = time.perf_counter()
    outcomes: dict[int, Outcome] = {}
    jobs: dict[int, tuple[Resumable, int, int | None]] = {}  # job, chunks done, chunks in all
    for k, (src, dst) in enumerate(pairs):
        if dst.exists() and not args.overwrite:
            outcomes[k] = Outcome(str(src), str(dst), "skipped", message="output exists")
            continue
        try:
            jobs[k] = begin(src, dst, model, args, settings)
        except FAILURES as e:
            outcomes[k] = Outcome(str(src), str(dst), "failed", message=one_line(e))
    # As many tasks as CPUs: few videos are cut into chunk ranges, many run whole.
    pieces = -(-int(ray.cluster_resources().get("CPU", 1)) // max(len(jobs), 1))
    pending = {}
    for k, (_, done, total) in jobs.items():
        for first, last in ranges(done, total, pieces):
            pending[task.remote(model_ref, args, route, str(pairs[k][0]), first, last)] = k
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        k = pending.pop(ref)
        if k in outcomes:
            continue
        try:
            for index, images, stamps, stats in ray.get(ref):
                jobs[k][0].save(index, images, stamps, stats)
        except ray.exceptions.RayTaskError as e:
            src, dst = pairs[k]
            outcomes[k] = Outcome(str(src), str(dst), "failed", message=one_line(e.cause or e))
            jobs[k][0].abandon()
    resume = argparse.Namespace(**{**vars(args), "resume": True})
    for k in jobs:
        if k in outcomes:
            continue
        src, dst = pairs[k]
        try:
            summary = upscale_one(src, dst, model, route, resume, settings)
        except FAILURES as e:
            outcomes[k] = Outcome(str(src), str(dst), "failed", message=one_line(e))
            continue
        stats: UpscaleStats = merged_stats(summary)
        outcomes[k] = Outcome(str(src), str(dst), "done", summary.frames,
                              time.perf_counter() - t0, stats.mac_fraction,
                              "; ".join(summary.messages))  # fmt: skip
    return [outcomes[k] for k in range(len(pairs))]
