"""Training clip sampler over the cache written by ``scripts/prepare_train_data.py``.

The cache holds, per clip, ``hr.npy`` ``(T, H, W, 3)`` uint8 and ``lr.npy``
``(T, H/4, W/4, 3)`` uint8 (MATLAB-exact BI), read memory-mapped. A batch is fully determined
by ``(seed, step)``: the sampler keeps no state, so a resumed run draws exactly the batches an
uninterrupted run would, and every DDP rank draws the same global batch and keeps its slice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skipvsr.frames import to_tensor


def default_cache() -> Path:
    """``$SKIPVSR_CACHE/train`` or ``~/.cache/skipvsr/train``."""
    root = os.environ.get("SKIPVSR_CACHE")
    return Path(root) / "train" if root else Path.home() / ".cache" / "skipvsr" / "train"


@dataclass
class CachedClip:
    """One clip of the cache; ``hr`` is ``None`` when HR was not requested."""

    name: str
    lr: np.ndarray  # (T, h, w, 3) uint8, memory-mapped
    hr: np.ndarray | None  # (T, 4h, 4w, 3) uint8, memory-mapped


def load_split(root: str | Path, split: str, with_hr: bool = True) -> list[CachedClip]:
    """The clips of ``split`` (``train`` or ``val``) under ``root``, sorted by name."""
    root = Path(root)
    # A clip is complete once its lr.npy exists (written last, atomically).
    names = sorted(p.parent.name for p in (root / split).glob("*/lr.npy"))
    if not names:
        raise ValueError(f"no {split} clips in {root} (run scripts/prepare_train_data.py)")
    clips = []
    for n in names:
        d = root / split / n
        lr = np.load(d / "lr.npy", mmap_mode="r")
        hr = np.load(d / "hr.npy", mmap_mode="r") if with_hr else None
        clips.append(CachedClip(n, lr, hr))
    return clips


@dataclass
class Batch:
    """``lr`` ``(B, T, 3, p, p)``, ``hr`` ``(B, T, 3, 4p, 4p)`` or ``None``; float32 in [0, 1]."""

    lr: torch.Tensor
    hr: torch.Tensor | None


def _augment(x: np.ndarray, flip_h: bool, flip_v: bool, transpose: bool, reverse: bool):
    """Apply the same flips / transpose / temporal reversal to ``(T, H, W, 3)``."""
    if flip_h:
        x = x[:, :, ::-1]
    if flip_v:
        x = x[:, ::-1]
    if transpose:
        x = x.transpose(0, 2, 1, 3)
    if reverse:
        x = x[::-1]
    return x


def _tensor(x: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> contiguous ``(T, 3, H, W)`` float32 in [0, 1]."""
    # Contiguous, so batches keep the memory layout (and conv arithmetic) of earlier runs,
    # which a resumed run must reproduce bit for bit.
    return to_tensor(x).contiguous()


class ClipSampler:
    """Random training windows: clip (probability proportional to its frame count), start frame,
    ``patch x patch`` LR crop (aligned ``4*patch`` HR crop), h/v flips, transpose, reversal.

    Args:
        clips: from :func:`load_split`.
        num_frames: window length ``T``.
        patch: LR crop side in pixels.
        seed: base seed; the batch of ``step`` uses ``numpy.random.default_rng([seed, step])``.
    """

    def __init__(self, clips: list[CachedClip], num_frames: int, patch: int, seed: int) -> None:
        clips = [c for c in clips if c.lr.shape[0] >= num_frames and min(c.lr.shape[1:3]) >= patch]
        if not clips:
            raise ValueError(f"no training clip has {num_frames} frames of >= {patch} LR pixels")
        self.clips = clips
        self.num_frames = num_frames
        self.patch = patch
        self.seed = seed
        frames = np.array([c.lr.shape[0] for c in clips], dtype=np.float64)
        self.weights = frames / frames.sum()

    def state_dict(self) -> dict:
        return {"seed": self.seed, "num_frames": self.num_frames, "patch": self.patch}

    def batch(self, step: int, size: int, rank: int = 0, world: int = 1) -> Batch:
        """Rank ``rank``'s ``size`` items of the ``size * world`` items of step ``step``."""
        rng = np.random.default_rng([self.seed, step])
        items = [self._item(rng) for _ in range(size * world)][rank * size : (rank + 1) * size]
        lr = torch.stack([a for a, _ in items])
        hr = None if items[0][1] is None else torch.stack([b for _, b in items])
        return Batch(lr, hr)

    def _item(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        clip = self.clips[int(rng.choice(len(self.clips), p=self.weights))]
        t, h, w = clip.lr.shape[:3]
        t0 = int(rng.integers(0, t - self.num_frames + 1))
        y = int(rng.integers(0, h - self.patch + 1))
        x = int(rng.integers(0, w - self.patch + 1))
        flips = [bool(v) for v in rng.integers(0, 2, size=4)]
        p, s = self.patch, 4
        lr = clip.lr[t0 : t0 + self.num_frames, y : y + p, x : x + p]
        lr_t = _tensor(_augment(lr, *flips))
        if clip.hr is None:
            return lr_t, None
        hr = clip.hr[t0 : t0 + self.num_frames, s * y : s * (y + p), s * x : s * (x + p)]
        return lr_t, _tensor(_augment(hr, *flips))
