"""The demo and the shipped model: real clip in, real video with audio out."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from skipvsr.cli.demo import clip_path
from skipvsr.video.io import probe
from skipvsr.weights import REGISTRY, load_model, resolve, sha256
from tests.conftest import moving_clip

SHIPPED = ["skipvsr-vimeo-bi", "skipvsr-vimeo-bi-ft"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_registered_small_and_loads_as_float32(name):
    path = resolve(name)
    assert sha256(path) == REGISTRY[name]["sha256"]
    assert path.stat().st_size < 14_000_000  # float16 storage
    model = load_model(name)
    assert model.has_estimators
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_at_full_cost_is_the_official_model_bit_for_bit(name):
    import skipvsr

    lr = moving_clip(t=3, h=16, w=20)
    shipped, _ = skipvsr.load(name).upscale(lr, skipvsr.Route(threshold=0.0))
    official, _ = skipvsr.load("basicvsr-vimeo-bi").upscale(lr)
    assert torch.equal(shipped, official)


def test_shipped_model_reaches_a_budget():
    import skipvsr

    up = skipvsr.load("skipvsr-vimeo-bi")
    sr, stats = up.upscale(moving_clip(t=12, h=32, w=48), skipvsr.Route.for_budget(0.63))
    assert sr.shape == (12, 3, 128, 192)
    assert abs(stats.mac_fraction - 0.63) <= 0.02


def test_demo_runs_on_a_few_frames(tmp_path):
    try:
        src = clip_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "demo.mp4"
    r = subprocess.run(
        [sys.executable, "-m", "skipvsr", "demo", "-o", str(out), "--frames", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "PSNR (RGB) vs the 640x360 original" in r.stdout
    info, original = probe(out), probe(src)
    assert (info.width, info.height, info.frames) == (640, 360, 3)
    audio = [s for s in info.streams if s.type == "audio"]
    assert audio and audio[0].codec == [s for s in original.streams if s.type == "audio"][0].codec
