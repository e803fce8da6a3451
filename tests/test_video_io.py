"""Video/folder reading and writing on tiny clips generated here with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from skipvsr.frames import MediaError
from skipvsr.video.io import FrameSink, FrameSource, format_info, probe

SRT = "1\n00:00:00,100 --> 00:00:00,600\nHello\n\n2\n00:00:00,700 --> 00:00:01,000\nBye\n"


def frame_image(i: int, w: int, h: int) -> np.ndarray:
    """A moving gradient so that frames differ: ``(h, w, 3) uint8``."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 4 + i * 9) % 256, (y * 5 + i * 3) % 256, np.full_like(x, 40 + i)], -1)
    return img.astype(np.uint8)


def make_clip(
    path: Path,
    n: int = 12,
    w: int = 64,
    h: int = 48,
    rate: int = 10,
    audio: str | None = "aac",
    subtitles: bool = False,
    pts: list[int] | None = None,
    video: bool = True,
) -> Path:
    """Write a small test clip. ``pts`` (in 1/1000 s) makes it variable frame rate."""
    out = av.open(str(path), "w")
    vs = None
    if video:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if pts is not None:
            vs.codec_context.time_base = Fraction(1, 1000)
    aus = None
    if audio:
        aus = out.add_stream(audio, rate=44100, format="fltp" if audio != "pcm_s16le" else "s16")
        aus.layout = "stereo"
    sub_in = None
    if subtitles:
        srt = path.with_suffix(".srt")
        srt.write_text(SRT)
        sub_in = av.open(str(srt))
        sub_out = out.add_stream_from_template(sub_in.streams[0])
    for i in range(n if video else 0):
        f = av.VideoFrame.from_ndarray(frame_image(i, w, h), format="rgb24")
        if pts is not None:
            f.pts, f.time_base = pts[i], Fraction(1, 1000)
        else:
            f.pts = i
        for p in vs.encode(f):
            out.mux(p)
    if aus is not None:
        size = {"aac": 1024, "libmp3lame": 1152}.get(audio, 1024)
        seconds = (pts[-1] / 1000 + 0.1) if pts else n / rate
        t = np.arange(int(44100 * seconds))
        sig = 0.3 * np.sin(2 * np.pi * 440 * t / 44100)
        for k in range(0, len(sig) - size + 1, size):
            c = sig[k : k + size]
            if audio == "pcm_s16le":
                arr, fmt = (np.stack([c, c], 1).reshape(1, -1) * 32767).astype(np.int16), "s16"
            else:
                arr, fmt = np.stack([c, c]).astype(np.float32), "fltp"
            af = av.AudioFrame.from_ndarray(arr, format=fmt, layout="stereo")
            af.sample_rate, af.pts = 44100, k
            for p in aus.encode(af):
                out.mux(p)
    if sub_in is not None:
        for p in sub_in.demux():
            if p.size:
                p.stream = sub_out
                out.mux(p)
        sub_in.close()
    if vs is not None:
        for p in vs.encode():
            out.mux(p)
    if aus is not None:
        for p in aus.encode():
            out.mux(p)
    out.close()
    return path


def packets(path: Path, kind: str) -> tuple[str, int]:
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        if not streams:
            return "", 0
        count = sum(1 for p in c.demux(streams[0]) if p.size)
        return streams[0].codec_context.codec.canonical_name, count


def video_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return sorted(float(p.pts * vs.time_base) for p in c.demux(vs) if p.size)


def copy_x4(src: FrameSource, dst: Path, **kw) -> FrameSink:
    """Upscale by pixel repetition and write: a minimal pipeline without the streaming code."""
    sink = FrameSink(dst, width=4 * src.width, height=4 * src.height, source=src,
                     fps=src.fps, time_base=src.time_base, **kw)  # fmt: skip
    with sink:
        for rgb, pts, tb in src:
            sink.write(np.repeat(np.repeat(rgb, 4, 0), 4, 1), pts, tb)
    return sink


def test_probe_and_format(tmp_path):
    clip = make_clip(tmp_path / "a.mp4")
    info = probe(clip)
    assert (info.width, info.height, info.frames) == (64, 48, 12)
    assert info.fps == pytest.approx(10.0)
    assert not info.variable_fps
    assert info.duration == pytest.approx(1.2, abs=0.1)
    assert [s.type for s in info.streams] == ["video", "audio"]
    text = format_info(info)
    assert "64x48" in text and "aac" in text


def test_mp4_round_trip_keeps_timing_and_audio(tmp_path):
    clip = make_clip(tmp_path / "a.mp4")
    out = tmp_path / "out.mp4"
    with FrameSource(clip) as src:
        sink = copy_x4(src, out)
    assert sink.messages == []
    a, b = probe(clip), probe(out)
    assert (b.width, b.height, b.frames) == (256, 192, 12)
    assert b.fps == pytest.approx(a.fps)
    assert abs(b.duration - a.duration) <= 1 / a.fps
    assert packets(out, "audio") == packets(clip, "audio") == ("aac", packets(clip, "audio")[1])
    assert b.colorspace == "bt709" and b.color_range.startswith("tv")


def test_mkv_copies_mp3_and_subtitles(tmp_path):
    clip = make_clip(tmp_path / "a.mkv", audio="libmp3lame", subtitles=True)
    out = tmp_path / "out.mkv"
    with FrameSource(clip) as src:
        copy_x4(src, out)
    assert packets(out, "audio") == packets(clip, "audio")
    assert packets(out, "subtitle") == packets(clip, "subtitle") == ("subrip", 2)


def test_incompatible_audio_is_reencoded_with_message(tmp_path):
    clip = make_clip(tmp_path / "a.mkv", audio="pcm_s16le", subtitles=True)
    out = tmp_path / "out.mp4"
    with FrameSource(clip) as src:
        sink = copy_x4(src, out)
    kinds = [m.split()[0] for m in sink.messages]
    assert sorted(kinds) == ["audio", "subtitle"], sink.messages
    assert packets(out, "audio")[0] == "aac"
    assert packets(out, "subtitle")[1] == 0


def test_vfr_timestamps_survive(tmp_path):
    stamps = [0, 100, 150, 400, 450, 500, 900, 1000]
    clip = make_clip(tmp_path / "v.mkv", n=len(stamps), pts=stamps, audio=None)
    assert probe(clip).variable_fps
    out = tmp_path / "out.mkv"
    with FrameSource(clip) as src:
        copy_x4(src, out)
    assert video_times(out) == pytest.approx([s / 1000 for s in stamps], abs=1e-3)
    assert probe(out).variable_fps


def test_start_and_max_frames_trim_video_and_audio(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", n=20)
    out = tmp_path / "out.mp4"
    with FrameSource(clip, start_seconds=0.5, max_frames=6) as src:
        frames = list(src)
    assert len(frames) == 6
    assert float(frames[0][1] * frames[0][2]) == pytest.approx(0.5)
    with FrameSource(clip, start_seconds=0.5, max_frames=6) as src:
        copy_x4(src, out)
    info = probe(out)
    assert info.frames == 6
    assert video_times(out)[0] == pytest.approx(0.0)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        end = max(float((p.pts + p.duration) * a.time_base) for p in c.demux(a) if p.size)
    assert 0.5 <= end <= 0.7  # 6 frames at 10 fps, plus at most one audio packet


def test_colour_round_trip_is_accurate(tmp_path):
    """Saturated colours survive YUV encoding only if the matrix and range are matched."""
    colours = np.array([[230, 20, 20], [20, 200, 40], [30, 40, 220], [240, 240, 30]], np.uint8)
    rgb = np.repeat(np.repeat(colours[None], 16, 0), 16, 1)  # (16, 64, 3)
    for name, size in (("sd.mp4", (64, 16)), ("hd.mp4", (1280, 720))):
        img = np.asarray(Image.fromarray(rgb).resize(size, Image.NEAREST))
        out = tmp_path / name
        with FrameSink(out, width=size[0], height=size[1], crf=0) as sink:
            sink.write(img, 0, Fraction(1, 25))
        with FrameSource(out) as src:
            back = next(iter(src))[0]
        err = np.abs(back.astype(int) - img.astype(int))[2:-2, 2:-2]
        assert np.median(err) <= 2, name


def test_png_folder_in_and_out(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10):  # natural sort: 1, 2, 10
        Image.fromarray(frame_image(i, 20, 12)).save(folder / f"f{i}.png")
    with FrameSource(folder) as src:
        got = list(src)
        assert [p for _, p, _ in got] == [0, 1, 2]
        assert np.array_equal(got[2][0], frame_image(10, 20, 12))
        copy_x4(src, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    assert probe(tmp_path / "out").width == 80


@pytest.mark.parametrize(
    "mode, expect",
    [
        ("L", "8-bit grayscale PNG"),
        ("RGBA", "8-bit RGBA PNG"),
        ("I;16", "16-bit grayscale PNG"),
        ("RGB16", "16-bit RGB PNG"),
    ],
)
def test_folder_rejects_non_8bit_rgb(tmp_path, mode, expect):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(frame_image(0, 16, 16)).save(folder / "0001.png")
    bad = folder / "0002.png"
    if mode == "RGB16":
        write_rgb48_png(bad, 16, 16)
    else:
        Image.fromarray(frame_image(1, 16, 16)).convert(mode if mode != "I;16" else "I").convert(
            mode
        ).save(bad)
    with FrameSource(folder) as src, pytest.raises(MediaError, match=expect) as e:
        list(src)
    assert "0002.png" in str(e.value) and "expected 8-bit RGB" in str(e.value)


def write_rgb48_png(path: Path, w: int, h: int) -> None:
    """A 16-bit-per-channel RGB PNG, written with PyAV's PNG encoder."""
    frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 1000, np.uint16), format="rgb48le")
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "rgb48be"
    data = b"".join(bytes(p) for p in ctx.encode(frame.reformat(format="rgb48be")))
    data += b"".join(bytes(p) for p in ctx.encode(None))
    path.write_bytes(data)


def test_folder_rejects_mixed_sizes(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(frame_image(0, 16, 16)).save(folder / "1.png")
    Image.fromarray(frame_image(1, 18, 16)).save(folder / "2.png")
    with (
        FrameSource(folder) as src,
        pytest.raises(MediaError, match=r"2\.png: frame size 18x16.*16x16"),
    ):
        list(src)


def test_bad_inputs(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(MediaError, match="notes.mp4"):
        FrameSource(text)
    with pytest.raises(MediaError, match="does not exist"):
        probe(tmp_path / "missing.mp4")
    audio_only = make_clip(tmp_path / "sound.mp4", video=False)
    with pytest.raises(MediaError, match="no video stream"):
        FrameSource(audio_only)
    with pytest.raises(MediaError, match="no video stream"):
        probe(audio_only)
    clip = make_clip(tmp_path / "a.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(MediaError, match="cut.mp4"):
        with FrameSource(cut) as src:
            list(src)


def test_output_checks_and_atomicity(tmp_path):
    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(MediaError, match="already exists"):
        FrameSink(existing, width=16, height=16)
    with pytest.raises(MediaError, match="does not exist"):
        FrameSink(tmp_path / "nodir" / "x.mp4", width=16, height=16)
    with pytest.raises(MediaError, match="suffix .txt"):
        FrameSink(tmp_path / "x.txt", width=16, height=16)
    with pytest.raises(RuntimeError):
        with FrameSink(existing, width=16, height=16, overwrite=True) as sink:
            sink.write(np.zeros((16, 16, 3), np.uint8), 0, Fraction(1, 25))
            raise RuntimeError("boom")
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    with FrameSink(existing, width=16, height=16, overwrite=True) as sink:
        sink.write(np.zeros((16, 16, 3), np.uint8), 0, Fraction(1, 25))
    assert probe(existing).frames == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_unwritable_output_dir(tmp_path, monkeypatch):
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if m & os.W_OK else real_access(p, m))
    with pytest.raises(MediaError, match="not writable"):
        FrameSink(tmp_path / "x.mp4", width=16, height=16)
    monkeypatch.undo()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that ignores permissions")
        with pytest.raises(MediaError, match="not writable"):
            FrameSink(locked / "x.mp4", width=16, height=16)
    finally:
        locked.chmod(0o700)
