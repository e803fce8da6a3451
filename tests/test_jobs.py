"""Resumable jobs and batches: ``skipvsr upscale --resume`` after SIGKILL gives the same file as
an uninterrupted run, other settings or another input are refused, many inputs run in one
command; ``skipvsr train --resume`` after SIGKILL gives the same weights.

The command runs in subprocesses with a tiny random BasicVSR in place of the shipped model
(:data:`TINY_CLI`), slowed a little per chunk so that a kill lands in the middle of a job.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import skipvsr.cli.upscale as upscale_command
from skipvsr.api import Upscaler
from skipvsr.cli.main import main
from skipvsr.video.io import FrameSource
from skipvsr.video.job import job_folder
from tests.conftest import REPO, tiny_model
from tests.test_training import make_cache
from tests.test_video_io import make_clip

TINY_CLI = """
import os, sys, time
import skipvsr.cli.upscale as up
from skipvsr.api import Upscaler
from skipvsr.cli.main import main
from tests.conftest import tiny_model

class Slow(Upscaler):
    def upscale(self, lr, *args, **kw):
        time.sleep(float(os.environ.get("SKIPVSR_TEST_DELAY", "0")))
        return super().upscale(lr, *args, **kw)

up.load = lambda *args, **kw: Slow(tiny_model(num_block=2))
sys.exit(main(sys.argv[1:]))
"""
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CHUNKING = ["--chunk", "2", "--chunk-overlap", "1", "--quiet", "--full"]


def cli(*args: str, delay: float = 0.0) -> subprocess.Popen:
    """``skipvsr upscale`` with the tiny model, in a subprocess (stderr piped)."""
    env = {**ENV, "SKIPVSR_TEST_DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, "-c", TINY_CLI, "upscale", *args],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


def kill_when(proc: subprocess.Popen, ready, what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (fail if it ends first)."""
    deadline = time.time() + 60
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.stderr.read().decode()}"
        assert time.time() < deadline, f"never reached {what}"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def content(path: Path) -> dict:
    """What must match between two outputs: decoded frames, video timestamps, and every other
    stream's packets (payload and timing)."""
    with FrameSource(path) as src:
        frames = [(rgb.tobytes(), pts) for rgb, pts, _ in src]
    with av.open(str(path)) as c:
        other = {
            s.index: [(bytes(p), p.pts, p.dts) for p in c.demux(s) if p.size]
            for s in c.streams
            if s.type != "video"
        }
    return {"frames": frames, "other": other}


def stopped_after_two_chunks(argv: list[str]) -> None:
    """Run the command in this process with Ctrl-C as its third chunk starts."""
    real, calls = Upscaler.upscale, []

    def third_interrupts(self, lr, *args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, lr, *args, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Upscaler, "upscale", third_interrupts)
        assert main(argv) == 130


@pytest.fixture
def tiny_load(monkeypatch):
    """The command in this process with the tiny model, on one thread like :func:`cli`."""
    monkeypatch.setattr(upscale_command, "load", lambda *a, **k: Upscaler(tiny_model(num_block=2)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sigkill_at_three_random_points_then_resume_is_identical(tmp_path, tiny_load):
    clip = make_clip(tmp_path / "in.mkv", n=24, w=32, h=24, subtitles=True)
    ref, out = tmp_path / "ref.mkv", tmp_path / "out.mkv"
    assert main(["upscale", str(clip), "-o", str(ref), *CHUNKING]) == 0
    folder = job_folder(out)
    rng = random.Random(14)
    points = sorted(rng.sample(range(1, 12), 3))  # chunks finished when the kill lands
    for i, k in enumerate(points):
        resume = ["--resume"] if i else []
        proc = cli(str(clip), "-o", str(out), *CHUNKING, *resume, delay=0.05)
        kill_when(proc, lambda k=k: (folder / f"chunk_{k - 1:06d}.npz").exists(), f"chunk {k}")
        assert not out.exists()
    assert main(["upscale", str(clip), "-o", str(out), *CHUNKING, "--resume"]) == 0
    assert not folder.exists()
    assert content(out) == content(ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "in.srt", "out.mkv", "ref.mkv"]


def test_identical_runs_write_identical_files(tmp_path):
    # With the commands' heap-reusing allocator and one arena, libx264 read bytes it never
    # wrote, and the encoded stream of the same job differed in most runs (filled_heap).
    clip = make_clip(tmp_path / "in.mp4", n=14, w=16, h=16)
    outs = [tmp_path / f"out{i}.mp4" for i in range(3)]
    runs = "\n".join(
        f"assert main({['upscale', str(clip), '-o', str(out), *CHUNKING]!r}) == 0" for out in outs
    )
    script = TINY_CLI.replace("sys.exit(main(sys.argv[1:]))", runs)
    env = {**ENV, "MALLOC_ARENA_MAX": "1"}
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True, timeout=120)
    streams = []
    for out in outs:
        with av.open(str(out)) as c:
            streams.append([bytes(p) for p in c.demux(c.streams.video[0]) if p.size])
    assert streams[1] == streams[0] and streams[2] == streams[0]


def test_resume_refuses_other_settings_and_another_input(tmp_path, tiny_load, capsys):
    clip = make_clip(tmp_path / "in.mp4", n=16, w=32, h=24)
    out = tmp_path / "out.mp4"
    stopped_after_two_chunks(["upscale", str(clip), "-o", str(out), *CHUNKING])
    kept = sorted(p.name for p in job_folder(out).iterdir())
    assert kept == ["chunk_000000.npz", "chunk_000001.npz", "job.json"]
    capsys.readouterr()

    def refused(*extra: str) -> str:
        assert main(["upscale", str(clip), "-o", str(out), *CHUNKING, *extra]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        return err.strip()

    assert refused("--resume", "--crf", "20") == (
        "skipvsr: error: --resume: crf is 20 but the job started with 18; expected the same "
        "settings, or --overwrite to start over"
    )
    assert "--resume: threshold" not in refused("--resume", "--chunk", "3")
    assert "unfinished job (2 chunks done)" in refused()  # neither --resume nor --overwrite
    make_clip(clip, n=17, w=32, h=24)
    assert "is not the one this job started on" in refused("--resume")
    assert sorted(p.name for p in job_folder(out).iterdir()) == kept
    assert not out.exists()
    assert main(["upscale", str(clip), "-o", str(out), *CHUNKING, "--overwrite"]) == 0
    assert not job_folder(out).exists()


def test_resumed_routing_video_is_drawn_the_same(tmp_path, tiny_load):
    clip = make_clip(tmp_path / "in.mp4", n=8, w=32, h=24)
    routed = ["--chunk", "2", "--chunk-overlap", "1", "--quiet", "--threshold", "0.5"]

    def command(name: str) -> list[str]:
        out, routing = tmp_path / f"{name}.mp4", tmp_path / f"{name}_map.mkv"
        return ["upscale", str(clip), "-o", str(out), "--routing-video", str(routing), *routed]

    assert main(command("ref")) == 0
    stopped_after_two_chunks(command("out"))
    assert main([*command("out"), "--resume"]) == 0
    assert content(tmp_path / "out_map.mkv") == content(tmp_path / "ref_map.mkv")
    assert content(tmp_path / "out.mp4") == content(tmp_path / "ref.mp4")


def test_batch_goes_on_past_a_bad_input_and_reruns_skip_the_done(tmp_path, tiny_load, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_clip(videos / "a.mp4", n=3, w=16, h=16)
    make_clip(videos / "b.mkv", n=2, w=16, h=16, audio=None)
    (videos / "broken.mp4").write_text("not a video")
    frames = tmp_path / "frames"
    frames.mkdir()
    with FrameSource(videos / "a.mp4") as src:
        from PIL import Image

        for i, (rgb, _, _) in enumerate(src):
            Image.fromarray(rgb).save(frames / f"{i}.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# frames\n{frames}\n")
    out = tmp_path / "out"
    assert main(["upscale", str(videos), f"@{listing}", "-o", str(out), "--quiet", "--full"]) == 1
    captured = capsys.readouterr()
    rows = captured.out.strip().splitlines()
    assert rows[0].split() == ["input", "frames", "seconds", "MAC", "fraction", "status"]
    assert [r.split()[-1] for r in rows[1:3]] == ["done", "done"]
    assert "failed: input:" in rows[3] and "broken.mp4" in rows[3]
    assert rows[4].split()[:2] == [str(frames), "3"] and rows[4].endswith("done")
    assert captured.err.count("\n") == 1 and "broken.mp4: error: input:" in captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["status"] for m in manifest] == ["done", "done", "failed", "done"]
    assert manifest[0]["frames"] == 3 and manifest[0]["mac_fraction"] == 1.0
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mkv", "frames", "manifest.json"]
    (videos / "broken.mp4").unlink()
    assert (
        main(["upscale", str(videos / "*.m*"), str(frames), "-o", str(out), "--quiet", "--full"])
        == 0
    )
    statuses = [m["status"] for m in json.loads((out / "manifest.json").read_text())]
    assert statuses == ["skipped", "skipped", "skipped"]


TRAIN = dict(
    teacher="init:0", num_feat=8, num_block=4, target_every=2, tfa_interval=2, steps=8,
    patch=12, num_frames=3, cell=6, val_every=0, threads=1, ckpt_every=1, ckpt_minutes=1e6,
    lr=1e-3, full_prob=0.3, target="hr",
)  # fmt: skip


def test_training_sigkill_at_three_random_points_then_resume_is_identical(tmp_path):
    from skipvsr.train.loop import make_config, train

    cache = make_cache(tmp_path / "cache")
    ref = train(make_config({**TRAIN, "data": str(cache), "run_dir": str(tmp_path / "ref")}))
    run = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({**TRAIN, "data": str(cache), "run_dir": str(run)}))

    rng = random.Random(14)
    for k in sorted(rng.sample(range(1, TRAIN["steps"]), 3)):
        how = ["--resume", str(run)] if (run / "last.pt").exists() else ["--config", str(config)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "skipvsr", "train", *how], cwd=REPO, env=ENV,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for line in proc.stdout:  # the step's log line comes just before its checkpoint
            if line.startswith(f"step {k}/"):
                break
        else:
            pytest.fail(f"ended before step {k}: {proc.stderr.read()}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert main(["train", "--resume", str(run)]) == 0
    a = torch.load(ref, weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == TRAIN["steps"]
    for key, value in a["student"].items():
        assert torch.equal(value, b["student"][key]), key


def test_segments_hold_frames_and_stamps_exactly(tmp_path):
    from fractions import Fraction

    from skipvsr.video.job import Resumable

    job = Resumable(tmp_path / "job", stats_to_json=lambda s: s, stats_from_json=lambda d: d)
    job.folder.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    stamps = [(0, Fraction(1, 30000)), (1001, Fraction(1, 30000)), (2002, Fraction(1, 30000))]
    job.save(0, images, stamps, {"mac_fraction": 0.5})
    back, saved, stats = job.load(job.finished()[0])
    assert np.array_equal(back, images) and saved == stamps and stats == {"mac_fraction": 0.5}
    assert job.finished() == [job.segment(0)]
