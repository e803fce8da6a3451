"""Optical flow: SpyNet (Ranjan & Black, 2017) and backward warping.

Both follow the numerics of the official BasicVSR release so that the official checkpoints
reproduce their published outputs: the sampling grid is built in float32 pixel coordinates and
normalised with ``align_corners=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from skipvsr import kernels
from skipvsr.kernels import is_channels_last

SPYNET_LEVELS = 6
"""Pyramid levels of SpyNet; inputs are resized to a multiple of 2**(levels-1) = 32."""

SPYNET_MULTIPLE = 2 ** (SPYNET_LEVELS - 1)


def pixel_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates ``(1, H, W, 2)`` float32, last dim (x, y)."""
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1).unsqueeze(0)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Warp ``x`` backwards along ``flow`` with bilinear sampling.

    Args:
        x: ``(N, C, H, W)`` features or images, any float dtype.
        flow: ``(N, 2, H, W)`` displacement in pixels (channel 0 = x, 1 = y).
        padding_mode: ``"zeros"`` (feature propagation) or ``"border"`` (SpyNet).

    Returns:
        ``(N, C, H, W)`` in ``x``'s dtype: ``out[p] = x[p + flow[p]]``.

    The grid is always built in float32: in bfloat16, pixel coordinates above 256 round to
    even integers and the warp loses most of its accuracy.
    """
    out = F.grid_sample(
        x.float(),
        sampling_grid(flow),
        mode="bilinear",
        padding_mode=padding_mode,
        align_corners=True,
    )
    return out.to(x.dtype)


def sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """The normalised ``grid_sample`` grid ``(N, H, W, 2)`` float32 (``align_corners=True``,
    last dim (x, y) in [-1, 1] inside the frame) that samples ``x[p + flow[p]]``."""
    _, _, h, w = flow.shape
    coords = pixel_grid(h, w, flow.device) + flow.float().permute(0, 2, 3, 1)
    gx = 2.0 * coords[..., 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * coords[..., 1] / max(h - 1, 1) - 1.0
    return torch.stack((gx, gy), dim=-1)


Box = tuple[slice | list[int], int, int, int, int]
"""An output box ``(batch, y0, y1, x0, x1)``: batch elements (a slice or a list of indices)
and a pixel rectangle, ends exclusive."""


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(N, C, H, W)`` contiguous channels-last as a ``(N * H * W, C)`` view of its pixels
    in (n, y, x) order; raises ``ValueError`` for any other layout, where a reshape would copy
    and writes into it would be lost."""
    if not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"x must be contiguous channels-last, got strides {x.stride()}")
    return x.permute(0, 2, 3, 1).view(-1, x.shape[1])


class WarpPlan:
    """``flow_warp(x, flow)`` (zero padding) for many ``x`` along one flow, set up once.

    Every cached map of one frame in one routed branch is warped along the same flow, so the
    sampling grid (and, for channels-last maps, the bilinear taps) is built once per frame.

    * NCHW maps go through ``grid_sample`` on the stored grid: bit-identical to
      :func:`flow_warp`.
    * Channels-last maps are gathered as rows of ``C`` contiguous values with
      ``embedding_bag`` (four weighted taps per pixel, in float32, or in bfloat16 for a
      bfloat16 map, which halves the bytes moved); on CPU this is ~5x faster than
      ``grid_sample`` and differs from it by float rounding only. Out-of-frame taps get
      weight 0, which is ``grid_sample``'s zero padding.

    Args:
        flow: ``(N, 2, H, W)`` displacement in pixels (channel 0 = x, 1 = y).
    """

    def __init__(self, flow: torch.Tensor) -> None:
        self.shape = (flow.shape[0], flow.shape[2], flow.shape[3])
        self.grid = sampling_grid(flow)
        self._taps: tuple[torch.Tensor, torch.Tensor] | None = None
        self._low_weights: torch.Tensor | None = None

    def taps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Source rows ``(N, H, W, 4)`` int64 into ``x`` viewed as ``(N*H*W, C)`` and their
        bilinear weights ``(N, H, W, 4)`` float32 (nw, ne, sw, se), 0 for taps outside."""
        if self._taps is None and kernels.builds_taps(self.grid):
            self._taps = kernels.warp_taps(self.grid)
        if self._taps is None:
            n, h, w = self.shape
            # grid_sample's own unnormalisation (align_corners=True), so both agree to rounding
            ix = (self.grid[..., 0] + 1) * ((w - 1) / 2)
            iy = (self.grid[..., 1] + 1) * ((h - 1) / 2)
            x0, y0 = ix.floor(), iy.floor()
            fx, fy = ix - x0, iy - y0
            base = (torch.arange(n, device=ix.device) * (h * w)).view(n, 1, 1)
            rows, weights = [], []
            for dy, wy in ((0, 1 - fy), (1, fy)):
                for dx, wx in ((0, 1 - fx), (1, fx)):
                    xi, yi = x0 + dx, y0 + dy
                    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
                    weights.append(torch.where(inside, wy * wx, 0.0))
                    yx = yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)
                    rows.append(base + yx.long())
            self._taps = (torch.stack(rows, -1), torch.stack(weights, -1))
        return self._taps

    def _weights(self, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`taps`' weights ``(N, H, W, 4)`` in ``dtype``: bf16 (cast once, for gathers of
        bf16 maps), else float32."""
        weights = self.taps()[1]
        if dtype != torch.bfloat16:
            return weights
        if self._low_weights is None:
            self._low_weights = weights.to(torch.bfloat16)
        return self._low_weights

    def _rows_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`taps` and the table of ``x`` ``(N, C, H, W)`` channels-last that they index,
        ``(N*H*W, C)``: bfloat16 maps are gathered in bfloat16 (with bf16 weights), anything else
        in float32."""
        table = x if x.dtype == torch.bfloat16 else x.float()
        rows = self.taps()[0]
        return rows, self._weights(x.dtype), table.permute(0, 2, 3, 1).reshape(-1, x.shape[1])

    def _gather(self, x: torch.Tensor, b, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Warped ``x`` on one box as ``(n, y1-y0, x1-x0, C)`` rows (channels-last path), in
        ``x``'s dtype (:meth:`_rows_of`)."""
        rows, weights, table = self._rows_of(x)
        idx = rows[b, y0:y1, x0:x1]
        out = F.embedding_bag(
            idx.reshape(-1, 4),
            table,
            per_sample_weights=weights[b, y0:y1, x0:x1].reshape(-1, 4),
            mode="sum",
        )
        return out.view(*idx.shape[:-1], x.shape[1]).to(x.dtype)

    def kernel_taps(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`taps` as ``(N*H*W, 4)`` rows and weights in ``dtype`` (bf16 or float32), for
        :func:`kernels.warp_rows_` on a map of that dtype."""
        return self.taps()[0].view(-1, 4), self._weights(dtype).view(-1, 4)

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Warped ``x`` ``(N, C, H, W)``, same dtype and memory format; written into ``out`` (a
        contiguous channels-last map of ``x``'s shape and dtype) where the warp kernel takes
        ``x`` and ``out`` is given, else new."""
        n, h, w = self.shape
        if kernels.warps(x):
            if out is None or not (
                out.shape == x.shape and out.dtype == x.dtype and kernels.warps(out)
            ):
                out = torch.empty_like(x, memory_format=torch.channels_last)
            kernels.warp_rows_(x, *self.kernel_taps(x.dtype), out)
            return out
        if is_channels_last(x):
            return self._gather(x, slice(None), 0, h, 0, w).permute(0, 3, 1, 2)
        out = F.grid_sample(
            x.float(), self.grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        return out.to(x.dtype)

    def warp_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """Write the warped ``x`` ``(N, C, H, W)`` into ``out`` of its shape, e.g. a channel
        slice of a wider channels-last map: straight from the float32 warp kernel where
        :func:`skipvsr.kernels.warps` takes ``x`` (the trunk's input then needs no concatenation:
        3 ms a frame at 180x320), rounded as it writes a bf16 ``out``, else through
        ``self(x)``. Equal to ``self(x).to(out.dtype)``."""
        low = out.dtype == torch.bfloat16 and x.shape[1] % 16 == 0
        if kernels.warps(x) and x.dtype == torch.float32 and (out.dtype == torch.float32 or low):
            kernels.warp_rows_(x, *self.kernel_taps(x.dtype), out)
            return
        out.copy_(self(x))

    def warp_pixels(self, x: torch.Tensor, out: torch.Tensor, pixels: torch.Tensor) -> None:
        """Write the warped ``x`` into ``out`` (both ``(N, C, H, W)`` contiguous channels-last)
        at ``pixels`` only, int64 indices into the ``N * H * W`` pixels in (n, y, x) order:
        one gather for all of them, where :meth:`warp_boxes` makes one per box (and a routed
        block's skipped cells make many boxes). Equal there to ``self(x)``."""
        if kernels.warps(x) and out.dtype == x.dtype and kernels.warps(out):
            kernels.warp_rows_(x, *self.kernel_taps(x.dtype), out, pixels)
            return
        rows, weights, table = self._rows_of(x)
        warped = F.embedding_bag(
            rows.view(-1, 4).index_select(0, pixels),
            table,
            per_sample_weights=weights.view(-1, 4).index_select(0, pixels),
            mode="sum",
        )
        pixel_rows(out).index_copy_(0, pixels, warped.to(x.dtype).to(out.dtype))

    def warp_add_(
        self,
        xs: list[torch.Tensor],
        h: torch.Tensor,
        cast_into: torch.Tensor | None = None,
        outs: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Each of ``xs`` (maps of ``h``'s shape ``(N, C, H, W)``) warped as ``self(x)`` and added
        into ``h`` in place, one after another (:func:`skipvsr.kernels.residual_add_`), casting
        ``h`` after the last add into ``cast_into`` where given; returns the warped maps. In
        one pass over ``h`` where :func:`skipvsr.kernels.warps` takes every map as bf16 and
        ``h`` is a contiguous channels-last float32 map (:func:`kernels.warp_add_run_`), else
        warp by warp and add by add. ``outs``: maps for the warped ones (each of its ``x``'s
        shape and dtype, contiguous channels-last), else new."""
        outs = outs or [None] * len(xs)
        fused = (
            all(kernels.warps(x) and x.dtype == torch.bfloat16 and x.shape == h.shape for x in xs)
            and h.dtype == torch.float32
            and h.is_contiguous(memory_format=torch.channels_last)
        )
        if fused:
            return kernels.warp_add_run_(xs, *self.kernel_taps(torch.bfloat16), h, cast_into, outs)
        warped = [self(x, out) for x, out in zip(xs, outs, strict=True)]
        for i, u in enumerate(warped):
            kernels.residual_add_(h, u, cast_into if i == len(warped) - 1 else None)
        return warped

    def warp_boxes(self, x: torch.Tensor, out: torch.Tensor, boxes: list[Box]) -> None:
        """Write the warped ``x`` into ``out`` (both ``(N, C, H, W)``) on ``boxes`` only: the
        cost follows the boxes' area. Equal there to ``self(x)``."""
        for b, y0, y1, x0, x1 in boxes:
            if is_channels_last(x) and is_channels_last(out):
                out.permute(0, 2, 3, 1)[b, y0:y1, x0:x1] = self._gather(x, b, y0, y1, x0, x1)
                continue
            warped = F.grid_sample(
                x[b].float(),
                self.grid[b, y0:y1, x0:x1],
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )
            out[b, :, y0:y1, x0:x1] = warped.to(out.dtype)


class SpyNetLevel(nn.Module):
    """One pyramid level: five 7x7 convs mapping (ref, warped supp, flow) 8 ch -> 2 ch residual."""

    def __init__(self) -> None:
        super().__init__()
        chans = [8, 32, 64, 32, 16, 2]
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 7, 1, 3))
            if i < 4:
                layers.append(nn.ReLU())
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """``x`` ``(N, 8, H, W)`` float32 -> flow residual ``(N, 2, H, W)`` float32 NCHW; with
        ``bf16`` the convs compute in bfloat16.

        On CPU the bf16 convs run on channels-last maps: oneDNN copies NCHW bf16 maps into
        that layout and back around every conv, which took half of SpyNet's time (AMX Xeon,
        2 threads, 6 real 180x320 frames: 62.3 -> 30.6 ms a frame) for the same flows, bit for
        bit. fp32 stays NCHW, the layout of the BasicSR parity (channels-last moved its flows
        by up to 8e-6 px)."""
        if bf16 and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            if not (bf16 and kernels.inference_on_channels_last(x)):
                return self.basic_module(x).float().contiguous()
            # each ReLU fused into its conv (the same numbers: rounding keeps the sign); the
            # separate ReLUs took 18 % of SpyNet's bf16 time (AMX Xeon, 2 threads, 180x320)
            convs = [m for m in self.basic_module if isinstance(m, nn.Conv2d)]
            for conv in convs[:-1]:
                x = kernels.conv_leaky_relu(x, conv.weight, conv.bias, conv.padding[0], 0.0)
            return convs[-1](x).float().contiguous()


class SpyNet(nn.Module):
    """Coarse-to-fine flow network.

    ``forward(ref, supp)`` takes ``(N, 3, H, W)`` RGB in [0, 1] and returns the flow
    ``(N, 2, H, W)`` float32 in pixels such that ``flow_warp(supp, flow)`` aligns ``supp`` to
    ``ref``. Any H, W works: frames are resized to the next multiple of 32 and the flow is
    resized and rescaled back.

    With ``bf16=True`` the pyramid levels' convs compute in bfloat16 while the flow itself (its
    sums, resizing and warp grids) stays float32. That halves SpyNet's time on a CPU with native
    bf16 (0.31 -> 0.16 s per frame at 180x320 on 2 threads) and moves flows by 0.02 px on
    average, which leaves the official network's output 59.06 dB from fp32's (Vid4 calendar,
    6 frames, with ``mixed`` blocks; 59.24 with fp32 flows): under the noise of the blocks'
    own bf16 rounding.
    """

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SpyNetLevel() for _ in range(SPYNET_LEVELS))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _pyramid_flow(self, ref: torch.Tensor, supp: torch.Tensor, bf16: bool) -> torch.Tensor:
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(SPYNET_LEVELS - 1):
            refs.insert(0, F.avg_pool2d(refs[0], 2, 2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], 2, 2, count_include_pad=False))
        n, _, h0, w0 = refs[0].shape
        flow = refs[0].new_zeros(n, 2, h0 // 2, w0 // 2)
        for level, module in enumerate(self.basic_module):
            if flow.numel() == 0:  # a 1-pixel coarsest level: the initial flow is zero anyway
                up = refs[level].new_zeros(n, 2, *refs[level].shape[2:])
            else:
                up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True)
                up = up * 2.0
            if up.shape[2] != refs[level].shape[2]:
                up = F.pad(up, [0, 0, 0, 1], mode="replicate")
            if up.shape[3] != refs[level].shape[3]:
                up = F.pad(up, [0, 1, 0, 0], mode="replicate")
            warped = flow_warp(supps[level], up, padding_mode="border")
            flow = module(torch.cat([refs[level], warped, up], dim=1), bf16) + up
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        if ref.shape != supp.shape:
            raise ValueError(f"ref and supp must have one shape, got {ref.shape} and {supp.shape}")
        h, w = ref.shape[-2:]
        hp = math.ceil(h / SPYNET_MULTIPLE) * SPYNET_MULTIPLE
        wp = math.ceil(w / SPYNET_MULTIPLE) * SPYNET_MULTIPLE
        # NCHW copies: on the channels-last frames that decoded video gives, torch's bilinear
        # took three times as long, for the same numbers
        ref = F.interpolate(ref.contiguous(), size=(hp, wp), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp.contiguous(), size=(hp, wp), mode="bilinear", align_corners=False)
        flow = F.interpolate(
            self._pyramid_flow(ref, supp, bf16), size=(h, w), mode="bilinear", align_corners=False
        )
        scale = torch.tensor([w / wp, h / hp], dtype=flow.dtype, device=flow.device)
        return flow * scale.view(1, 2, 1, 1)
