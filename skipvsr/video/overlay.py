"""Draw where the compute went: frames with their per-patch routing map, as numpy arrays.

A routing map is ``(nH, nW)`` int per frame: residual blocks run on each routing patch, both
branches of the recurrence summed (0..``max_blocks``, 60 for BasicVSR's 2x30 blocks). The
colour scale (matplotlib's viridis: dark purple = nothing ran, yellow = everything ran) covers
that total, and a legend bar beside the picture says so. :class:`MapView` turns one upscaled
frame, its map and (for the side-by-side view) its low-resolution input into one frame of a
routing-map video; nothing here knows the model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from skipvsr.degradation import imresize_bicubic

MAX_BLOCKS = 60  # residual blocks of both branches of BasicVSR
COLORMAP = "viridis"
LEGEND_LABEL = "blocks run per patch, both branches"
PANEL_LABELS = ("bicubic", "output", "blocks run")


def block_colors(routing_map: np.ndarray, max_blocks: int = MAX_BLOCKS) -> np.ndarray:
    """``(...)`` int blocks run (0..``max_blocks``) -> ``(..., 3)`` uint8 viridis colours:
    0 is the bottom of the colormap, ``max_blocks`` its top."""
    lut = colormaps[COLORMAP].resampled(max_blocks + 1)(np.arange(max_blocks + 1))[:, :3] * 255
    return np.round(lut).astype(np.uint8)[np.clip(np.asarray(routing_map), 0, max_blocks)]


def patch_index(size: int, patches: int, cell: int | None) -> np.ndarray:
    """For each of ``size`` pixels along one axis, the index of its routing patch among
    ``patches``: cells of ``cell`` pixels from the start (the last one partial, as the model
    cuts its grid), or, with ``cell=None``, ``patches`` equal stretches (tubes)."""
    pixels = np.arange(size)
    if cell is None:
        return pixels * patches // size
    return np.minimum(pixels // cell, patches - 1)


def overlay(
    frame: np.ndarray,
    routing_map: np.ndarray,
    cell: int | None = None,
    max_blocks: int = MAX_BLOCKS,
    alpha: float = 0.5,
) -> np.ndarray:
    """``frame`` ``(H, W, 3)`` uint8 blended with the colours of ``routing_map`` ``(nH, nW)``
    int (see :func:`block_colors`, :func:`patch_index`): ``(1 - alpha) * frame + alpha *
    colour``, rounded, ``(H, W, 3)`` uint8."""
    h, w = frame.shape[:2]
    nh, nw = routing_map.shape
    colours = block_colors(routing_map, max_blocks)
    colours = colours[patch_index(h, nh, cell)][:, patch_index(w, nw, cell)]
    mixed = (1 - alpha) * frame.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.round(mixed).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def legend_bar(height: int, max_blocks: int = MAX_BLOCKS) -> np.ndarray:
    """The colour scale of :func:`block_colors` as a vertical bar with ticks and
    :data:`LEGEND_LABEL`, white on black: ``(height, width, 3)`` uint8, ``width`` even and
    about a third of ``height`` (at least 48 pixels). Drawn once per size by matplotlib."""
    width = 2 * max(24, round(height / 6))
    dpi = 100
    font = max(3.0, height / 40)  # points
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="black")
    cax = fig.add_axes((0.12, 0.06, 0.2, 0.88))
    bar = fig.colorbar(
        ScalarMappable(Normalize(0, max_blocks), colormaps[COLORMAP]),
        cax=cax,
        ticks=np.linspace(0, max_blocks, 5),
    )
    bar.set_label(f"{LEGEND_LABEL} (0-{max_blocks})", color="white", fontsize=font)
    bar.ax.yaxis.set_tick_params(color="white", labelcolor="white", labelsize=font)
    bar.outline.set_edgecolor("white")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    bar = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[:height, :width, :3])
    bar.setflags(write=False)  # cached and shared by every frame drawn
    return bar


def label(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` ``(H, W, 3)`` uint8 with ``text`` in white on a dark box at its top left."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(8, frame.shape[0] // 18))
    box = draw.textbbox((4, 2), text, font=font)
    draw.rectangle((0, 0, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


@dataclass(frozen=True)
class MapView:
    """How each frame of a routing-map video is drawn.

    Args:
        side_by_side: one row of the bicubic upscale of the input, the output, and the output
            with its map; otherwise the output with its map alone. A legend bar is on the right.
        cell: side of one routing patch in output pixels (the grid starts at the top left and
            its last row and column may be partial); ``None`` stretches the map evenly.
        max_blocks: top of the colour scale: blocks per patch when everything runs (60).
        alpha: opacity of the map's colours over the output, in [0, 1].
    """

    side_by_side: bool = False
    cell: int | None = None
    max_blocks: int = MAX_BLOCKS
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.cell is not None and self.cell < 1:
            raise ValueError(f"cell must be >= 1 output pixel or None, got {self.cell}")
        if self.max_blocks < 1:
            raise ValueError(f"max_blocks must be >= 1, got {self.max_blocks}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    def size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of a drawn frame for output frames of ``width x height``."""
        panels = 3 if self.side_by_side else 1
        return panels * width + legend_bar(height, self.max_blocks).shape[1], height

    def render(
        self, sr: np.ndarray, routing_map: np.ndarray, lr: np.ndarray | None = None
    ) -> np.ndarray:
        """One frame: ``sr`` ``(H, W, 3)`` uint8 output, ``routing_map`` ``(nH, nW)`` int blocks
        run per patch, ``lr`` ``(h, w, 3)`` uint8 input (side-by-side only, ``H/h = W/w`` an
        integer). Returns ``(height, width, 3)`` uint8 of :meth:`size`."""
        h = sr.shape[0]
        mapped = overlay(sr, routing_map, self.cell, self.max_blocks, self.alpha)
        panels = [mapped]
        if self.side_by_side:
            if lr is None:
                raise ValueError("lr: the side-by-side view needs the input frame, got None")
            bicubic = imresize_bicubic(lr, h / lr.shape[0])
            if bicubic.shape != sr.shape:
                raise ValueError(
                    f"lr: shape {lr.shape} does not scale to the output's {sr.shape} by an integer"
                )
            panels = [label(p, t) for p, t in zip((bicubic, sr, mapped), PANEL_LABELS, strict=True)]
        return np.concatenate([*panels, legend_bar(h, self.max_blocks)], axis=1)
