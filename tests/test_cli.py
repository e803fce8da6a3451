"""CLI exit codes and one-line errors for bad arguments."""

from __future__ import annotations

import subprocess
import sys

import pytest

from skipvsr.cli.main import main
from tests.conftest import real_weights


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skipvsr", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["macs", "--budget", "0.1"], "budget must be in [0.246, 1]"),
        (["macs", "--size", "180by320"], "size must be HxW"),
        (["upscale", "x", "-o", "y", "--threshold", "1.5"], "threshold must be in [0.0, 1.0)"),
        (["upscale", "x", "-o", "y", "--policy", "best"], "invalid choice"),
        (["upscale", "x", "-o", "y", "--estimator-stride", "0"], "estimator-stride must be >= 1"),
        (["upscale", "x", "-o", "y", "--group", "0"], "group must be >= 1"),
        (
            ["upscale", "x", "-o", "y", "--cell", "tile"],
            "cell must be an integer >= 4 or 'frame', got 'tile'",
        ),
        (["eval", "--dataset", "vid4", "--cell", "2"], "cell must be an integer >= 4 or 'frame'"),
    ],
)
def test_usage_errors_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_group_without_rotate_is_a_usage_error(capsys):
    args = ["eval", "--dataset", "vid4", "--data-root", "x", "--json", "-", "--group", "3"]
    assert main(args) == 2
    assert "group needs policy 'rotate', got 'learned'" in capsys.readouterr().err


def test_a_group_that_does_not_divide_the_trunk_is_one_line_exit_2(tmp_path):
    model = real_weights()
    args = ["--model", model, "--policy", "rotate", "--budget", "0.6", "--group", "4"]
    r = run_cli("upscale", str(tmp_path), "-o", str(tmp_path / "o"), *args)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "group must divide the trunk's 30 blocks, got 4" in r.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_model_is_one_line_exit_1(tmp_path):
    (tmp_path / "in").mkdir()
    r = run_cli("upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "nope")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "model must be one of" in r.stderr
    assert "Traceback" not in r.stderr


def test_frozen_policy_without_budget_is_usage_error(tmp_path):
    r = run_cli("upscale", str(tmp_path), "-o", str(tmp_path / "o"), "--policy", "shallow")
    assert r.returncode == 2
    assert "--policy shallow needs --budget" in r.stderr


def test_not_a_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("nope")
    r = run_cli("upscale", str(tmp_path), "-o", str(tmp_path / "o"), "--model", str(bad))
    assert r.returncode == 1
    assert "not a loadable weights-only file" in r.stderr
    assert "Traceback" not in r.stderr


def test_upscale_frame_folder_end_to_end(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from tests.conftest import moving_clip, real_weights

    real_weights()
    src = tmp_path / "in"
    src.mkdir()
    clip = (moving_clip(t=3, h=12, w=16).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(src / f"f{i + 1}.png")
    out, stats = tmp_path / "out", tmp_path / "stats.json"
    r = run_cli(
        "upscale",
        str(src),
        "-o",
        str(out),
        "--model",
        "basicvsr-vimeo-bi",
        "--budget",
        "0.63",
        "--policy",
        "shallow",
        "--quiet",
        "--stats",
        str(stats),
    )
    assert r.returncode == 0, r.stderr
    frames = sorted(out.iterdir())
    assert len(frames) == 3
    assert Image.open(frames[0]).size == (64, 48)
    s = json.loads(stats.read_text())
    assert s["frames"] == 3
    assert abs(s["mac_fraction"] - 0.63) < 0.05
    for key in ("seconds", "gmacs_per_frame", "executed_block_fraction"):
        assert s[key] > 0 and key in s["chunks"][0]
    r = run_cli("upscale", str(src), "-o", str(out), "--model", "basicvsr-vimeo-bi", "--quiet")
    assert r.returncode == 1 and "exists" in r.stderr  # never replaced without --overwrite


def test_side_by_side_needs_a_routing_video(tmp_path, capsys):
    assert main(["upscale", str(tmp_path), "-o", str(tmp_path / "o"), "--side-by-side"]) == 2
    assert "--side-by-side draws the --routing-video" in capsys.readouterr().err


def test_upscale_writes_a_routing_map_video(tmp_path):
    from skipvsr.video.overlay import MapView
    from tests.test_video_io import make_clip, probe, video_times

    clip = make_clip(tmp_path / "in.mp4", n=3, w=16, h=12)
    out, side = tmp_path / "out.mp4", tmp_path / "map.mp4"
    args = ["upscale", str(clip), "-o", str(out), "--model", "skipvsr-vimeo-bi", "--quiet"]
    r = run_cli(*args, "--budget", "0.63", "--routing-video", str(side), "--side-by-side")
    assert r.returncode == 0, r.stderr
    main, drawn = probe(out), probe(side)
    assert drawn.frames == main.frames == 3 and video_times(side) == video_times(out)
    assert (drawn.width, drawn.height) == MapView(side_by_side=True).size(64, 48)
    r = run_cli(*args, "--routing-video", str(out), "--overwrite")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "is written twice" in r.stderr and "Traceback" not in r.stderr
