"""Frame readers and dataset layouts on tiny folders made in tmp_path (no real data needed,
except the last test, which is skipped when the Vid4 frames are absent)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skipvsr.degradation import degrade_bd, degrade_bi
from skipvsr.eval.datasets import (
    Clip,
    FolderPairs,
    Vid4,
    load_dataset,
    make_clip,
    open_dataset,
    read_frames,
)
from skipvsr.frames import list_frames
from tests.conftest import DATA  # noqa: E402


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_clip(folder: Path, n: int, h: int, w: int, seed: int = 0, fmt: str = "{:08d}.png"):
    folder.mkdir(parents=True, exist_ok=True)
    frames = [_rgb(h, w, seed + i) for i in range(n)]
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / fmt.format(i))
    return np.stack(frames)


def _write_png_rgb16(path: Path, img: np.ndarray) -> None:
    """Minimal 16-bit-per-channel RGB PNG writer (Pillow cannot write one)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(png + chunk(b"IEND", b""))


# ---------------------------------------------------------------- frame reading


def test_list_frames_natural_sort(tmp_path):
    for name in ("10.png", "2.png", "1.jpg", "notes.txt", "im3.PNG"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_frames(tmp_path)] == ["1.jpg", "2.png", "10.png", "im3.PNG"]


def test_read_frames_roundtrip(tmp_path):
    want = _write_clip(tmp_path, 3, 8, 12, fmt="f{}.png")
    got, names = read_frames(tmp_path)
    assert got.dtype == np.uint8 and got.shape == (3, 8, 12, 3)
    np.testing.assert_array_equal(got, want)
    assert names == ["f0.png", "f1.png", "f2.png"]


@pytest.mark.parametrize(
    "kind,pattern",
    [
        ("gray", r"bad\.png: 8-bit grayscale PNG; expected 8-bit RGB"),
        ("rgba", r"bad\.png: 8-bit RGBA PNG; expected 8-bit RGB"),
        ("gray16", r"bad\.png: 16-bit grayscale PNG; expected 8-bit RGB"),
        ("rgb16", r"bad\.png: 16-bit RGB PNG; expected 8-bit RGB"),
        ("palette", r"bad\.png: 8-bit palette PNG; expected 8-bit RGB"),
        ("gray_jpg", r"bad\.jpg: image mode 'L'; expected 'RGB'"),
    ],
)
def test_read_frames_rejects_non_rgb8(tmp_path, kind, pattern):
    _write_clip(tmp_path, 1, 8, 8, fmt="a{}.png")
    rgb = _rgb(8, 8)
    if kind == "gray":
        Image.fromarray(rgb[..., 0]).save(tmp_path / "bad.png")
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "bad.png")
    elif kind == "gray16":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "bad.png")
    elif kind == "rgb16":
        _write_png_rgb16(tmp_path / "bad.png", rgb.astype(np.uint16) * 257)
        with Image.open(tmp_path / "bad.png") as im:  # Pillow alone would accept it as RGB
            assert im.mode == "RGB"
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(tmp_path / "bad.png")
    else:
        Image.fromarray(rgb[..., 0]).save(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match=pattern):
        read_frames(tmp_path)


def test_read_frames_mixed_sizes(tmp_path):
    _write_clip(tmp_path, 2, 8, 12)
    Image.fromarray(_rgb(8, 16)).save(tmp_path / "00000002.png")
    with pytest.raises(
        ValueError, match=r"00000002\.png: frame size 16x8 \(WxH\) differs from 12x8"
    ):
        read_frames(tmp_path)


def test_read_frames_empty(tmp_path):
    with pytest.raises(ValueError, match="no .png/.jpg frames"):
        read_frames(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_frames(tmp_path / "missing")


# ---------------------------------------------------------------- clips and layouts


def test_make_clip_mod_crop_and_degradations(tmp_path):
    hr = _write_clip(tmp_path / "hr", 2, 18, 23)
    clip = make_clip("x", tmp_path / "hr", degradation="BI")
    assert isinstance(clip, Clip) and clip.name == "x"
    assert clip.hr.shape == (2, 16, 20, 3) and clip.lr.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(clip.hr, hr[:, :16, :20])
    np.testing.assert_array_equal(clip.lr[1], degrade_bi(hr[1]))
    bd = make_clip("x", tmp_path / "hr", degradation="BD")
    np.testing.assert_array_equal(bd.lr[0], degrade_bd(hr[0], "basicvsr"))
    assert clip.frames == ["00000000.png", "00000001.png"]
    with pytest.raises(ValueError, match="degradation"):
        make_clip("x", tmp_path / "hr", degradation="bicubic")


def test_make_clip_lr_size_mismatch(tmp_path):
    _write_clip(tmp_path / "hr", 2, 16, 20)
    _write_clip(tmp_path / "lr", 2, 4, 4)
    with pytest.raises(ValueError, match=r"expected \(2, 4, 5, 3\)"):
        make_clip("x", tmp_path / "hr", tmp_path / "lr")


def test_vid4_layout_uses_lr_bi_only_for_bi(tmp_path):
    hr = _write_clip(tmp_path / "calendar" / "HR", 2, 16, 20)
    lr = _write_clip(tmp_path / "calendar" / "LR_BI", 2, 4, 5, seed=50)
    _write_clip(tmp_path / "calendar" / "LR_BD_DUF", 2, 4, 5, seed=60)
    (bi,) = load_dataset("Vid4", tmp_path, "BI", clips=["calendar"])
    np.testing.assert_array_equal(bi.lr, lr)  # read from LR_BI, not recomputed
    (bd,) = load_dataset("vid4", tmp_path, "BD", clips=["calendar"])
    np.testing.assert_array_equal(bd.lr[0], degrade_bd(hr[0], "basicvsr"))  # never LR_BD_DUF
    assert Vid4(tmp_path).names == ["calendar", "city", "foliage", "walk"]
    with pytest.raises(ValueError, match="unknown clips"):
        Vid4(tmp_path, clips=["nope"])


def test_folder_pairs(tmp_path):
    _write_clip(tmp_path / "hr" / "b", 2, 8, 8)
    _write_clip(tmp_path / "hr" / "a10", 1, 8, 8)
    _write_clip(tmp_path / "hr" / "a2", 1, 8, 8)
    ds = FolderPairs(tmp_path / "hr")
    assert ds.names == ["a2", "a10", "b"] and len(ds) == 3
    assert [c.lr.shape for c in ds] == [(1, 2, 2, 3), (1, 2, 2, 3), (2, 2, 2, 3)]
    # one folder of frames is one clip; LR-only gives hr=None
    single = FolderPairs(tmp_path / "hr" / "b")
    assert single.names == ["b"] and single.load("b").hr.shape == (2, 8, 8, 3)
    lr_only = FolderPairs(None, tmp_path / "hr" / "b").load("b")
    assert lr_only.hr is None and lr_only.lr.shape == (2, 8, 8, 3)


def test_reds4_udm10_vimeo_layouts(tmp_path):
    reds = tmp_path / "REDS4"
    for c in ("000", "011", "015", "020"):
        _write_clip(reds / "GT" / c, 1, 8, 8)
    (c,) = load_dataset("reds4", reds, "BI", clips=["011"])  # no sharp_bicubic: made from GT
    assert c.lr.shape == (1, 2, 2, 3)
    lrs = [_write_clip(reds / "sharp_bicubic" / c, 1, 2, 2, seed=9) for c in ("000", "011")]
    clips = load_dataset("reds4", reds, "BI", clips=["000", "011"])
    assert [c.name for c in clips] == ["000", "011"]
    np.testing.assert_array_equal(clips[1].lr, lrs[1])
    with pytest.raises(FileNotFoundError, match="sharp_bicubic/015"):  # LR folder, clip missing
        load_dataset("reds4", reds, "BI")

    udm = tmp_path / "UDM10"
    _write_clip(udm / "GT" / "archpeople", 2, 8, 8)
    bd = _write_clip(udm / "BDx4" / "archpeople", 2, 2, 2, seed=7)
    (c,) = load_dataset("udm10", udm, "BD")
    np.testing.assert_array_equal(c.lr, bd)
    (c,) = load_dataset("udm10", udm, "BI")  # no BIx4 folder: made from GT
    assert c.lr.shape == (2, 2, 2, 3)

    vimeo = tmp_path / "vimeo"
    _write_clip(vimeo / "sequences" / "00001" / "0266", 7, 8, 8, fmt="im{}.png")
    _write_clip(vimeo / "sequences" / "00002" / "0010", 7, 8, 8, fmt="im{}.png")
    (vimeo / "sep_testlist.txt").write_text("00001/0266\n00002/0010\n\n")
    ds = open_dataset("Vimeo90K-T", vimeo, "BD", clips=["00002/0010"])
    (c,) = list(ds)
    assert c.name == "00002/0010" and c.hr.shape == (7, 8, 8, 3) and c.lr.shape == (7, 2, 2, 3)
    with pytest.raises(ValueError, match="unknown dataset"):
        open_dataset("spmcs", vimeo)


def test_real_vid4_listing():
    root = DATA / "vid4"
    if not (root / "calendar" / "HR").is_dir():
        pytest.skip(f"Vid4 test frames not found at {root} (set SKIPVSR_DATA to the data folder)")
    counts = {c: len(list_frames(root / c / "HR")) for c in Vid4(root).names}
    assert counts == {"calendar": 41, "city": 34, "foliage": 49, "walk": 47}
