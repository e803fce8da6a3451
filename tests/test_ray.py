"""``skipvsr upscale --ray`` on a local Ray with 2 workers: the same files as one process, also
when a worker is killed in the middle of a job (Ray runs its task again).

Skipped without Ray (``pip install 'skipvsr[ray]'``). The model is the tiny random BasicVSR,
slowed a little per chunk so that a kill lands while tasks run. The single-process reference
runs in a fresh process, like the workers: run inside the long-lived test process after the
whole suite, one output pixel once differed from the workers' by 1 (same thread count; the cause
was not pinned down).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import skipvsr.cli.upscale as upscale_command
from skipvsr.api import Upscaler
from skipvsr.cli.main import main
from skipvsr.cli.ray_jobs import ranges
from tests.conftest import REPO, tiny_model
from tests.test_jobs import cli, content, finish
from tests.test_video_io import make_clip

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'skipvsr[ray]'")

CHUNKING = ["--chunk", "2", "--chunk-overlap", "1", "--quiet", "--full"]


class Slow(Upscaler):
    """The tiny model, sleeping ``delay`` s per chunk and noting its worker's pid in
    ``pids`` (a folder) when it has one."""

    delay = 0.0
    pids: str | None = None

    def upscale(self, lr, *args, **kw):
        if self.pids:
            Path(self.pids, str(os.getpid())).touch()
        time.sleep(self.delay)
        return super().upscale(lr, *args, **kw)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}},
    )
    yield
    ray.shutdown()


@pytest.fixture
def slow_model(monkeypatch):
    import torch

    model = Slow(tiny_model(num_block=2))
    monkeypatch.setattr(upscale_command, "load", lambda *a, **k: model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model
    torch.set_num_threads(threads)


def test_ranges_cover_the_chunks_once():
    assert ranges(0, 10, 3) == [(0, 4), (4, 8), (8, None)]
    assert ranges(4, 10, 2) == [(4, 7), (7, None)]
    assert ranges(0, None, 4) == [(0, None)] == ranges(0, 1, 4) == ranges(0, 9, 1)


def test_ray_output_equals_single_process(tmp_path, local_ray, slow_model):
    videos = tmp_path / "in"
    videos.mkdir()
    make_clip(videos / "long.mkv", n=14, w=16, h=16, subtitles=True)
    make_clip(videos / "short.mp4", n=3, w=16, h=16)
    one, many = tmp_path / "one", tmp_path / "many"
    code, err = finish(cli(str(videos), "-o", str(one), *CHUNKING))
    assert code == 0, err
    assert main(["upscale", str(videos), "-o", str(many), "--ray", *CHUNKING]) == 0
    for name in ("long.mkv", "short.mp4"):
        assert content(many / name) == content(one / name), name
    assert sorted(p.name for p in many.iterdir()) == ["long.mkv", "manifest.json", "short.mp4"]


def test_a_killed_worker_is_retried_and_the_output_is_the_same(tmp_path, local_ray, slow_model):
    clip = make_clip(tmp_path / "in.mp4", n=16, w=16, h=16)
    ref, out = tmp_path / "ref.mp4", tmp_path / "out.mp4"
    code, err = finish(cli(str(clip), "-o", str(ref), *CHUNKING))
    assert code == 0, err
    pids = tmp_path / "pids"
    pids.mkdir()
    slow_model.delay, slow_model.pids = 0.3, str(pids)
    killed = []

    def kill_one_worker():
        deadline = time.time() + 60
        while not killed and time.time() < deadline:
            for pid in (int(p.name) for p in pids.iterdir() if int(p.name) != os.getpid()):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    assert main(["upscale", str(clip), "-o", str(out), "--ray", *CHUNKING]) == 0
    killer.join()
    assert killed, "no worker was killed"
    assert content(out) == content(ref)
