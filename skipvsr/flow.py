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
    n, _, h, w = x.shape
    coords = pixel_grid(h, w, x.device) + flow.float().permute(0, 2, 3, 1)
    gx = 2.0 * coords[..., 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * coords[..., 1] / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(
        x.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True
    )
    return out.to(x.dtype)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """Coarse-to-fine flow network.

    ``forward(ref, supp)`` takes ``(N, 3, H, W)`` RGB in [0, 1] and returns the flow
    ``(N, 2, H, W)`` float32 in pixels such that ``flow_warp(supp, flow)`` aligns ``supp`` to
    ``ref``. Any H, W works: frames are resized to the next multiple of 32 and the flow is
    resized and rescaled back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SpyNetLevel() for _ in range(SPYNET_LEVELS))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _pyramid_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
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
            flow = module(torch.cat([refs[level], warped, up], dim=1)) + up
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        if ref.shape != supp.shape:
            raise ValueError(f"ref and supp must have one shape, got {ref.shape} and {supp.shape}")
        h, w = ref.shape[-2:]
        hp = math.ceil(h / SPYNET_MULTIPLE) * SPYNET_MULTIPLE
        wp = math.ceil(w / SPYNET_MULTIPLE) * SPYNET_MULTIPLE
        ref = F.interpolate(ref, size=(hp, wp), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(hp, wp), mode="bilinear", align_corners=False)
        flow = F.interpolate(
            self._pyramid_flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False
        )
        scale = torch.tensor([w / wp, h / hp], dtype=flow.dtype, device=flow.device)
        return flow * scale.view(1, 2, 1, 1)
