"""What this machine offers the network: its CPU flags, skipvsr's cache folder, and the fused
CPU kernel of the residual stream, built for it once.

The kernel (``csrc/residual.cpp``) does in one pass over a channels-last map what a residual
block in ``mixed`` precision otherwise does in three: the float32 stream ``h += update`` with a
bf16 update (torch first casts the update to float32) and, optionally, the next block's bf16
copy of ``h`` inside its zero border (:meth:`skipvsr.routing.BlockConvs.update`). Its rounding is
torch's, so every output is bit for bit that of the torch ops it replaces. AMX Xeon, 2 threads,
64x180x320: the add 1.06 -> 0.45 ms, add and cast 1.58 -> 0.65 ms, against a block's two convs
of 3.6 ms.

It is compiled with torch's C++ extension builder the first time it is needed (about 30 s; ``make
install`` does it) into ``cache_dir() / "kernels"``, for x86-64 CPUs with AVX2. Where it cannot be
built (no compiler, another CPU) or with ``SKIPVSR_KERNELS=0``, the torch ops run instead: the
same numbers, slower.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""The CPU flags that decide the fast path (and that every timing records)."""

SOURCE = Path(__file__).parent / "csrc" / "residual.cpp"
ENV_SWITCH = "SKIPVSR_KERNELS"
"""Environment variable: ``0`` runs the torch ops instead of the fused kernel."""


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """Those of :data:`SIMD_FLAGS` that ``cpuinfo`` lists, in that order."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(f for f in SIMD_FLAGS if f in flags)


def cache_dir() -> Path:
    """skipvsr's cache folder: ``$SKIPVSR_CACHE`` or ``~/.cache/skipvsr``."""
    return Path(os.environ.get("SKIPVSR_CACHE", Path.home() / ".cache" / "skipvsr"))


def build_dir() -> Path:
    """Where the kernel is built: one folder per torch and Python version, since the binary is
    tied to both."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_dir() / "kernels" / f"torch-{torch.__version__}-{py}"


@functools.cache
def extension():
    """The compiled kernel module, built on first use, or ``None`` where it is switched off
    (:data:`ENV_SWITCH`), the CPU is not x86-64 with AVX2, or the build fails (logged once)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    if platform.machine().lower() not in ("x86_64", "amd64") or "avx2" not in cpu_flags():
        return None
    try:
        from torch.utils import cpp_extension

        folder = build_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if not any(folder.glob("*.so")):
            log.warning("skipvsr: building the fused CPU kernel once (about 30 s) in %s", folder)
        return cpp_extension.load(
            "skipvsr_residual",
            [str(SOURCE)],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],  # ATen's parallel_for is OpenMP
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as err:  # no compiler, no ninja, a read-only cache: the torch ops serve
        log.warning("skipvsr: fused CPU kernel unavailable, using torch ops (%s)", err)
        return None


def _rows(x: torch.Tensor) -> bool:
    """Whether ``x`` ``(B, C, H, W)`` stores each pixel row as ``W * C`` contiguous values."""
    return x.dim() == 4 and x.stride(1) == 1 and x.stride(3) == x.shape[1]


def fuses(h: torch.Tensor, update: torch.Tensor) -> bool:
    """Whether :func:`residual_add_` runs the fused kernel for ``h`` and ``update``: float32
    ``h`` and a bf16 or float32 ``update`` of its shape, both channels-last CPU maps outside
    autograd, and the kernel built."""
    return (
        h.device.type == "cpu"
        and h.dtype == torch.float32
        and update.dtype in (torch.float32, torch.bfloat16)
        and update.device.type == "cpu"
        and h.shape == update.shape
        and not (torch.is_grad_enabled() and (h.requires_grad or update.requires_grad))
        and _rows(h)
        and _rows(update)
        and extension() is not None
    )


def residual_add_(
    h: torch.Tensor, update: torch.Tensor, cast_into: torch.Tensor | None = None
) -> torch.Tensor:
    """``h += update`` in place, and where ``cast_into`` is given, ``cast_into`` = ``h`` (after the
    add) rounded to its dtype. Returns ``h``.

    ``h`` ``(B, C, H, W)`` float32; ``update`` of its shape, bfloat16 or float32; ``cast_into``
    of its shape, any float dtype and strides (typically the inside of a zero-bordered bf16
    map). Channels-last CPU maps run the fused kernel (:func:`fuses`), anything else the torch
    ops, with the same result bit for bit."""
    fused = fuses(h, update) and (
        cast_into is None or (cast_into.dtype == torch.bfloat16 and _rows(cast_into))
    )
    if not fused:
        h.add_(update)
        if cast_into is not None:
            cast_into.copy_(h)
        return h
    extension().residual_add_(h, update, cast_into)
    return h


def main() -> int:
    """``python -m skipvsr.kernels``: build the kernel now (``make install`` runs this) and say
    whether it loaded."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ok = extension() is not None
    print(f"skipvsr fused CPU kernel: {'ready in ' + str(build_dir()) if ok else 'not used'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
