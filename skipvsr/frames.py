"""Frames as arrays and tensors, and frame folders: the one place that converts and reads them.

A frame is ``(H, W, 3) uint8`` RGB; a clip is ``(T, H, W, 3) uint8`` as numpy, or
``(T, 3, H, W) float32`` in [0, 1] as a tensor. :func:`to_uint8` is the evaluation protocol's
8-bit quantisation, ``round(clamp(x, 0, 1) * 255)`` (round half to even, as torch rounds): every
PSNR this package reports is measured on its output.

Frame folders hold PNG/JPEG files in natural order (``2.png`` before ``10.png``);
:func:`read_rgb8` accepts only 8-bit RGB and raises :class:`MediaError` for anything else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


class MediaError(ValueError):
    """A bad input, output or media file; the message is one line naming what was expected."""


def to_tensor(frames: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 (an array or a list of ``(H, W, 3)`` frames) -> ``(T, 3, H, W)``
    float32 in [0, 1] (a permuted view of a fresh buffer, divided by 255)."""
    arr = np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else np.stack(frames)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(clip: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` float in [0, 1] -> ``(T, H, W, 3)`` uint8, ``round(clamp(x) * 255)``."""
    out = clip.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """PNG/JPEG files directly in ``folder``, natural-sorted by file name.

    Raises ``FileNotFoundError`` when ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _png_header(path: Path) -> tuple[int, int] | None:
    """``(bit_depth, color_type)`` from a PNG's IHDR chunk, or ``None`` if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def read_rgb8(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read one 8-bit RGB frame as ``(H, W, 3)`` uint8.

    ``size`` is the expected ``(width, height)`` (that of a clip's first frame). Raises
    :class:`MediaError` naming the file for anything else: grayscale, alpha, palette, 16-bit
    (Pillow would silently reduce a 16-bit RGB PNG to 8 bits, so the PNG header is read
    directly), an unreadable file, or another size.
    """
    path = Path(path)
    png = _png_header(path)
    if png is not None and png != (8, 2):
        depth, ctype = png
        kind = _PNG_COLOR_TYPES.get(ctype, f"color type {ctype}")
        raise MediaError(f"{path}: {depth}-bit {kind} PNG; expected 8-bit RGB (3 channels, uint8)")
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                raise MediaError(
                    f"{path}: image mode {im.mode!r}; expected 'RGB' (8-bit RGB, 3 channels)"
                )
            arr = np.asarray(im, dtype=np.uint8)
    except MediaError:
        raise
    except (OSError, ValueError) as e:
        raise MediaError(f"{path}: not a readable image ({e})") from None
    h, w = arr.shape[:2]
    if size is not None and (w, h) != tuple(size):
        raise MediaError(
            f"{path}: frame size {w}x{h} (WxH) differs from {size[0]}x{size[1]} of the first "
            "frame; all frames of a clip must have one size"
        )
    return arr
