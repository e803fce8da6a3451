"""Analytic multiply-accumulate counts of BasicVSR/SkipVSR.

Counts are MACs (one multiply and one add), i.e. ``FLOPs / 2`` as torch's ``FlopCounterMode``
counts convolutions and matrix products. Interpolation, warping, pooling, activations and
additions are not counted, as in the literature. At 180x320 LR the full network is
337.76 GMAC/frame without SpyNet (the SkipVSR paper's "338.5 GFLOPs") and SpyNet adds 39.30.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skipvsr.flow import SPYNET_LEVELS, SPYNET_MULTIPLE

SPYNET_CHANNELS = (8, 32, 64, 32, 16, 2)


def conv_macs(cin: int, cout: int, k: int, pixels: int) -> int:
    return cin * cout * k * k * pixels


@dataclass(frozen=True)
class NetworkShape:
    num_feat: int = 64
    num_block: int = 30


def spynet_macs(h: int, w: int) -> int:
    """MACs of one SpyNet call on an ``h x w`` pair (resized to multiples of 32)."""
    hp = math.ceil(h / SPYNET_MULTIPLE) * SPYNET_MULTIPLE
    wp = math.ceil(w / SPYNET_MULTIPLE) * SPYNET_MULTIPLE
    per_pixel = sum(conv_macs(SPYNET_CHANNELS[i], SPYNET_CHANNELS[i + 1], 7, 1) for i in range(5))
    pixels = sum(
        (hp >> (SPYNET_LEVELS - 1 - lv)) * (wp >> (SPYNET_LEVELS - 1 - lv))
        for lv in range(SPYNET_LEVELS)
    )
    return per_pixel * pixels


def block_macs_per_pixel(net: NetworkShape = NetworkShape()) -> int:
    """One residual block (two 3x3 convs) per LR pixel."""
    return 2 * conv_macs(net.num_feat, net.num_feat, 3, 1)


def fixed_macs_per_pixel(net: NetworkShape = NetworkShape()) -> int:
    """Per LR pixel and frame, everything but residual blocks and SpyNet: two trunk input
    convs, fusion, and the x4 pixel-shuffle upsampler."""
    c = net.num_feat
    trunk_in = 2 * conv_macs(c + 3, c, 3, 1)
    fusion = conv_macs(2 * c, c, 1, 1)
    up1 = conv_macs(c, 4 * c, 3, 1)
    up2 = conv_macs(c, 4 * 64, 3, 4)
    hr = conv_macs(64, 64, 3, 16)
    last = conv_macs(64, 3, 3, 16)
    return trunk_in + fusion + up1 + up2 + hr + last


def full_macs_per_pixel(net: NetworkShape = NetworkShape()) -> int:
    return fixed_macs_per_pixel(net) + 2 * net.num_block * block_macs_per_pixel(net)


def block_share(net: NetworkShape = NetworkShape()) -> float:
    """Share of the residual blocks in the network's MACs without SpyNet (0.754)."""
    return 2 * net.num_block * block_macs_per_pixel(net) / full_macs_per_pixel(net)


def block_fraction_for_budget(
    budget: float, net: NetworkShape = NetworkShape(), clamp: bool = False
) -> float:
    """Fraction of residual-block work that makes the whole network (without SpyNet) cost
    ``budget`` of its full MACs. Raises if ``budget`` is below the non-block floor (0.246 for
    64x30) unless ``clamp``, which maps it to the floor (for tiny nets, whose floor is near 1)."""
    floor = 1.0 - block_share(net)
    if clamp:
        budget = min(max(budget, floor), 1.0)
    if not (floor <= budget <= 1.0):
        raise ValueError(
            f"budget must be in [{floor:.3f}, 1] (the upsampler, fusion and input convs always "
            f"run), got {budget}"
        )
    return (budget - floor) / (1.0 - floor)


def mac_fraction(executed_block_fraction: float, net: NetworkShape = NetworkShape()) -> float:
    """MAC fraction of the network without SpyNet when the residual blocks do
    ``executed_block_fraction`` of their work (the inverse of
    :func:`block_fraction_for_budget`)."""
    share = block_share(net)
    return 1.0 - share + share * executed_block_fraction


def frame_macs(
    h: int,
    w: int,
    frames: int = 1,
    executed_block_fraction: float = 1.0,
    net: NetworkShape = NetworkShape(),
    spynet: bool = False,
) -> int:
    """MACs of a ``frames``-frame clip at ``h x w`` LR. With ``spynet``, the ``2*(frames-1)``
    SpyNet calls are included; estimator MACs (64 per patch and block) are negligible and not
    counted."""
    pixels = h * w * frames
    blocks = round(2 * net.num_block * block_macs_per_pixel(net) * pixels * executed_block_fraction)
    total = fixed_macs_per_pixel(net) * pixels + blocks
    if spynet:
        total += 2 * max(frames - 1, 0) * spynet_macs(h, w)
    return total


def gmacs_per_frame(h: int = 180, w: int = 320) -> dict[str, float]:
    """Per-frame GMACs at ``h x w`` LR: network without SpyNet, SpyNet (two flows per frame),
    blocks, and the block share."""
    net = NetworkShape()
    pixels = h * w
    return {
        "gmacs_per_frame": full_macs_per_pixel(net) * pixels / 1e9,
        "spynet_gmacs_per_frame": 2 * spynet_macs(h, w) / 1e9,
        "block_gmacs_per_frame": 2 * net.num_block * block_macs_per_pixel(net) * pixels / 1e9,
        "block_share": block_share(net),
        "lr_size": [h, w],
    }
