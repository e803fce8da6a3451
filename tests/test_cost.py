"""Analytic MACs equal torch's FlopCounterMode and the published figures."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from skipvsr import cost
from skipvsr.backbone import BasicVSR
from skipvsr.cli.main import main


@pytest.mark.parametrize("t,h,w", [(1, 20, 28), (3, 33, 35), (2, 70, 45)])
def test_macs_equal_flop_counter(t, h, w):
    model = BasicVSR().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, t, 3, h, w))
    assert counter.get_total_flops() == 2 * cost.frame_macs(h, w, t, spynet=True)


def test_published_macs_at_180x320():
    g = cost.gmacs_per_frame(180, 320)
    assert g["gmacs_per_frame"] == pytest.approx(337.7553408, abs=1e-6)
    assert g["spynet_gmacs_per_frame"] == pytest.approx(39.2962752, abs=1e-6)
    assert g["block_share"] == pytest.approx(0.7544, abs=1e-4)


def test_budget_to_block_fraction():
    assert cost.block_fraction_for_budget(1.0) == 1.0
    floor = 1 - cost.block_share()
    assert cost.block_fraction_for_budget(floor) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="budget must be in"):
        cost.block_fraction_for_budget(0.2)


def test_macs_cli_json(capsys):
    assert main(["macs", "--size", "180x320", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gmacs_per_frame"] == pytest.approx(337.76, abs=0.005)
    assert out["spynet_gmacs_per_frame"] == pytest.approx(39.30, abs=0.005)
