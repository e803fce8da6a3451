"""The training-curve figure reads a run's train.log."""

from __future__ import annotations

import pytest

from skipvsr.eval.plots import chain_curves, read_training_log, training_curve_plot

LOG = """val step 0 psnr@0.63 28.0000 mac@0.63 0.6300 psnr@0.43 26.5 mac@0.43 0.43
step 1/4 mask 0.06 total 0.06 executed 0.47 budget 0.474 lr 3.00e-02 s/it 1800.0
step 2/4 mask 0.05 total 0.05 executed 0.50 budget 0.5 lr 3.00e-02 s/it 1800.0
val step 2 psnr@0.63 28.5000 mac@0.63 0.6350 psnr@0.43 27.0 mac@0.43 0.44
"""


def test_read_training_log_and_plot(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    curve = read_training_log(log, 0.63)
    assert curve["step"] == [0, 2]
    assert curve["psnr"] == [28.0, 28.5]
    assert curve["mac"] == [0.63, 0.635]
    assert curve["hours"] == pytest.approx([0.0, 1.0])
    assert read_training_log(log, 0.43)["psnr"] == [26.5, 27.0]
    out = training_curve_plot({"run": curve}, tmp_path / "c.png", references={"teacher": 30.3})
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_chained_runs_continue_where_the_last_one_ended(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    curve = read_training_log(log, 0.63)
    chained = chain_curves([curve, curve])
    assert chained["step"] == [0, 2, 2, 4]
    assert chained["hours"] == pytest.approx([0.0, 1.0, 1.0, 2.0])
    assert chained["psnr"] == [28.0, 28.5, 28.0, 28.5]
    assert chain_curves([curve]) == curve


def test_a_step_that_spanned_a_pause_counts_as_a_median_step(tmp_path):
    log = tmp_path / "train.log"
    steps = [f"step {i}/5 total 0.1 s/it {t}" for i, t in enumerate([20.0, 22.0, 21.0, 900.0], 1)]
    log.write_text("\n".join([*steps, "val step 4 psnr@0.63 29.0 mac@0.63 0.63"]) + "\n")
    assert read_training_log(log)["hours"] == pytest.approx([(20 + 22 + 21 + 21.5) / 3600])
