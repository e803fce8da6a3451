"""Routing-map drawing: colours follow the map, the grid follows the model's cells."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from skipvsr.degradation import bicubic_upscale
from skipvsr.video.overlay import MapView, block_colors, legend_bar, overlay, patch_index


def test_the_ends_of_the_scale_are_the_ends_of_the_colormap():
    ends = np.round(colormaps["viridis"]([0.0, 1.0])[:, :3] * 255).astype(np.uint8)
    assert np.array_equal(block_colors(np.array([0, 60])), ends)
    assert np.array_equal(block_colors(np.array([0, 30]), max_blocks=30), ends)
    assert np.array_equal(block_colors(np.array([-5, 99])), ends)  # clipped to the scale


def test_overlay_paints_each_patch_with_its_colour():
    frame = np.zeros((8, 12, 3), np.uint8)
    drawn = overlay(frame, np.array([[0, 60]]), alpha=1.0)
    low, high = block_colors(np.array([0, 60]))
    assert (drawn[:, :6] == low).all() and (drawn[:, 6:] == high).all()
    half = overlay(np.full((4, 4, 3), 200, np.uint8), np.array([[60]]), alpha=0.5)
    assert np.array_equal(half[0, 0], np.round(0.5 * 200 + 0.5 * high.astype(float)))


def test_patches_follow_the_models_grid():
    assert patch_index(5, 2, cell=3).tolist() == [0, 0, 0, 1, 1]  # last cell partial
    assert patch_index(4, 1, cell=8).tolist() == [0, 0, 0, 0]  # one cell covers a small frame
    assert patch_index(6, 3, cell=None).tolist() == [0, 0, 1, 1, 2, 2]  # stretched evenly


def test_views_have_the_size_they_announce():
    sr = np.full((48, 64, 3), 90, np.uint8)
    lr = np.full((12, 16, 3), 90, np.uint8)
    bar = legend_bar(48)
    assert bar.shape[0] == 48 and bar.shape[1] % 2 == 0 and bar.dtype == np.uint8
    alone, side = MapView(cell=32), MapView(side_by_side=True, cell=32)
    drawn = alone.render(sr, np.array([[10, 50]]))
    assert drawn.shape == (48, 64 + bar.shape[1], 3) and alone.size(64, 48) == (drawn.shape[1], 48)
    drawn = side.render(sr, np.array([[10, 50]]), lr)
    assert drawn.shape[:2] == (48, 3 * 64 + bar.shape[1])
    # under its label, the first panel is the bicubic upscale of the input
    assert np.array_equal(drawn[40:, :64], bicubic_upscale(lr)[40:])
    with pytest.raises(ValueError, match="lr: the side-by-side view needs the input"):
        side.render(sr, np.array([[10]]))
    with pytest.raises(ValueError, match="alpha must be in"):
        MapView(alpha=2)
