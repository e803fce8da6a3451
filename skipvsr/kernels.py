"""What this machine offers the network: its CPU flags, skipvsr's cache folder, oneDNN's
convolutions with their activation fused (:func:`conv_leaky_relu`, and the channels-last
layouts they take), and fused CPU kernels for the passes around the convs, built for it once.

The kernels (``csrc/fused.cpp``) each do in one pass over channels-last maps what torch does in
several (AMX Xeon, 2 threads, 64 channels at 180x320 unless said):

* :func:`residual_add_`: the float32 stream ``h += update`` with a bf16 update (torch first
  casts the update to float32) and, optionally, the next block's bf16 copy of ``h`` inside its
  zero border (:meth:`skipvsr.routing.BlockConvs.update`): the add 1.06 -> 0.45 ms, add and
  cast 1.58 -> 0.65 ms, against a block's two convs of 3.6 ms. Bit for bit torch's numbers.
  Optionally it copies the update into a routed block's cache map with streamed
  (non-temporal) stores in the same pass (:meth:`skipvsr.routing.Router._cache_map`).
* :func:`shuffle_into_`: the upsampler's pixel shuffle of a channels-last conv output into a
  zero border, copying whole pixel rows. Bit for bit (a copy).
* :func:`gather_cells`, :func:`zero_outside_`, :func:`scatter_cells_`: a routed block's running
  cells as one batch through its two convs, rather than one conv pair per box of cells.
* :func:`warp_rows_`, :func:`warp_cells_`, :func:`warp_add_run_`: a map warped along a flow by
  its bilinear taps (:class:`skipvsr.flow.WarpPlan`; a float32 map may be rounded into a bf16
  one as it is written), the same on a routed block's skipped cells only, and a run of blocks
  skipped everywhere whose reused updates are warped and added into the float32 stream (the
  next block's input cast after them) in one pass over it, instead of embedding_bag's warp and
  an add per block (the warped caches streamed past the CPU's cache). Bit for bit the torch
  ops' numbers.
* :func:`warp_taps`: those taps (source rows and weights) from the flow's sampling grid, 0.28
  against 1.6 ms for the torch ops. Bit for bit.
* :func:`score_inputs`, :func:`refresh_cells_`: a routed block's estimator inputs (the strided
  cast of the stream, the warped cached input, their patch-mean difference) in one pass, and
  the cached input refreshed on the running patches in place. Bit for bit.

They are compiled with torch's C++ extension builder the first time they are needed (about
30 s; ``make install`` does it) into ``cache_dir() / "kernels"``, for x86-64 CPUs with AVX2.
Where they cannot be built (no compiler, another CPU) or with ``SKIPVSR_KERNELS=0``, the torch
ops run instead: the same numbers (the cell batches up to float summation order), slower.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""The CPU flags that decide the fast path (and that every timing records)."""

SOURCE = Path(__file__).parent / "csrc" / "fused.cpp"
ENV_SWITCH = "SKIPVSR_KERNELS"
"""Environment variable: ``0`` runs the torch ops instead of the fused kernels."""


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
    """Where the kernels are built: one folder per torch and Python version, since the binary is
    tied to both."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_dir() / "kernels" / f"torch-{torch.__version__}-{py}"


@functools.cache
def extension():
    """The compiled kernels' module, built on first use, or ``None`` where it is switched off
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
            log.warning("skipvsr: building the fused CPU kernels once (about 30 s) in %s", folder)
        return cpp_extension.load(
            "skipvsr_fused",
            [str(SOURCE)],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],  # ATen's parallel_for is OpenMP
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as err:  # no compiler, no ninja, a read-only cache: the torch ops serve
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        log.warning("skipvsr: fused CPU kernels unavailable, using torch ops (%s)", reason)
        return None


def _rows(x: torch.Tensor) -> bool:
    """Whether ``x`` ``(B, C, H, W)`` stores each pixel row as ``W * C`` contiguous values."""
    return x.dim() == 4 and x.stride(1) == 1 and x.stride(3) == x.shape[1]


def _inference_on_cpu(*maps: torch.Tensor) -> bool:
    return all(m.device.type == "cpu" for m in maps) and not (
        torch.is_grad_enabled() and any(m.requires_grad for m in maps)
    )


# -- oneDNN's fused convolutions and the layouts they take ---------------------------------


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` ``(N, C, H, W)`` is stored channels-last and not also contiguous (``C`` or
    ``H * W`` of 1 satisfies both layouts), so its pixels are rows of ``C`` values."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def inference_on_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a channels-last CPU map with autograd off: where oneDNN's fused and
    pre-padded convolutions apply."""
    return x.device.type == "cpu" and is_channels_last(x) and not torch.is_grad_enabled()


def fast_leaky_relu(x: torch.Tensor, negative_slope: float = 0.0) -> torch.Tensor:
    """``leaky_relu(x, negative_slope)`` for an activation nothing else holds: in place for
    float32, into a new tensor for bfloat16. torch's in-place clamp and leaky ReLU kernels are
    slow on bfloat16 (AMX Xeon, 2 threads: ``relu_`` 0.58 ms against ``relu`` 0.44 on a
    64x180x320 map; ``leaky_relu_`` 32.9 ms against 13.0 on 64x720x1280), while float32 is
    fastest in place (0.29 against 0.55 ms)."""
    inplace = x.dtype != torch.bfloat16
    if negative_slope == 0.0:
        return x.relu_() if inplace else x.relu()
    return F.leaky_relu(x, negative_slope, inplace=inplace)


@functools.cache
def onednn_fuses(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused convolution (``torch.ops.mkldnn._convolution_pointwise``) runs in
    ``dtype`` on this CPU: built with oneDNN and, for bfloat16, a CPU with oneDNN's bf16 path
    (AVX-512 BW/VL/DQ or AVX-NE-CONVERT). The op refuses bf16 elsewhere, where ``F.conv2d`` still
    computes it."""
    if not torch.backends.mkldnn.is_available():
        return False
    return dtype != torch.bfloat16 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def conv_leaky_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int, slope: float
) -> torch.Tensor:
    """``leaky_relu(conv2d(x, weight, bias, padding=padding), slope)`` (stride 1; ``slope`` 0 is
    ReLU) for ``x`` ``(B, C, H, W)``, in bf16 under a CPU bf16 autocast, else in ``x``'s dtype.

    Inference on channels-last CPU maps fuses the activation into oneDNN's convolution (a
    post-op on its float32 accumulator: for ReLU the same numbers, since rounding keeps the
    sign; for a LeakyReLU a bf16 result rounds once instead of twice). On an AMX Xeon (2
    threads) the 64x720x1280 upsampler activation took 13 ms of a 51 ms conv + LeakyReLU, fused
    39.8 ms; a residual block's ReLU 0.5 of a 2.35 ms conv + ReLU at 180x320, fused 2.03 ms.
    Anything else (NCHW as in the BasicSR parity, autograd, other devices, bf16 where oneDNN
    has no bf16 path: :func:`onednn_fuses`) runs the two ops."""
    dtype = torch.bfloat16 if torch.is_autocast_enabled("cpu") else x.dtype
    fused = inference_on_channels_last(x) and onednn_fuses(dtype)
    if not fused:
        return fast_leaky_relu(F.conv2d(x, weight, bias, padding=padding), slope)
    attr, scalars = ("relu", []) if slope == 0.0 else ("leaky_relu", [slope])
    return torch.ops.mkldnn._convolution_pointwise(
        x.to(dtype),
        weight.to(dtype),
        bias.to(dtype),
        [padding, padding],
        [1, 1],
        [1, 1],
        1,
        attr,
        scalars,
        "",
    )


def fuses(h: torch.Tensor, update: torch.Tensor) -> bool:
    """Whether :func:`residual_add_` runs the fused kernel for ``h`` and ``update``: float32
    ``h`` and a bf16 or float32 ``update`` of its shape, both channels-last CPU maps outside
    autograd, and the kernel built."""
    return (
        h.dtype == torch.float32
        and update.dtype in (torch.float32, torch.bfloat16)
        and h.shape == update.shape
        and _rows(h)
        and _rows(update)
        and _inference_on_cpu(h, update)
        and extension() is not None
    )


def residual_add_(
    h: torch.Tensor,
    update: torch.Tensor,
    cast_into: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """``h += update`` in place, and where ``cast_into`` is given, ``cast_into`` = ``h`` (after the
    add) rounded to its dtype; where ``keep`` is given, ``keep`` = ``update`` (a copy), or with
    ``accumulate`` ``keep += update`` (a group's total update). Returns ``h``.

    ``h`` ``(B, C, H, W)`` float32; ``update`` of its shape, bfloat16 or float32; ``cast_into``
    of its shape, any float dtype and strides (typically the inside of a zero-bordered bf16
    map); ``keep`` of its shape and ``update``'s dtype, not overlapping it. Channels-last CPU
    maps run the fused kernel (:func:`fuses`), which writes ``keep`` with non-temporal stores
    (around the CPU's cache: a routed block's cached update is read a frame later; an
    accumulated one with plain stores), anything else the torch ops, with the same result bit
    for bit."""
    fused = (
        fuses(h, update)
        and (cast_into is None or (cast_into.dtype == torch.bfloat16 and _rows(cast_into)))
        and (keep is None or (keep.dtype == update.dtype and _rows(keep)))
    )
    if not fused:
        if keep is not None and accumulate:
            keep.add_(update)
        elif keep is not None:
            keep.copy_(update)
        h.add_(update)
        if cast_into is not None:
            cast_into.copy_(h)
        return h
    extension().residual_add_(h, update, cast_into, keep, accumulate)
    return h


def shuffles(conv: torch.Tensor) -> bool:
    """Whether :func:`shuffle_into_` applies to ``conv``: a channels-last CPU map at inference,
    and the kernels built."""
    return _rows(conv) and _inference_on_cpu(conv) and extension() is not None


def shuffle_into_(conv: torch.Tensor, out: torch.Tensor, ring: int) -> None:
    """Write ``pixel_shuffle(conv, 2)`` inside the ``ring``-pixel border of ``out`` ``(B, c, 2H + 2
    ring, 2W + 2 ring)`` channels-last (the border is left as it is), for ``conv`` ``(B, 4c, H,
    W)`` channels-last of ``out``'s dtype whose channels are in (row, column, channel) order
    (:func:`skipvsr.backbone.conv_pixel_shuffle`). Only where :func:`shuffles`."""
    extension().shuffle_into_(conv, out, ring)


def batches_cells(h: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether a routed block can run its cells as one batch (:func:`gather_cells`,
    :func:`scatter_cells_`) from ``h`` into its update map ``out``: the maps the fused add takes
    (:func:`fuses`: float32 ``h``, a bf16 or float32 ``out`` of its shape, both channels-last
    CPU maps at inference, and the kernels built)."""
    return fuses(h, out)


def gather_cells(
    h: torch.Tensor, cells: torch.Tensor, size: int, halo: int, dtype: torch.dtype
) -> torch.Tensor:
    """The cells of ``h`` ``(B, C, H, W)`` float32 channels-last with a ``halo`` as one batch
    ``(N, C, size + 2 halo, size + 2 halo)`` channels-last in ``dtype`` (bf16 or float32), 0
    past the frame. ``cells`` ``(N, 3)`` int64: each cell's ``(b, y0, x0)``, its top-left
    pixel. Only where :func:`batches_cells`."""
    side = size + 2 * halo
    out = torch.empty(
        len(cells), h.shape[1], side, side, dtype=dtype, memory_format=torch.channels_last
    )
    extension().gather_cells_(h, cells, halo, out)
    return out


def zero_outside_(mid: torch.Tensor, cells: torch.Tensor, height: int, width: int, margin: int):
    """Set to 0 the pixels of the cell batch ``mid`` ``(N, C, S, S)`` that lie outside the
    ``height x width`` frame, pixel ``(0, 0)`` of cell ``i`` being frame pixel ``(y0 - margin,
    x0 - margin)`` (see :func:`gather_cells`)."""
    extension().zero_outside_(mid, cells, height, width, margin)


def scatter_cells_(updates: torch.Tensor, cells: torch.Tensor, out: torch.Tensor) -> None:
    """Write the cell batch ``updates`` ``(N, C, S, S)`` into ``out`` ``(B, C, H, W)`` (one dtype,
    channels-last) at the cells' pixels inside the frame."""
    extension().scatter_cells_(updates.contiguous(memory_format=torch.channels_last), cells, out)


def warps(x: torch.Tensor) -> bool:
    """Whether :func:`warp_rows_` takes ``x``: a contiguous channels-last CPU map at inference,
    bf16 with a multiple of 16 channels up to 256, or float32 with a multiple of 8 up to 256,
    and the kernels built."""
    channels = x.shape[1] if x.dim() == 4 else 0
    low = x.dtype == torch.bfloat16 and channels % 16 == 0
    return (
        (low or (x.dtype == torch.float32 and channels % 8 == 0))
        and 0 < channels <= 256
        and x.is_contiguous(memory_format=torch.channels_last)
        and _inference_on_cpu(x)
        and extension() is not None
    )


def warp_rows_(
    x: torch.Tensor,
    rows: torch.Tensor,
    weights: torch.Tensor,
    out: torch.Tensor,
    pixels: torch.Tensor | None = None,
) -> None:
    """``out`` = ``x`` warped by its bilinear taps, at ``pixels`` only where given.

    ``x`` ``(B, C, H, W)`` bf16 or float32 contiguous channels-last (:func:`warps`), ``out`` of
    its shape and dtype (bf16: contiguous channels-last; float32: pixel rows of ``C`` values
    that may lie a fixed stride apart, e.g. a channel slice of a wider channels-last map), or
    bf16 for a float32 ``x`` with a multiple of 16 channels (pixel rows as for float32: the
    float32 warp rounded as torch casts it);
    ``rows`` ``(B*H*W, 4)`` int64 source pixels and ``weights`` ``(B*H*W, 4)`` bilinear weights
    in ``x``'s dtype (:meth:`skipvsr.flow.WarpPlan.taps`); ``pixels`` ``(n,)`` int64 indices
    into the ``B*H*W`` pixels. embedding_bag's numbers: bf16 taps summed in float32 in their
    order and rounded half away from zero, float32 taps as fused multiply-adds in their order."""
    extension().warp_rows_(x, rows, weights, out, pixels)


def warp_cells_(
    x: torch.Tensor,
    rows: torch.Tensor,
    weights: torch.Tensor,
    out: torch.Tensor,
    mask: torch.Tensor,
    cell: int,
) -> None:
    """:func:`warp_rows_` on the pixels of the ``cell x cell`` patches where ``mask`` ``(B, nH,
    nW)`` bool is set (the last patches clipped to the frame), ``out`` elsewhere untouched.
    ``x`` as :func:`warps` takes it, ``out`` contiguous channels-last of its shape and dtype."""
    extension().warp_cells_(x, rows, weights, out, mask.contiguous(), cell)


def warp_add_run_(
    xs: list[torch.Tensor],
    rows: torch.Tensor,
    weights: torch.Tensor,
    h: torch.Tensor,
    cast_into: torch.Tensor | None = None,
    outs: list[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    """A run of blocks skipped everywhere, in order: for each cached update ``x`` of ``xs``
    (bf16, as :func:`warps` takes them, each of ``h``'s shape) its warp (:func:`warp_rows_`),
    added into the float32 stream ``h`` ``(B, C, H, W)`` contiguous channels-last, then
    ``cast_into`` = ``h`` rounded to bf16 where given. One pass over ``h`` for the run; bit for
    bit :func:`warp_rows_` block by block. Returns the warped updates, written into ``outs``
    where given (each of its ``x``'s shape and dtype, contiguous channels-last, 32-byte
    aligned: the kernel streams them past the CPU's cache), else new."""
    outs = [
        out if out is not None and out.data_ptr() % 32 == 0 else torch.empty_like(x)
        for x, out in zip(xs, outs or [None] * len(xs), strict=True)
    ]
    extension().warp_add_run_(xs, rows, weights, outs, h, cast_into)
    return outs


def builds_taps(grid: torch.Tensor) -> bool:
    """Whether :func:`warp_taps` takes ``grid``: a contiguous float32 CPU grid at inference, and
    the kernels built."""
    return (
        grid.dtype == torch.float32
        and grid.dim() == 4
        and grid.is_contiguous()
        and _inference_on_cpu(grid)
        and extension() is not None
    )


def warp_taps(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear taps of a ``grid_sample`` grid ``(N, H, W, 2)`` (``align_corners=True``): source
    rows ``(N, H, W, 4)`` int64 into the ``(N * H * W, C)`` pixel table and their weights
    ``(N, H, W, 4)`` float32 (nw, ne, sw, se; 0 outside the frame), the numbers of
    :meth:`skipvsr.flow.WarpPlan.taps`' torch ops in one pass. Where :func:`builds_taps`."""
    rows = torch.empty(*grid.shape[:3], 4, dtype=torch.int64)
    weights = torch.empty(*grid.shape[:3], 4, dtype=torch.float32)
    extension().warp_taps_(grid, rows, weights)
    return rows, weights


def score_inputs(
    h: torch.Tensor,
    stride: int,
    prev: torch.Tensor,
    rows: torch.Tensor,
    weights: torch.Tensor,
    cell: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A warped-difference estimator's inputs for the float32 stream ``h`` ``(B, C, H, W)``
    channels-last: ``fresh`` = ``h[:, :, ::stride, ::stride]`` cast to bf16, ``warped`` = the
    cached input ``prev`` ``(B, C, ceil(H / stride), ceil(W / stride))`` bf16 warped by its taps
    ``rows`` and ``weights`` (as :func:`warp_rows_`), and ``pooled`` ``(B, C, nH, nW)`` bf16 =
    the mean of ``|fresh - warped|`` over each ``cell x cell`` patch of those maps (the last
    ones clipped), all channels-last: torch's cast, subtraction, ``abs`` and ``avg_pool2d``
    (``ceil_mode``, ``count_include_pad=False``) bit for bit. Where :func:`warps` takes
    ``prev`` and :func:`fuses` would take ``h``."""
    b, c = prev.shape[:2]
    fresh = torch.empty_like(prev, memory_format=torch.channels_last)
    warped = torch.empty_like(prev, memory_format=torch.channels_last)
    rows_n, cols_n = -(-prev.shape[2] // cell), -(-prev.shape[3] // cell)
    pooled = torch.empty(
        b,
        c,
        rows_n,
        cols_n,
        dtype=prev.dtype,
        device=prev.device,
        memory_format=torch.channels_last,
    )
    extension().score_inputs_(h, stride, prev, rows, weights, cell, fresh, warped, pooled)
    return fresh, warped, pooled


def refreshes(prev: torch.Tensor, fresh: torch.Tensor) -> bool:
    """Whether :func:`refresh_cells_` takes ``prev`` and ``fresh``: contiguous channels-last CPU
    maps of one shape and dtype at inference, and the kernels built."""
    return (
        prev.shape == fresh.shape
        and prev.dtype == fresh.dtype
        and prev.dim() == 4
        and prev.is_contiguous(memory_format=torch.channels_last)
        and fresh.is_contiguous(memory_format=torch.channels_last)
        and _inference_on_cpu(prev, fresh)
        and extension() is not None
    )


def refresh_cells_(prev: torch.Tensor, fresh: torch.Tensor, run: torch.Tensor, cell: int) -> None:
    """``prev = where(run, fresh, prev)`` in place, ``run`` ``(B, nH, nW)`` bool per ``cell x
    cell`` patch of the ``(B, C, H, W)`` maps (the last patches clipped). Where
    :func:`refreshes`."""
    extension().refresh_cells_(prev, fresh, run.contiguous(), cell)


def main() -> int:
    """Build the kernels now (``make install`` runs this) and say whether they loaded."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ok = extension() is not None
    print(f"skipvsr fused CPU kernels: {'ready in ' + str(build_dir()) if ok else 'not used'}")
    return 0
