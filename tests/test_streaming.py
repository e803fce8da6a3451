"""Chunked streaming upscaler: equivalence, inputs, errors, interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skipvsr.frames import MediaError, to_tensor
from skipvsr.video.io import FrameSource
from skipvsr.video.overlay import MapView, block_colors
from skipvsr.video.streaming import MapVideo, bilinear_upscale, iter_chunks, upscale_media
from tests.test_video_io import frame_image, make_clip, packets, probe, video_times


def read_all(path: Path) -> np.ndarray:
    with FrameSource(path) as src:
        return np.stack([f for f, _, _ in src])


class Recorder:
    """Wraps an upscaler and records the clip lengths it was called with."""

    def __init__(self, fn=bilinear_upscale):
        self.fn, self.calls = fn, []

    def __call__(self, lr):
        self.calls.append(lr.shape[0])
        return self.fn(lr)


@pytest.mark.parametrize("n, chunk, overlap", [(1, 4, 2), (7, 3, 0), (10, 4, 2), (10, 20, 3)])
def test_iter_chunks_covers_every_item_once(n, chunk, overlap):
    got = []
    for window, a, b in iter_chunks(range(n), chunk, overlap):
        assert len(window) <= chunk + 2 * overlap
        assert 0 < b - a <= chunk
        lo = window[0]
        assert window == list(range(lo, lo + len(window)))
        assert a == min(overlap, window[a])  # full left context unless at the start
        got.extend(window[a:b])
    assert got == list(range(n))


def test_folder_chunked_equals_whole_for_per_frame_model(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(9):
        Image.fromarray(frame_image(i, 13, 11)).save(folder / f"{i}.png")  # odd size
    rec = Recorder()
    summary = upscale_media(folder, tmp_path / "out", rec, chunk=4, overlap=2, progress=False)
    assert summary.frames == 9 and len(summary.chunks) == 3
    assert [(c.output_frames, c.input_frames) for c in summary.chunks] == [(4, 6), (4, 7), (1, 3)]
    assert rec.calls == [6, 7, 3]
    with FrameSource(folder) as src:
        lr = to_tensor([f for f, _, _ in src])
    whole = bilinear_upscale(lr)[0].mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(read_all(tmp_path / "out"), whole)


def test_video_round_trip_through_streaming(tmp_path, capsys):
    clip = make_clip(tmp_path / "a.mp4", n=15)
    out = tmp_path / "out.mp4"
    summary = upscale_media(clip, out, bilinear_upscale, chunk=4, overlap=1, progress=False)
    assert capsys.readouterr().out == ""  # printing is the command's business
    line = summary.line(", note")
    assert line.startswith("15 frames in") and "frames/s, note) -> " in line
    a, b = probe(clip), probe(out)
    assert (b.frames, b.width, b.height) == (15, 256, 192)
    assert b.fps == pytest.approx(a.fps) and abs(b.duration - a.duration) <= 1 / a.fps
    assert packets(out, "audio") == packets(clip, "audio")
    assert all(c.stats is None for c in summary.chunks) and summary.messages == []
    assert summary.as_dict()["chunks"][0] == {"index": 0, "output_frames": 4, "input_frames": 5}


def test_tiny_basicvsr_chunked_close_to_whole(tmp_path):
    """Real recurrence: chunking changes results slightly.

    Measured 67-75 dB PSNR against whole-sequence here (random weights barely propagate);
    the threshold only catches gross mistakes such as misaligned or duplicated frames.
    """
    from skipvsr.backbone import BasicVSR

    torch.manual_seed(0)
    model = BasicVSR(num_feat=8, num_block=2).eval()

    def fn(lr):
        return model(lr[None]).sr[0].clamp(0, 1), {"mac_fraction": 1.0}

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(frame_image(i, 12, 8)).save(folder / f"{i}.png")
    upscale_media(folder, tmp_path / "out", fn, chunk=2, overlap=1, progress=False)
    with FrameSource(folder) as src, torch.inference_mode():
        whole = fn(to_tensor([f for f, _, _ in src]))[0]
    whole = whole.mul(255).round().permute(0, 2, 3, 1).numpy()
    err = read_all(tmp_path / "out").astype(np.float64) - whole
    psnr = 10 * np.log10(255**2 / max(np.mean(err**2), 1e-12))
    print(f"chunked vs whole: {psnr:.1f} dB")
    assert psnr > 40, psnr


def test_one_frame_and_small_frames(tmp_path):
    clip = make_clip(tmp_path / "one.mp4", n=1, audio=None)
    summary = upscale_media(clip, tmp_path / "o.mp4", bilinear_upscale, progress=False)
    assert summary.frames == 1 and probe(tmp_path / "o.mp4").frames == 1
    folder = tmp_path / "tiny"
    folder.mkdir()
    Image.fromarray(frame_image(0, 6, 9)).save(folder / "0.png")
    with pytest.raises(MediaError, match="6x9.*at least 8x8"):
        upscale_media(folder, tmp_path / "t", bilinear_upscale, progress=False)
    assert not (tmp_path / "t").exists()


def test_zero_frames_and_bad_arguments(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", n=5)
    with pytest.raises(MediaError, match="no video frames"):
        upscale_media(clip, tmp_path / "o.mp4", bilinear_upscale, start=30.0, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MediaError, match="no .png/.jpg frames"):
        upscale_media(empty, tmp_path / "o.mp4", bilinear_upscale, progress=False)
    with pytest.raises(MediaError, match="chunk"):
        upscale_media(clip, tmp_path / "o.mp4", bilinear_upscale, chunk=0, progress=False)
    with pytest.raises(MediaError, match="does not exist"):
        upscale_media(tmp_path / "nope.mp4", tmp_path / "o.mp4", bilinear_upscale, progress=False)
    (tmp_path / "o.mp4").write_bytes(b"old")
    with pytest.raises(MediaError, match="already exists"):
        upscale_media(clip, tmp_path / "o.mp4", bilinear_upscale, progress=False)
    assert (tmp_path / "o.mp4").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "empty", "o.mp4"]


def test_failing_model_leaves_nothing(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", n=12)

    def broken(lr):
        if broken.calls:
            raise RuntimeError("model exploded")
        broken.calls += 1
        return bilinear_upscale(lr)

    broken.calls = 0
    with pytest.raises(RuntimeError, match="exploded"):
        upscale_media(clip, tmp_path / "o.mp4", broken, chunk=4, overlap=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
    with pytest.raises(MediaError, match="returned shape"):
        upscale_media(clip, tmp_path / "o.mp4", lambda lr: (lr, {}), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


# The job restores Python's own SIGINT handler: a parent (pytest after other tests, e.g. Ray's)
# may pass SIGINT on as ignored, which a user's shell never does.
SLOW_JOB = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from skipvsr.video.streaming import bilinear_upscale, upscale_media
def slow(lr):
    time.sleep(0.2)
    return bilinear_upscale(lr)
upscale_media(sys.argv[1], sys.argv[2], slow, chunk=2, overlap=1, progress=False)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_job_leaves_no_partial_output(tmp_path, sig):
    clip = make_clip(tmp_path / "a.mp4", n=40)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SLOW_JOB), str(clip), str(out)],
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 30
    while not list(tmp_path.glob(".out.skipvsr-tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let it write a few chunks
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def routed_upscale(lr):
    """Bilinear x4 whose "stats" are routing maps ``(T, 1, 2)``: frame ``i`` of
    :func:`frame_image` (blue level ``40 + i``) ran 0 blocks on its left patch and 60 on its
    right when ``i`` is even, the other way round when odd."""
    index = (lr[:, 2, 0, 0] * 255).round().long() - 40
    left = np.where(index.numpy() % 2 == 0, 0, 60)
    return bilinear_upscale(lr)[0], np.stack([left, 60 - left], -1)[:, None, :]


def test_routing_map_video_matches_the_output_frame_for_frame(tmp_path):
    stamps = [0, 100, 150, 400, 450, 500, 800, 1000, 1040]  # ms: variable frame rate
    clip = make_clip(tmp_path / "v.mkv", n=len(stamps), pts=stamps, audio=None)
    out, side = tmp_path / "out.mp4", tmp_path / "side.mp4"
    summary = upscale_media(
        clip, out, routed_upscale, chunk=4, overlap=1, progress=False,
        maps=(MapVideo(side, MapView(side_by_side=True)),), map_fn=lambda maps: maps,
    )  # fmt: skip
    assert summary.frames == len(stamps)
    main, drawn = probe(out), probe(side)
    assert drawn.frames == main.frames == len(stamps)
    assert video_times(side) == video_times(out)
    assert drawn.width == MapView(side_by_side=True).size(main.width, main.height)[0]


def test_routing_map_colours_follow_each_frames_map(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        Image.fromarray(frame_image(i, 16, 12)).save(folder / f"{i}.png")
    maps = tmp_path / "maps"
    upscale_media(
        folder, tmp_path / "out", routed_upscale, chunk=3, overlap=1, progress=False,
        maps=(MapVideo(maps, MapView(alpha=1.0)),), map_fn=lambda m: m,
    )  # fmt: skip
    low, high = block_colors(np.array([0, 60]))
    drawn = read_all(maps)
    assert len(drawn) == 7
    for i, frame in enumerate(drawn):
        left, right = (low, high) if i % 2 == 0 else (high, low)
        assert (frame[:, :32] == left).all() and (frame[:, 32:64] == right).all(), i


def test_routing_map_video_is_drawn_chunk_by_chunk(tmp_path):
    """Bounded memory by construction: each chunk's maps are asked for once, for that chunk's
    window only, and its frames are written before later chunks are computed."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(frame_image(i, 16, 12)).save(folder / f"{i}.png")
    windows, written = [], []

    def upscale(lr):
        if len(windows) == 2:  # third chunk: the first one's 3 maps reach the disk meanwhile
            deadline = time.time() + 10
            while len(files()) < 3 and time.time() < deadline:
                time.sleep(0.02)
            written.append(len(files()))
        return routed_upscale(lr)

    def files():
        return [f for d in tmp_path.glob(".maps.skipvsr-tmp-*") for f in d.iterdir()]

    def map_fn(maps):
        windows.append(len(maps))
        return maps

    upscale_media(
        folder, tmp_path / "out", upscale, chunk=3, overlap=1, progress=False,
        maps=(MapVideo(tmp_path / "maps"),), map_fn=map_fn,
    )  # fmt: skip
    assert windows == [4, 5, 5, 4] and max(windows) <= 3 + 2 * 1
    assert written[0] >= 3
    assert len(list((tmp_path / "maps").iterdir())) == 12


def test_routing_map_outputs_are_checked_first(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", n=3)
    with pytest.raises(MediaError, match="maps: .* is written twice"):
        upscale_media(clip, tmp_path / "o.mp4", routed_upscale, progress=False,
                      maps=(MapVideo(tmp_path / "o.mp4"),), map_fn=lambda m: m)  # fmt: skip
    with pytest.raises(MediaError, match="map_fn: None"):
        upscale_media(clip, tmp_path / "o.mp4", routed_upscale, progress=False,
                      maps=(MapVideo(tmp_path / "m.mp4"),))  # fmt: skip
    with pytest.raises(MediaError, match=r"map_fn: returned routing maps of shape \(1, 2\)"):
        upscale_media(clip, tmp_path / "o.mp4", routed_upscale, progress=False,
                      maps=(MapVideo(tmp_path / "m.mp4"),), map_fn=lambda m: m[0])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
