"""Tests of ``skipvsr eval`` / :mod:`skipvsr.eval.evaluate`, ``skipvsr degrade`` and the plots.

Mechanics run on tiny synthetic frame folders with ``--model bicubic``, a tiny random model, or
the official weights on 16x16 LR frames. The fidelity test runs the official Vimeo-BI weights on
5 real Vid4 frames (skipped when weights or data are absent).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from skipvsr.api import Upscaler
from skipvsr.cli import main as cli
from skipvsr.degradation import bicubic_upscale, degrade_bd, degrade_bi
from skipvsr.eval.datasets import FolderPairs, make_clip
from skipvsr.eval.evaluate import (
    METRIC_KEYS,
    Runner,
    Setting,
    evaluate,
    frame_metrics,
    make_settings,
    slug,
)
from skipvsr.eval.report import write_outputs
from skipvsr.frames import to_tensor, to_uint8
from skipvsr.metrics import psnr
from tests.conftest import DATA, moving_clip, real_weights, tiny_model

# Measured once: official basicvsr-vimeo-bi on Vid4 calendar LR_BI frames 0-4, centre crop
# LR 64x64 (rows 40:104, cols 58:122), 8-bit output, Y PSNR per frame then mean.
CALENDAR_CROP_PSNR_Y = 22.8990
CALENDAR_CROP_SSIM_Y = 0.66091


def _hr_clip(t: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    """``(T, size, size, 3)`` uint8 smooth moving texture."""
    x = moving_clip(t, size, size, seed)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture
def folders(tmp_path):
    """Two clips of 3 HR frames 64x64 as PNG folders: ``tmp/hr/{a,b}/NNN.png``."""
    root = tmp_path / "hr"
    for k, name in enumerate(("a", "b")):
        d = root / name
        d.mkdir(parents=True)
        for i, f in enumerate(_hr_clip(seed=k)):
            Image.fromarray(f).save(d / f"{i:03d}.png")
    return root


def _eval(args: list[str]) -> int:
    return cli.main(["eval", "--quiet", *args])


def test_make_settings_sweep():
    s = make_settings(["learned", "uniform", "deep"], [0, 0.9], [1, 0.63])
    assert [x.label for x in s] == [
        "full",
        "learned t=0.9",
        "learned b=1",
        "learned b=0.63",
        "uniform b=0.63",
        "deep b=0.63",
    ]
    assert make_settings(["learned"], None, None)[0].label == "full"
    assert not make_settings(["learned"], None, None)[0].routes
    assert make_settings(["uniform"], None, [0.5])[0].routes
    with pytest.raises(ValueError, match="needs --budgets"):
        make_settings(["shallow"], None, None)
    assert slug("uniform b=0.63") == "uniform_b0.63"
    paper = make_settings(["learned"], None, [0.63], estimator_stride=1)[0]
    assert paper.route.estimator_stride == 1
    assert paper.label == "learned b=0.63 estimator-stride=1"
    default = make_settings(["learned"], None, [0.63])[0]
    assert default.route.estimator_stride is None and default.route.score_stride == 4
    assert default.label == "learned b=0.63"


def test_to_uint8_rounds():
    x = torch.tensor([0.0, 0.6 / 255, 1.49 / 255, 1.2, -0.1]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 1, 1, 255, 0]
    frames = _hr_clip(2, 16)
    assert np.array_equal(to_uint8(to_tensor(frames)), frames)


def test_eval_bicubic_folders(folders, tmp_path):
    out = tmp_path / "out"
    assert (
        _eval(
            [
                "--dataset",
                "folders",
                "--data-root",
                str(folders),
                "--model",
                "bicubic",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    for name in ("results.json", "results.csv", "results.md", "psnr_mac.png", "frames.jsonl"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    assert list(res["settings"]) == ["bicubic"]
    assert set(res["clips"]) == {"a", "b"}
    # independent recomputation of clip a
    hr = _hr_clip(seed=0)
    vals = [psnr(bicubic_upscale(degrade_bi(f)), f, y_only=True) for f in hr]
    assert res["clips"]["a"]["psnr_y"] == pytest.approx(np.mean(vals), abs=1e-9)
    assert res["mean"]["psnr_y"] == pytest.approx(
        (res["clips"]["a"]["psnr_y"] + res["clips"]["b"]["psnr_y"]) / 2
    )
    assert res["mean"]["mac_fraction"] is None
    md = (out / "results.md").read_text()
    assert "| bicubic |" in md and "GMACs/frame" in md
    assert not list(out.glob("routing_*.png"))  # no routing happened


def test_eval_json_stdout(folders, capsys):
    rc = _eval(
        [
            "--dataset",
            "folders",
            "--data-root",
            str(folders),
            "--model",
            "bicubic",
            "--clips",
            "b",
            "--max-frames",
            "2",
            "--json",
            "-",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["mean"]) >= {*METRIC_KEYS, "mac_fraction"}
    assert set(res["clips"]) == {"b"}
    assert res["clips"]["b"]["frames"] == 2
    assert set(res["clips"]["b"]) >= {*METRIC_KEYS, "mac_fraction"}
    assert res["config"]["max_frames"] == 2


@pytest.mark.parametrize(
    "extra",
    [
        ["--model", "bicubic", "--budgets", "0.5"],
        ["--model", "bicubic", "--policy", "uniform"],
        ["--model", "basicvsr-vimeo-bi", "--policy", "uniform"],  # frozen policy, no budgets
        ["--model", "bicubic", "--json", "out.json"],
        ["--model", "basicvsr-vimeo-bi", "--policy", "deep", "--budgets", "0.1"],
    ],
)
def test_eval_usage_errors(folders, tmp_path, extra):
    args = ["--dataset", "folders", "--data-root", str(folders), "--out", str(tmp_path / "o")]
    assert _eval(args + extra) == cli.EXIT_USAGE


def test_eval_needs_out_or_json(folders):
    assert _eval(["--dataset", "folders", "--data-root", str(folders), "--model", "bicubic"]) == 2


def test_evaluate_tiny_model_learned_sweep_and_resume(folders, tmp_path, monkeypatch):
    """A tiny random SkipVSR: thresholds route (MAC < 1, routing strips), resume skips runs."""
    runner = Runner(Upscaler(tiny_model(num_block=4)))
    settings = make_settings(["learned"], [0.0, 0.6], None, cell=8)
    out = tmp_path / "out"
    out.mkdir()
    cfg = {"dataset": "folders", "degradation": "BI", "model": "tiny", "mode": "full"}
    res = evaluate(runner, FolderPairs(folders), settings, cfg, out=out, quiet=True)
    full, routed = res["settings"]["full"], res["settings"]["learned t=0.6"]
    assert full["mean"]["mac_fraction"] == pytest.approx(1.0)
    assert routed["mean"]["mac_fraction"] < 1.0
    assert routed["gmacs_per_frame_180x320"] < full["gmacs_per_frame_180x320"]
    assert sorted(p.name for p in out.glob("routing_*.png")) == [
        "routing_learned_t0.6_a.png",
        "routing_learned_t0.6_b.png",
    ]
    assert "mean" not in res  # a sweep keeps everything under "settings"
    write_outputs(res, out)
    assert (out / "psnr_mac.png").stat().st_size > 0

    calls = []
    monkeypatch.setattr(Runner, "run", lambda *a: calls.append(a))
    again = evaluate(runner, FolderPairs(folders), settings, cfg, out=out, resume=True, quiet=True)
    assert not calls
    assert again["settings"] == res["settings"]


def test_eval_official_weights_tiny_frames(folders, tmp_path):
    """Frozen-policy sweep through the CLI with the real 64-channel weights on 16x16 LR."""
    model = real_weights()
    out = tmp_path / "out"
    rc = _eval(
        [
            "--dataset",
            "folders",
            "--data-root",
            str(folders),
            "--clips",
            "a",
            "--model",
            model,
            "--policy",
            "uniform,deep",
            "--budgets",
            "1,0.63",
            "--cell",
            "8",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["settings"]) == ["full", "uniform b=0.63", "deep b=0.63"]
    for label in ("uniform b=0.63", "deep b=0.63"):
        r = res["settings"][label]
        assert r["mean"]["mac_fraction"] == pytest.approx(0.63, abs=0.03)
        assert r["policy"] == label.split()[0] and r["budget"] == 0.63
        assert r["s_per_frame"] > 0
    assert (
        res["settings"]["full"]["mean"]["psnr_y"] > res["settings"]["deep b=0.63"]["mean"]["psnr_y"]
    )
    assert (out / "routing_uniform_b0.63_a.png").is_file()
    assert "deep b=0.63" in (out / "results.csv").read_text()


def test_fidelity_calendar_crop():
    """Official Vimeo-BI weights on 5 real calendar frames (LR 64x64 centre crop)."""
    model = real_weights()
    root = DATA / "vid4" / "calendar"
    if not (root / "LR_BI").is_dir():
        pytest.skip(f"Vid4 frames not found at {root} (set SKIPVSR_DATA to the data folder)")
    clip = make_clip("calendar", root / "HR", root / "LR_BI")
    y0, x0 = 40, 58
    lr = clip.lr[:5, y0 : y0 + 64, x0 : x0 + 64]
    hr = clip.hr[:5, 4 * y0 : 4 * y0 + 256, 4 * x0 : 4 * x0 + 256]
    sr, _, _, _ = Runner(model).run(lr, Setting())
    m = frame_metrics(sr, hr)
    assert np.mean(m["psnr_y"]) == pytest.approx(CALENDAR_CROP_PSNR_Y, abs=0.01)
    assert np.mean(m["ssim_y"]) == pytest.approx(CALENDAR_CROP_SSIM_Y, abs=0.001)


@pytest.mark.parametrize("flag", [["--bi"], ["--bd"], ["--bd=duf"]])
def test_degrade_command(folders, tmp_path, flag):
    out = tmp_path / "lr"
    assert cli.main(["degrade", "--quiet", *flag, str(folders), "-o", str(out)]) == 0
    for name in ("a", "b"):
        for src in sorted((folders / name).glob("*.png")):
            hr = np.asarray(Image.open(src))
            lr = np.asarray(Image.open(out / name / src.name))
            if flag == ["--bi"]:
                want = degrade_bi(hr)
            else:
                want = degrade_bd(hr, "duf" if flag == ["--bd=duf"] else "basicvsr")
            assert np.array_equal(lr, want)


def test_degrade_command_errors(tmp_path):
    assert cli.main(["degrade", "--bi", str(tmp_path / "missing"), "-o", str(tmp_path)]) == 1
    assert cli.main(["degrade", "--bd", "gauss", str(tmp_path), "-o", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit):
        cli.main(["degrade", str(tmp_path), "-o", str(tmp_path / "x")])  # --bi or --bd needed


def synthetic_result(model: str, settings: dict[str, tuple[str, float | None, float]]) -> dict:
    """An ``evaluate`` object with only what the plots read: label -> (policy, MACs, PSNR Y)."""
    return {
        "config": {"model": model, "dataset": "vid4"},
        "settings": {
            label: {"policy": policy, "mean": {"mac_fraction": macs, "psnr_y": psnr}}
            for label, (policy, macs, psnr) in settings.items()
        },
    }


def test_psnr_mac_compare_of_several_runs(tmp_path):
    from skipvsr.eval.plots import psnr_mac_compare, trade_off

    teacher = synthetic_result(
        "basicvsr-vimeo-bi",
        {
            "full": ("learned", 1.0, 27.2),
            "uniform b=0.63": ("uniform", 0.63, 20.7),
            "uniform b=0.8": ("uniform", 0.8, 23.1),
        },
    )
    frozen = synthetic_result("basicvsr-vimeo-bi", {"random b=0.8": ("random", 0.8, 25.2)})
    shipped = synthetic_result(
        "skipvsr-vimeo-bi",
        {"learned b=1": ("learned", 1.0, 26.9), "learned b=0.63": ("learned", 0.631, 25.8)},
    )
    bicubic = synthetic_result("bicubic", {"bicubic": ("bicubic", None, 23.8)})
    points = trade_off([teacher, frozen, shipped, bicubic])
    assert points.curves == {
        "basicvsr-vimeo-bi, uniform (frozen)": [(0.63, 20.7), (0.8, 23.1), (1.0, 27.2)],
        "basicvsr-vimeo-bi, random (frozen)": [(0.8, 25.2), (1.0, 27.2)],
        "skipvsr-vimeo-bi, learned": [(0.631, 25.8), (1.0, 26.9)],
    }
    assert points.teachers == {"basicvsr-vimeo-bi, full (teacher)": (1.0, 27.2)}
    assert points.flat == {"bicubic": 23.8}
    path = psnr_mac_compare([teacher, frozen, shipped, bicubic], tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the README's command: scripts/readme_figures.py curve RESULTS.json ... -o FIGURE.png
    import importlib.util
    import json

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("figures", REPO / "scripts/readme_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    files = []
    for i, result in enumerate((teacher, shipped)):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(result))
    assert figures.main(["curve", *map(str, files), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0


def test_crops_figure(tmp_path):
    from skipvsr.eval.plots import crops

    image = np.zeros((24, 32, 3), np.uint8)
    path = crops([("bicubic", image), ("output", image + 100)], tmp_path / "crops.png", "t")
    assert path.stat().st_size > 0
