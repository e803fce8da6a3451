"""The paper's test protocol: LR patch tubes (48x48, stride 46), batched, merged by averaging.

A *tube* is the same spatial window over every frame of a clip. Each tube is super-resolved as
an independent clip, so routing decides per tube, frame and block. The HR tubes are merged by
averaging wherever they overlap. The same code serves large-frame tiling (``--tile``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def tube_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets along one axis: ``0, stride, 2*stride, ...``, the last one clamped so the
    tube ends at ``size``. A ``size <= patch`` axis has one tube of length ``size``."""
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be >= 1, got {patch} and {stride}")
    if stride > patch:
        raise ValueError(f"stride must be <= patch (tubes must cover the frame), got {stride}")
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch, stride))
    starts.append(size - patch)
    return starts


@dataclass(frozen=True)
class TubeLayout:
    """Tubes over an ``height x width`` LR frame: ``boxes`` are ``(y, x, h, w)`` in LR pixels."""

    height: int
    width: int
    patch: int
    stride: int

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        ph, pw = min(self.patch, self.height), min(self.patch, self.width)
        return [
            (y, x, ph, pw)
            for y in tube_starts(self.height, self.patch, self.stride)
            for x in tube_starts(self.width, self.patch, self.stride)
        ]

    def split(self, clip: torch.Tensor) -> torch.Tensor:
        """``(T, C, H, W)`` -> ``(N, T, C, h, w)`` tubes, in :attr:`boxes` order."""
        return torch.stack([clip[..., y : y + h, x : x + w] for y, x, h, w in self.boxes])

    def merge(self, tubes: torch.Tensor, scale: int = 4) -> torch.Tensor:
        """``(N, T, C, s*h, s*w)`` HR tubes -> ``(T, C, s*H, s*W)``, overlaps averaged."""
        n, t, c = tubes.shape[:3]
        out = tubes.new_zeros(t, c, self.height * scale, self.width * scale)
        weight = tubes.new_zeros(1, 1, self.height * scale, self.width * scale)
        for tube, (y, x, h, w) in zip(tubes, self.boxes, strict=True):
            ys, xs = slice(y * scale, (y + h) * scale), slice(x * scale, (x + w) * scale)
            out[..., ys, xs] += tube
            weight[..., ys, xs] += 1
        return out.div_(weight)

    def overhead(self) -> float:
        """LR pixels processed in tubes over pixels of the frame (>= 1)."""
        return sum(h * w for _, _, h, w in self.boxes) / (self.height * self.width)
