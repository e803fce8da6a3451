"""Bad input through the command line: one case a test, each checked the same way.

Every case in :data:`CASES` must give exit code 1 (one ``skipvsr: error:`` line) or 2
(argparse's usage and one ``error:`` line, or one ``skipvsr: error:`` line), no traceback, and
leave the folder as it was: no partial output, no job progress, existing files untouched.
The inputs are made here with PyAV and Pillow (tiny sizes, few frames); the model is a tiny
random BasicVSR unless a case names another one. After the refused cases come the edge cases
that must work: spaces and non-ASCII in paths, 10-bit and 4:4:4 input, 29.97 and 23.976 fps.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import skipvsr.cli.upscale as upscale_command
from skipvsr.api import Upscaler
from skipvsr.api import load as real_load
from skipvsr.cli.args import default_model
from skipvsr.cli.main import main
from skipvsr.video.job import job_folder
from skipvsr.weights import resolve
from tests.conftest import tiny_model
from tests.test_jobs import stopped_after_two_chunks
from tests.test_video_io import frame_image, make_clip, write_rgb48_png


@dataclass(frozen=True)
class Case:
    """``setup(tmp_path, clip)`` makes what the case needs and returns the command line;
    ``code`` is the expected exit code and ``needle`` a piece of the error line."""

    setup: Callable[[Path, Path], list[str]]
    code: int
    needle: str


def up(*args) -> list[str]:
    """``skipvsr upscale ARGS --quiet`` (no progress bar on stderr next to the error line), with
    ``--full`` unless ARGS route: the tiny model cannot reach the shipped model's budget."""
    routed = {"--threshold", "--budget", "--policy", "--full"} & {str(a) for a in args}
    return ["upscale", *map(str, args), "--quiet", *([] if routed else ["--full"])]


def folder_of(tmp: Path, *images: np.ndarray, name: str = "frames") -> Path:
    folder = tmp / name
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return folder


def broken_file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def encoded(path: Path, pix_fmt: str = "yuv420p", rotation: int = 0, **options) -> Path:
    """Two 32x24 libx264 frames in ``pix_fmt``, with a display ``rotation`` or encoder
    ``options`` (interlacing)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10, options=options)
        vs.width, vs.height, vs.pix_fmt = 32, 24, pix_fmt
        if rotation:
            vs.set_display_rotation(rotation)
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(frame_image(i, 32, 24), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    return path


def mounted(tmp: Path, options: str) -> Path:
    """A tmpfs under ``tmp`` (root only; the test is skipped where mounting is not allowed)."""
    point = tmp / "mnt"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    return point


def full_disk(tmp: Path, clip: Path) -> list[str]:
    point = mounted(tmp, "size=64k")
    (point / "filler").write_bytes(b"\0" * (60 * 1024))
    return up(clip, "-o", point / "out.mkv")


def interrupted_job(tmp: Path, clip: Path) -> Path:
    """An output whose job was stopped after two chunks (progress kept beside it)."""
    out = tmp / "out.mp4"
    stopped_after_two_chunks(up(clip, "-o", out, "--chunk", "1", "--chunk-overlap", "0"))
    return out


def resume_other_input(tmp: Path, clip: Path) -> list[str]:
    out = interrupted_job(tmp, clip)
    make_clip(clip, n=5, w=16, h=16)
    return up(clip, "-o", out, "--chunk", "1", "--chunk-overlap", "0", "--resume")


def resume_other_settings(tmp: Path, clip: Path) -> list[str]:
    out = interrupted_job(tmp, clip)
    return up(clip, "-o", out, "--chunk", "1", "--chunk-overlap", "0", "--resume", "--seed", "3")


def resume_damaged_segment(tmp: Path, clip: Path) -> list[str]:
    out = interrupted_job(tmp, clip)
    (job_folder(out) / "chunk_000000.npz").write_bytes(b"PK\x03\x04 torn")
    return up(clip, "-o", out, "--chunk", "1", "--chunk-overlap", "0", "--resume")


def truncated_model(tmp: Path, clip: Path) -> list[str]:
    shipped = resolve("skipvsr-vimeo-bi").read_bytes()
    bad = broken_file(tmp, "half.pt", shipped[: len(shipped) // 2])
    return up(clip, "-o", tmp / "o.mp4", "--model", bad)


def wrong_shapes_model(tmp: Path, clip: Path) -> list[str]:
    torch.save({"params": tiny_model(num_block=2).state_dict()}, tmp / "tiny.pth")
    return up(clip, "-o", tmp / "o.mp4", "--model", tmp / "tiny.pth")


def config(tmp: Path, text: str) -> list[str]:
    (tmp / "c.yaml").write_text(text)
    return ["train", "--config", str(tmp / "c.yaml")]


def symlink_loop_folder(tmp: Path, clip: Path) -> list[str]:
    folder = tmp / "frames"
    folder.mkdir()
    (folder / "0001.png").symlink_to(folder / "0001.png")
    (folder / "sub").symlink_to(folder)
    return up(folder, "-o", tmp / "out")


def symlink_loop_file(tmp: Path, clip: Path) -> list[str]:
    (tmp / "loop.mp4").symlink_to(tmp / "loop.mp4")
    return up(tmp / "loop.mp4", "-o", tmp / "o.mp4")


def name_clash(tmp: Path, clip: Path) -> list[str]:
    for d in ("a", "b"):
        (tmp / d).mkdir()
        shutil.copy(clip, tmp / d / "x.mp4")
    return up(tmp / "a" / "x.mp4", tmp / "b" / "x.mp4", "-o", tmp / "out")


def existing(tmp: Path, name: str, data: bytes = b"keep me") -> Path:
    return broken_file(tmp, name, data)


M = "skipvsr-vimeo-bi"
CASES = {
    # argument values (exit 2)
    "threshold out of range": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--threshold", "1.5"),
                                   2, "threshold must be in [0.0, 1.0)"),
    "budget below the floor": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--budget", "0.1"),
                                   2, "budget must be in [0.246, 1]"),
    "unknown policy": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--policy", "best"),
                           2, "invalid choice"),
    "frozen policy without budget": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--policy",
                                                         "shallow"), 2, "needs --budget"),
    "chunk 0": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--chunk", "0"), 2, "chunk must be >="),
    "negative overlap": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--chunk-overlap", "-1"),
                             2, "chunk-overlap must be >= 0"),
    "max-frames 0": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--max-frames", "0"),
                         2, "max-frames must be >= 1"),
    "negative start": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--start", "-1"),
                           2, "start must be in"),
    "crf not a number": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--crf", "best"),
                             2, "crf must be an integer"),
    "tile and patch": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--tile", "64", "--patch", "48"),
                           2, "give one of them"),
    "stride over patch": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--patch", "16", "--stride",
                                              "32"), 2, "--stride must be <= --patch"),
    "no output given": Case(lambda t, c: up(c), 2, "the following arguments are required"),
    "macs size": Case(lambda t, c: ["macs", "--size", "180by320"], 2, "size must be HxW"),
    # what names the input (exit 2)
    "stdin as input": Case(lambda t, c: up("-", "-o", t / "o.mp4"), 2, "'-' (stdin)"),
    "URL as input": Case(lambda t, c: up("https://example.com/a.mp4", "-o", t / "o.mp4"),
                         2, "is a URL"),
    "glob that matches nothing": Case(lambda t, c: up(t / "*.xyz", "-o", t / "out"),
                                      2, "matches nothing"),
    "missing list file": Case(lambda t, c: up(f"@{t / 'list.txt'}", "-o", t / "out"),
                              2, "list file"),
    "list file naming nothing": Case(lambda t, c: up(f"@{existing(t, 'l.txt', b'# none')}", "-o",
                                                     t / "out"), 2, "names no inputs"),
    "two inputs, one output name": Case(name_clash, 2, "would both write"),
    "batch output is a file": Case(lambda t, c: up(c, c, "-o", existing(t, "f.mp4")),
                                   2, "is a file"),
    "output is the input": Case(lambda t, c: up(c, "-o", c, "--overwrite"), 2, "input itself"),
    "stats folder missing": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--stats",
                                                 t / "no" / "s.json"), 2, "does not exist"),
    # input files (exit 1)
    "missing input": Case(lambda t, c: up(t / "nope.mp4", "-o", t / "o.mp4"), 1, "does not exist"),
    "missing non-ASCII input": Case(lambda t, c: up(t / "vidéo d'été 夏.mp4", "-o", t / "o.mp4"),
                                    1, "does not exist"),
    "text as video": Case(lambda t, c: up(broken_file(t, "t.mp4", b"no video\n" * 50), "-o",
                                          t / "o.mp4"), 1, "not a readable media file"),
    "empty file": Case(lambda t, c: up(broken_file(t, "e.mp4", b""), "-o", t / "o.mp4"),
                       1, "not a readable media file"),
    "audio only": Case(lambda t, c: up(make_clip(t / "s.mp4", video=False), "-o", t / "o.mp4"),
                       1, "no video stream"),
    "truncated video": Case(lambda t, c: up(broken_file(t, "cut.mp4", c.read_bytes()[:700]),
                                            "-o", t / "o.mp4"), 1, "cut.mp4"),
    "rotation metadata (phone portrait)": Case(lambda t, c: up(encoded(t / "r.mp4", rotation=90),
                                                               "-o", t / "o.mp4"),
                                               1, "rotated by 90 degrees"),
    "interlaced": Case(lambda t, c: up(encoded(t / "i.mp4", flags="+ilme+ildct",
                                               **{"x264-params": "tff=1"}), "-o", t / "o.mp4"),
                       1, "is interlaced"),
    "1x1 frame": Case(lambda t, c: up(folder_of(t, frame_image(0, 1, 1)), "-o", t / "o"),
                      1, "frames are 1x1"),
    "4000x4000 frame": Case(lambda t, c: up(folder_of(t, np.zeros((4000, 4000, 3), np.uint8)),
                                            "-o", t / "o"), 1, "--tile 256"),
    "16-bit PNG": Case(lambda t, c: up(png48_folder(t), "-o", t / "o"), 1, "16-bit RGB PNG"),
    "grayscale PNG": Case(lambda t, c: up(folder_of(t, frame_image(0, 16, 16)[..., 0]), "-o",
                                          t / "o"), 1, "8-bit grayscale PNG"),
    "frames of two sizes": Case(lambda t, c: up(folder_of(t, frame_image(0, 16, 16),
                                                          frame_image(1, 18, 16)), "-o", t / "o"),
                                1, "differs from 16x16"),
    "corrupt PNG": Case(lambda t, c: up(_move_into_folder(t, broken_file(t, "x.png", b"\x89PNG")),
                                        "-o", t / "o"), 1, "not a readable image"),
    "empty frame folder": Case(lambda t, c: up(folder_of(t), "-o", t / "o"),
                               1, "no .png/.jpg frames"),
    "symlink loop in a frame folder": Case(symlink_loop_folder, 1, "no .png/.jpg frames"),
    "symlink loop as input": Case(symlink_loop_file, 1, "looping symlink"),
    "start past the end": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--start", "100"),
                               1, "no video frames after start"),
    # outputs (exit 1)
    "existing output": Case(lambda t, c: up(c, "-o", existing(t, "o.mp4")), 1, "already exists"),
    "output folder missing": Case(lambda t, c: up(c, "-o", t / "no" / "o.mp4"),
                                  1, "does not exist"),
    "output under a file": Case(lambda t, c: up(c, "-o", existing(t, "f") / "o.mp4"),
                                1, "is a file"),
    "read-only output folder": Case(lambda t, c: up(c, "-o", mounted(t, "ro,size=64k") / "o.mp4"),
                                    1, "not writable"),
    "full disk": Case(full_disk, 1, "No space left on device"),
    "suffix no muxer takes": Case(lambda t, c: up(c, "-o", t / "o.txt"), 1, "suffix .txt"),
    "codec the container refuses": Case(lambda t, c: up(c, "-o", t / "o.webm", "--codec",
                                                        "libx264"), 1, "cannot go in a .webm"),
    "unknown codec": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--codec", "nope"),
                          1, "not an available encoder"),
    "crf out of range": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--crf", "99"), 1, "crf: 99"),
    # models and resumed jobs
    "unknown model": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--model", "nope"),
                          1, "model must be one of"),
    "corrupted checkpoint": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--model",
                                                 broken_file(t, "b.pth", b"garbage" * 99)),
                                 1, "not a loadable weights-only file"),
    "truncated fp16 model": Case(truncated_model, 1, "not a loadable weights-only file"),
    "checkpoint of another shape": Case(wrong_shapes_model, 1, "tiny.pth"),
    "CUDA without a GPU": Case(lambda t, c: up(c, "-o", t / "o.mp4", "--model", M, "--device",
                                               "cuda"), 1, "no CUDA device"),
    "--resume against another input": Case(resume_other_input, 1, "not the one this job"),
    "--resume with a damaged segment": Case(resume_damaged_segment, 1, "is damaged"),
    "--resume with other settings": Case(resume_other_settings, 1, "--resume: route.seed is 3"),
    # training configs
    "config with a wrong type": Case(lambda t, c: config(t, "steps: ten\n"), 1, "expected int"),
    "config that is not YAML": Case(lambda t, c: config(t, "steps: [1,\n"), 1, "not valid YAML"),
    "config that is a list": Case(lambda t, c: config(t, "- 1\n- 2\n"), 1, "a YAML mapping"),
    "config with an unknown key": Case(lambda t, c: config(t, "lerning_rate: 1\n"),
                                       1, "unknown config key"),
    "missing config": Case(lambda t, c: ["train", "--config", str(t / "no.yaml")],
                           1, "No such file"),
    "train --resume without a run": Case(lambda t, c: ["train", "--resume", str(t)],
                                         1, "no last.pt"),
}  # fmt: skip


def png48_folder(tmp: Path) -> Path:
    write_rgb48_png(tmp / "f.png", 16, 16)
    return _move_into_folder(tmp, tmp / "f.png")


def _move_into_folder(tmp: Path, image: Path) -> Path:
    folder = tmp / "frames"
    folder.mkdir(exist_ok=True)
    image.rename(folder / image.name)
    return folder


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` with its bytes (files) or kind, without following links."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = "link"
        elif path.is_file():
            out[key] = path.read_bytes()
        else:
            out[key] = "dir"
    return out


@pytest.fixture
def tiny_default(monkeypatch):
    """The default model is a tiny random BasicVSR; a named one loads for real."""

    def load(name, device="cpu", precision="fp32"):
        if name == default_model():
            return Upscaler(tiny_model(num_block=2), device=device, precision=precision)
        return real_load(name, device=device, precision=precision)

    monkeypatch.setattr(upscale_command, "load", load)


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, tiny_default, capsys, monkeypatch):
    case = CASES[name]
    if name == "CUDA without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    clip = make_clip(work / "in.mp4", n=3, w=16, h=16)
    argv = case.setup(work, clip)
    capsys.readouterr()
    before = snapshot(work)
    try:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
        err = capsys.readouterr().err
        after = snapshot(work)
    finally:
        if (work / "mnt").is_mount():
            subprocess.run(["umount", str(work / "mnt")], check=True)
    assert code == case.code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert case.needle in lines[-1], err
    assert len([ln for ln in lines if "error:" in ln]) == 1, err
    assert all(ln.startswith(("usage:", " ")) for ln in lines[:-1]), err
    assert after == before


def encode_clip(path: Path, rate: Fraction, pix_fmt: str = "yuv420p", n: int = 4) -> Path:
    """``n`` 16x16 frames at ``rate`` (1/rate apart in a 1/90000 time base) in ``pix_fmt``."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = 16, 16, pix_fmt
        vs.codec_context.time_base = Fraction(1, 90000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frame_image(i, 16, 16), format="rgb24")
            frame.pts, frame.time_base = round(i * 90000 / rate), Fraction(1, 90000)
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    return path


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return [float(f.pts * vs.time_base) for f in c.decode(vs)]


@pytest.mark.parametrize(
    "name, rate, pix_fmt",
    [
        ("spaces and ünïcödé 夏.mp4", Fraction(25), "yuv420p"),
        ("ten bit.mkv", Fraction(25), "yuv420p10le"),
        ("four four four.mkv", Fraction(25), "yuv444p"),
        ("ntsc.mp4", Fraction(30000, 1001), "yuv420p"),
        ("film.mkv", Fraction(24000, 1001), "yuv420p"),
    ],
)
def test_edge_inputs_that_work(name, rate, pix_fmt, tmp_path, tiny_default):
    folder = tmp_path / "in put ü"
    folder.mkdir()
    clip = encode_clip(folder / name, rate, pix_fmt)
    out = tmp_path / "out ü" / f"x4 {name}"
    out.parent.mkdir()
    assert main(up(clip, "-o", out)) == 0
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (64, 64)
        assert vs.codec_context.pix_fmt == "yuv420p"
    assert frame_times(out) == pytest.approx([i / float(rate) for i in range(4)], abs=1e-3)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
