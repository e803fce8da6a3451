"""The reference for benchmarks: a plain eager fp32 BasicVSR forward, no routing, no tricks.

It reads the parameters of a :class:`skipvsr.backbone.BasicVSR` but runs its own loop with
``torch.no_grad()`` only, as a user of the official code would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from skipvsr.backbone import BasicVSR
from skipvsr.flow import flow_warp


@torch.no_grad()
def reference_forward(model: BasicVSR, lr: torch.Tensor) -> torch.Tensor:
    """``lr`` ``(B, T, 3, H, W)`` float32 in [0, 1] -> ``(B, T, 3, 4H, 4W)`` float32."""
    b, t, c, h, w = lr.shape
    fb, ff = model.compute_flows(lr)
    back = [None] * t
    feat = lr.new_zeros(b, model.num_feat, h, w)
    for i in range(t - 1, -1, -1):
        if i < t - 1:
            feat = flow_warp(feat, fb[:, i])
        feat = model.backward_trunk.main(torch.cat([lr[:, i], feat], 1))
        back[i] = feat
    feat = torch.zeros_like(feat)
    out = []
    for i in range(t):
        if i > 0:
            feat = flow_warp(feat, ff[:, i - 1])
        feat = model.forward_trunk.main(torch.cat([lr[:, i], feat], 1))
        x = F.leaky_relu(model.fusion(torch.cat([back[i], feat], 1)), 0.1)
        x = F.leaky_relu(F.pixel_shuffle(model.upconv1(x), 2), 0.1)
        x = F.leaky_relu(F.pixel_shuffle(model.upconv2(x), 2), 0.1)
        x = F.leaky_relu(model.conv_hr(x), 0.1)
        x = model.conv_last(x)
        out.append(
            x + F.interpolate(lr[:, i], scale_factor=4, mode="bilinear", align_corners=False)
        )
    return torch.stack(out, 1)
