"""Loss formulas on hand-computed values."""

import math

import pytest
import torch

from skipvsr.train.losses import (
    attention_map,
    charbonnier,
    feature_alignment_loss,
    mask_loss,
    redundancy_target,
)


def test_charbonnier_known_values():
    sr = torch.tensor([0.0, 0.5, 1.0])
    hr = torch.tensor([0.0, 0.2, 0.0])
    expected = (1e-6 + math.sqrt(0.09 + 1e-12) + math.sqrt(1 + 1e-12)) / 3
    assert charbonnier(sr, hr).item() == pytest.approx(expected, rel=1e-6)
    assert charbonnier(sr, sr, eps=0.1).item() == pytest.approx(0.1, rel=1e-6)


def test_redundancy_target_and_mask_loss():
    d = torch.tensor([[[0.0, 0.5]]])
    target = redundancy_target(d, theta=2.0)
    assert target.tolist()[0][0] == pytest.approx([1.0, 1 - math.tanh(1.0)])
    s = torch.tensor([[[0.5, 0.5]]], requires_grad=True)
    loss = mask_loss([(1, 0, s, d), (1, 1, s, torch.zeros_like(d))], theta=2.0)
    first = ((0.5 - 1.0) ** 2 + (0.5 - (1 - math.tanh(1.0))) ** 2) / 2
    assert loss.item() == pytest.approx((first + 0.25) / 2, rel=1e-6)
    loss.backward()
    assert s.grad is not None
    assert mask_loss([], 2.0).item() == 0.0


def test_attention_maps():
    h = torch.zeros(1, 2, 1, 2)
    h[0, 0, 0] = torch.tensor([3.0, 0.0])
    h[0, 1, 0] = torch.tensor([-4.0, 1.0])
    # sum: [7, 1]; sum2: [25, 1]; max: [16, 1], each L2-normalised
    for mapping, raw in (("sum", [7.0, 1.0]), ("sum2", [25.0, 1.0]), ("max", [16.0, 1.0])):
        norm = math.hypot(*raw)
        assert attention_map(h, mapping)[0].tolist() == pytest.approx([v / norm for v in raw])
    with pytest.raises(ValueError):
        attention_map(h, "mean")


def test_feature_alignment_loss():
    a = torch.tensor([[[[1.0, 0.0]]]])  # (1, 1, 1, 2): map [1, 0]
    b = torch.tensor([[[[0.0, 1.0]]]])  # map [0, 1]
    student = {6: [a, a]}
    teacher = {6: [a, b]}
    # frame 0: 0, frame 1: ||[1,-1]|| = sqrt(2) -> mean sqrt(2)/2
    assert feature_alignment_loss(student, teacher, (6,), "sum2").item() == pytest.approx(
        math.sqrt(2) / 2
    )
    assert feature_alignment_loss(student, teacher, ()).item() == 0.0
