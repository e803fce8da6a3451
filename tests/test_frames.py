"""Frames: the 8-bit quantisation, tensor conversion, natural order and the one frame reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from skipvsr.frames import MediaError, list_frames, natural_key, read_rgb8, to_tensor, to_uint8


def test_to_uint8_is_round_of_clamp_times_255():
    x = torch.tensor([0.0, 0.6 / 255, 1.5 / 255, 2.5 / 255, 1.2, -0.1]).view(1, 1, 1, 6)
    got = to_uint8(x.expand(1, 3, 1, 6))
    assert got.shape == (1, 1, 6, 3) and got.dtype == np.uint8
    assert got[0, 0, :, 0].tolist() == [0, 1, 2, 2, 255, 0]  # halves round to even


def test_to_tensor_round_trips_and_accepts_lists():
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    t = to_tensor(frames)
    assert t.shape == (2, 3, 5, 7) and t.dtype == torch.float32
    assert float(t.max()) <= 1.0 and float(t.min()) >= 0.0
    assert torch.equal(to_tensor(list(frames)), t)
    assert np.array_equal(to_uint8(t), frames)
    assert np.array_equal(to_uint8(to_tensor(frames[:, ::-1])), frames[:, ::-1])  # views too


def test_natural_order(tmp_path):
    assert sorted(["f10.png", "f2.png", "F1.png"], key=natural_key) == [
        "F1.png",
        "f2.png",
        "f10.png",
    ]
    for name in ("10.png", "2.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path)] == ["2.jpg", "10.png"]
    with pytest.raises(FileNotFoundError):
        list_frames(tmp_path / "missing")


def test_read_rgb8_reads_and_checks_size(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert np.array_equal(read_rgb8(tmp_path / "a.png", (6, 4)), rgb)
    with pytest.raises(MediaError, match=r"a\.png: frame size 6x4 \(WxH\) differs from 5x4"):
        read_rgb8(tmp_path / "a.png", (5, 4))
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(MediaError, match=r"b\.png: not a readable image"):
        read_rgb8(tmp_path / "b.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    with pytest.raises(MediaError, match=r"g\.png: 8-bit grayscale PNG; expected 8-bit RGB"):
        read_rgb8(tmp_path / "g.png")
    assert issubclass(MediaError, ValueError)
