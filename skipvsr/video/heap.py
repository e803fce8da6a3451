"""glibc's heap, controlled for long upscaling jobs (every function is a no-op without glibc).

* :func:`tune_allocator`: the process-wide setting, called once by the entry points.
* :func:`release_free_memory`: hand the heap's free memory back; the pipeline calls it between
  chunks.
* :func:`filled_heap`: fill new blocks with a fixed byte while an encoder runs, so that its
  output does not depend on what the heap held before.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from collections.abc import Iterator


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, loaded once (``None`` elsewhere: every control here is then a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator(fast: bool = True) -> None:
    """Set glibc's allocator for a long upscaling job (no-op without glibc).

    ``fast`` (what the commands use): every buffer comes from a heap that is not trimmed after
    every free (nothing is mmapped), so the model's feature maps reuse freed memory instead of
    being page-faulted and zeroed afresh (the full network ran 1.65x faster on 2 threads than
    with mmapped buffers: README, Speed). Memory that the heap holds free goes back to the
    system once per chunk (:func:`release_free_memory`), so peak RSS stays flat on long videos.

    ``fast=False``: every buffer of 64 KiB or more is mmapped and unmapped on free, so RSS
    follows live memory exactly, at that speed cost.

    The setting holds for the whole process, so entry points (the commands) call this, once.
    """
    libc = _libc()
    if libc is None:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold, m_mmap_max = -1, -2, -3, -4
    if not fast:
        libc.mallopt(m_mmap_threshold, 64 * 1024)
        return
    # Never mmap: glibc mmaps a request over the threshold only when no free heap block fits,
    # and routing's cached maps fragment the heap, so the upsampler's largest buffers were
    # mmapped and page-faulted afresh on every routed frame (learned routing at 0.63, 5
    # frames at 180x320, 2 threads: 260-350k minor faults and 8.8-9.2 s; 0 and 8.0-8.1 s
    # without). The heap grows instead and the per-chunk release hands it back.
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)
    libc.mallopt(m_top_pad, 256 * 1024 * 1024)


def release_free_memory() -> None:
    """Give the memory glibc's heap holds free back to the system (``malloc_trim``); the
    pipeline calls it between chunks, where a reusing heap is at its emptiest."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


_M_PERTURB = -6  # glibc mallopt parameter
_FILL_BYTE = 0xA5
_fill_lock = threading.Lock()
_fill_depth = 0


@contextlib.contextmanager
def filled_heap() -> Iterator[None]:
    """While inside, every block glibc hands out is filled with a fixed byte (``M_PERTURB``).

    libx264 reads bytes of its own buffers that it never wrote: with the encoder's input
    identical bit for bit, a 176x96 routing video's first packet differed between two runs of
    the same job about one run in three when the heap reused freed memory, and never with the
    fill. So encoding runs inside this, and a resumed or Ray job reproduces an uninterrupted
    one. Only here, not for the whole process: filling every feature map the model allocates
    cost 31-40 % of the full network's time (README, Speed). Nests across threads; restores
    ``MALLOC_PERTURB_`` from the environment on the way out.
    """
    global _fill_depth
    libc = _libc()
    if libc is None:
        yield
        return
    with _fill_lock:
        _fill_depth += 1
        if _fill_depth == 1:
            libc.mallopt(_M_PERTURB, _FILL_BYTE)
    try:
        yield
    finally:
        with _fill_lock:
            _fill_depth -= 1
            if _fill_depth == 0:
                libc.mallopt(_M_PERTURB, int(os.environ.get("MALLOC_PERTURB_", "0") or 0))
