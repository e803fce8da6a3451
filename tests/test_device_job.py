"""The GPU job (scripts/device_job.py): its packed sample is lossless, and the whole job runs
(on CPU here, with a tiny random teacher) from the pack to an exported student and a report."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import yaml

from tests.conftest import REPO
from tests.test_training import make_cache

spec = importlib.util.spec_from_file_location("device_job", REPO / "scripts/device_job.py")
job = importlib.util.module_from_spec(spec)
spec.loader.exec_module(job)


def test_delta_coding_is_lossless():
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 7, 9, 3), dtype=np.uint8)
    coded = job.delta_code(frames)
    assert coded.dtype == np.uint8
    assert np.array_equal(job.delta_decode(coded), frames)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_spread_order_is_a_permutation_whose_prefixes_spread(n):
    order = job._spread_order(n)
    assert sorted(order) == list(range(n)) and order[0] == 0
    if n == 8:
        assert order == [0, 4, 2, 6, 1, 3, 5, 7]


def test_windows_fit_the_clip():
    assert job.windows(10, 4, 24) == [0]
    starts = job.windows(100, 4, 24)
    assert starts[0] == 0 and starts[-1] == 100 - 24 and len(starts) == 4


def test_planned_steps_and_probe_log(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("step 1/3 total 0.1 s/it 9.50\nval step 1 psnr@0.63 20\nstep 2/3 s/it 1.25\n")
    assert job.probe_seconds(log) == 1.25
    # 90 % of 100 s, less 2 validations of 5 s, at 2 s a step
    assert job.planned_steps(100.0, 2.0, 2, 5.0) == 40
    assert job.planned_steps(1.0, 2.0, 2, 5.0) == 1


def test_the_job_packs_trains_and_exports(tmp_path):
    cache = make_cache(tmp_path / "cache", frames=30)
    config = tmp_path / "tiny.yaml"
    values = dict(
        teacher="init:0", num_feat=8, num_block=4, target_every=2, tfa_interval=2, steps=4,
        patch=12, num_frames=3, cell=6, data=str(cache), threads=1, ckpt_minutes=1e6, lr=1e-3,
        val_frames=3, val_patch=16, val_budgets=[0.63], target="teacher",
    )  # fmt: skip
    config.write_text(yaml.safe_dump(values))
    pack = tmp_path / "pack"
    assert job.main(["pack", "--config", str(config), "--pack", str(pack)]) == 0
    data = tmp_path / "unpacked"
    frames = job.unpack(pack / "data.npz.xz", data)
    assert frames == 2 * job.WINDOW  # a 30-frame clip holds one window of 24
    original = np.load(cache / "train" / "a" / "lr.npy")
    (window,) = list((data / "train").glob("a.*"))
    t0 = int(window.name.split(".")[1])
    assert np.array_equal(np.load(window / "lr.npy"), original[t0 : t0 + job.WINDOW])
    val_hr = np.load(data / "val" / "v" / "hr.npy")
    assert val_hr.shape == (3, 64, 64, 3)  # the 16x16 LR centre crop's HR, 3 frames
    out = tmp_path / "out"
    args = ["run", "--config", str(config), "--pack", str(pack), "--minutes", "0.5"]
    args += ["--reserve", "0", "--out", str(out), "--work", str(tmp_path / "work"), "--no-timing"]
    assert job.main(args) == 0
    report = json.loads((out / "job.json").read_text())
    assert report["train_frames"] == frames and report["steps"] >= 1
    assert (out / "candidate.pt").stat().st_size > 0
    assert "val step" in (out / "train.log").read_text()
