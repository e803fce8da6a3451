"""Shared fixtures: tiny random models for mechanics, real weights and data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from skipvsr.backbone import BasicVSR
from skipvsr.weights import CheckpointError, resolve

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SKIPVSR_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_model(
    seed: int = 0,
    estimators: bool = True,
    num_feat: int = 8,
    num_block: int = 6,
    estimator_inputs: str = "difference",
):
    """A randomly initialised small BasicVSR (real SpyNet shape) in eval mode."""
    torch.manual_seed(seed)
    model = BasicVSR(
        num_feat=num_feat,
        num_block=num_block,
        estimators=estimators,
        estimator_inputs=estimator_inputs,
    )
    if estimators:
        with torch.no_grad():
            for est in (model.forward_estimator, model.backward_estimator):
                est.weight.normal_(0, 3.0)
                est.bias.normal_(0, 0.5)
    return model.eval()


def moving_clip(t: int = 6, h: int = 24, w: int = 28, seed: int = 0) -> torch.Tensor:
    """``(T, 3, H, W)`` float32 in [0, 1]: a smooth texture moving one pixel per frame."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 4 + 2, w // 4 + 2 + t, generator=g)
    big = torch.nn.functional.interpolate(
        base, scale_factor=4, mode="bilinear", align_corners=False
    )[0]
    return torch.stack([big[:, :h, i : i + w] for i in range(t)]).contiguous()


def real_weights(name: str = "basicvsr-vimeo-bi") -> str:
    try:
        resolve(name)
    except CheckpointError as e:
        pytest.skip(f"official weights absent: {e}")
    return name
