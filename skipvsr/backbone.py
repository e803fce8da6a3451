"""BasicVSR (Chan et al., CVPR 2021) with optional adaptive patch routing.

One implementation serves the official model, the frozen teacher and the SkipVSR student: the
state-dict keys are those of the official BasicSR release, and the confidence estimators are
extra parameters that exist only when ``estimators=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from skipvsr.flow import SpyNet, WarpPlan, flow_warp
from skipvsr.kernels import (
    conv_leaky_relu,
    fast_leaky_relu,
    inference_on_channels_last,
    is_channels_last,
    residual_add_,
    shuffle_into_,
    shuffles,
)
from skipvsr.routing import (
    BlockConvs,
    ConfidenceEstimator,
    PatchGrid,
    Route,
    Router,
    add_casting_,
    bf16_autocast,
    block_precision,
    check_precision,
    empty_bordered,
    prepads,
    residual_update,
)

BRANCHES = ("backward", "forward")


def shuffle_order(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv``'s weight and bias with its ``4c`` output channels in (row, column, channel)
    order instead of (channel, row, column): a channels-last pixel shuffle by 2 of the conv's
    output then moves whole rows of ``c`` values (:func:`conv_pixel_shuffle`)."""
    c = conv.out_channels // 4
    order = torch.arange(conv.out_channels, device=conv.weight.device).view(c, 4).t().reshape(-1)
    return conv.weight[order], conv.bias[order]


def conv_pixel_shuffle(
    conv: nn.Conv2d, x: torch.Tensor, slope: float, padding: int = 1, ring: int = 0
) -> torch.Tensor:
    """``leaky_relu(pixel_shuffle(conv(x), 2), slope)``: ``x`` ``(B, C, H, W)`` -> ``(B,
    conv.out_channels / 4, 2H, 2W)``, the conv padded by ``padding``. For a channels-last ``x``
    the conv's output channels are computed in (row, column, channel) order instead of
    (channel, row, column) (:func:`shuffle_order`), so that the shuffle moves whole rows of
    channels rather than single values: the same numbers, and a third of the shuffle's time on
    the 360x640 map (65 -> 42 ms in bf16 on 2 threads). The activation, elementwise, runs before
    the shuffle, fused into the conv (:func:`conv_leaky_relu`).

    ``ring`` (channels-last only): the shuffle writes the result inside a zero border of
    ``ring`` pixels, ``(B, C', 2H + 2 ring, 2W + 2 ring)``, so that the next conv needs no
    padding of its own (see :func:`skipvsr.routing.zero_bordered`); the shuffle is a copy
    anyway, so the border costs nothing more. On CPU inference the copy is
    :func:`skipvsr.kernels.shuffle_into_` (the same bytes, at 3x the speed of torch's copy)."""
    if not is_channels_last(x):
        return fast_leaky_relu(F.pixel_shuffle(conv(x), 2), slope)
    weight, bias = shuffle_order(conv)
    return shuffled(conv_leaky_relu(x, weight, bias, padding, slope), ring)


def shuffled(y: torch.Tensor, ring: int) -> torch.Tensor:
    """The pixel shuffle by 2 of ``y`` ``(B, 4c, H, W)`` channels-last, its channels in (row,
    column, channel) order (:func:`shuffle_order`): ``(B, c, 2H + 2 ring, 2W + 2 ring)``
    channels-last, inside a zero border of ``ring`` pixels."""
    b, c4, h, w = y.shape
    c = c4 // 4
    if shuffles(y):
        shape = (b, c, 2 * h, 2 * w)
        if ring:
            out = empty_bordered(shape, ring, y.dtype, y.device)
        else:
            out = torch.empty(shape, dtype=y.dtype, memory_format=torch.channels_last)
        shuffle_into_(y, out, ring)
        return out
    rows = y.permute(0, 2, 3, 1).reshape(b, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    if ring == 0:
        return rows.reshape(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    out = empty_bordered((b, c, 2 * h, 2 * w), ring, y.dtype, y.device)
    inside = out.permute(0, 2, 3, 1)[:, ring:-ring, ring:-ring]  # (B, 2H, 2W, C') view
    inside.unflatten(1, (h, 2)).unflatten(3, (w, 2)).copy_(rows)
    return out


HR_BAND_BYTES = 16 << 20
"""How many bytes of the 4x map (conv_hr's input) one band of the upsampler's last stages
computes at a time (:meth:`BasicVSR.upsample`): bands this size stay in the CPU's cache from
the shuffle that writes them to conv_last, where the whole 720x1280 map (118 MB in bf16) went
out to memory and back twice. AMX Xeon, 2 threads, upconv2 to conv_last at 180x320: 91.7 ms
whole, 80.3 / 77.2 / 78.1 ms in 4 / 8 / 12 bands (8 are about 16 MB each)."""


def band_rows(width: int, channels: int, itemsize: int) -> int:
    """Rows of the 2x map (upconv2's output) per band of :data:`HR_BAND_BYTES`, for a 2x map
    ``width`` pixels wide whose shuffle has ``channels`` channels of ``itemsize`` bytes: each
    such row is two rows of the 4x map."""
    return max(4, HR_BAND_BYTES // (2 * (2 * width + 4) * channels * itemsize))


class ResidualBlock(nn.Module):
    """``h + conv2(relu(conv1(h)))``, two 3x3 convs of ``num_feat`` channels, no batch norm."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, h: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """``h`` ``(B, C, H, W)`` float32 -> float32; ``precision``: see
        :data:`skipvsr.routing.PRECISIONS`."""
        return h + residual_update(self, h, precision)


def mixed_input_conv(
    conv: nn.Conv2d, frame: torch.Tensor, features: torch.Tensor, slope: float
) -> torch.Tensor:
    """``leaky_relu(conv(cat([frame, features])), slope)`` for a trunk's input conv in ``mixed``
    precision: the LR frame ``(B, 3, H, W)`` float32 and the propagated features ``(B, C, H,
    W)`` float32 or bf16 -> ``(B, C, H, W)`` float32, the sum of the frame's channels convolved
    in float32 and the features' in bf16 (rounded to it where float32; the step warps them
    straight into bf16, :meth:`skipvsr.flow.WarpPlan.warp_into`).

    The features' conv carries 64 of the 67 input channels and reads them rounded to bf16, as
    the blocks' convs read the stream; the frame's channels stay float32: with them in bf16
    too (precision ``bf16``) the output moved to 52.3 dB from fp32's on Vid4 calendar, with
    this split 55.95 dB (57.21 with the whole conv in float32). 3.3 against 9.4 ms a conv at
    180x320 (AMX Xeon, 2 threads)."""
    k = frame.shape[1]
    low, weight = torch.bfloat16, conv.weight
    out = F.conv2d(frame, weight[:, :k], conv.bias, padding=conv.padding)
    from_features = F.conv2d(features.to(low), weight[:, k:].to(low), padding=conv.padding)
    return fast_leaky_relu(residual_add_(out, from_features), slope)


class Trunk(nn.Module):
    """Input conv (3 + C -> C) + LeakyReLU(0.1), then ``num_block`` residual blocks.

    The parameter names match BasicSR's ``ConvResidualBlocks``: ``main.0`` is the input conv and
    ``main.2.<m>`` the residual blocks.
    """

    def __init__(self, in_ch: int, num_feat: int, num_block: int) -> None:
        super().__init__()
        # run fp32 blocks on channels-last maps too (set by BasicVSR.channels_last); bf16 and
        # routed blocks always are
        self.fp32_channels_last = False
        self.main = nn.Sequential(
            nn.Conv2d(in_ch, num_feat, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Sequential(*(ResidualBlock(num_feat) for _ in range(num_block))),
        )

    @property
    def blocks(self) -> nn.Sequential:
        return self.main[2]

    def block_convs(self, precision: str) -> list[BlockConvs]:
        """Each residual block's convs with their weights cast for ``precision``
        (:func:`skipvsr.routing.block_precision`): 240 small casts a frame, 1 % of the full
        network's time at 180x320 when made on every frame (AMX Xeon, 2 threads)."""
        return [BlockConvs.of(b, block_precision(precision, m)) for m, b in enumerate(self.blocks)]

    def forward(
        self,
        x: torch.Tensor,
        router: Router | None = None,
        taps: tuple[int, ...] = (),
        precision: str = "fp32",
        convs: list[BlockConvs] | None = None,
        features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """``x`` ``(B, 3 + C, H, W)`` -> features ``(B, C, H, W)`` float32 and the tapped block
        outputs; or, with ``features`` (the propagated ``(B, C, H, W)``, float32 or bf16), ``x``
        the LR frame ``(B, 3, H, W)`` alone and the same result as their concatenation (in
        ``mixed`` the features' conv reads bf16 anyway, :func:`mixed_input_conv`).

        ``taps`` lists block counts ``m`` (0 = after the input conv, ``num_block`` = output)
        whose features are returned. ``precision`` (:data:`skipvsr.routing.PRECISIONS`) sets
        where the convs compute in bf16 (a ``router`` carries its own); the residual stream
        stays float32. ``convs``: the blocks' weights as :meth:`block_convs` casts them for
        ``precision``, cast once for a whole clip rather than on every frame.
        """
        with bf16_autocast(x, precision == "bf16"):  # off, in fp32 and mixed, inside any other
            if precision == "mixed":
                if features is None:
                    k = x.shape[1] - self.main[0].out_channels  # the LR frame's 3 channels
                    x, features = x[:, :k], x[:, k:]
                h = mixed_input_conv(self.main[0], x, features, self.main[1].negative_slope)
            else:
                if features is not None:
                    x = torch.cat([x, features.to(x.dtype)], dim=1)
                h = self.main[1](self.main[0](x)).float()
        tapped: dict[int, torch.Tensor] = {}
        if 0 in taps:
            tapped[0] = h
        if router is not None:
            h = router.memory_format(h)
        elif precision != "fp32" or self.fp32_channels_last:
            # oneDNN's bf16 convs run about 15 % faster on NHWC than on NCHW maps (the whole
            # network 10 %), its AVX2 fp32 convs too (the whole network 8 %); a plain fp32
            # model stays NCHW, the layout of the BasicSR parity
            h = h.contiguous(memory_format=torch.channels_last)
        if router is None and convs is None:
            convs = self.block_convs(precision)
        ready = None  # h cast into the next block's zero-bordered input by the last add
        for m, block in enumerate(self.blocks):
            # the residual add may overwrite h when nothing else holds it (no tap, no autograd):
            # one map fewer written per block, 3.5 % of the full network's time on 2 threads
            inplace = m not in taps and not torch.is_grad_enabled()
            if router is None:
                update = convs[m].update(h, ready)
                ring = convs[m + 1].ring(h) if inplace and m + 1 < len(convs) else 0
                ready = None
                if ring:  # the add writes the next block's bf16 input in the same pass
                    ready = add_casting_(h, update, ring)
                else:
                    h = residual_add_(h, update) if inplace else h + update
            else:
                h = router.apply(block, m, h, router.decide(m, h), inplace=inplace)
            if m + 1 in taps:
                tapped[m + 1] = h
        # a channels-last model keeps its recurrence channels-last: the copy back to NCHW took
        # 8.5 ms a trunk at 180x320 (2 threads, AMX Xeon), and the next input conv 4 ms more
        return (h if self.fp32_channels_last else h.contiguous()), tapped


@dataclass
class VSROutput:
    """Result of :meth:`BasicVSR.forward`.

    Attributes:
        sr: ``(B, T, 3, 4H, 4W)`` float, not clamped.
        executed: per branch, ``(T, num_block)`` fraction of pixels on which each block ran
            (all ones without routing).
        block_map: per branch, ``(B, T, nH, nW)`` int16 number of blocks run per patch, or
            ``None`` without routing.
        thresholds: per branch, the threshold used for each frame in propagation order
            (-1: chosen block by block from the frame's own scores, on the second frame of a
            budget run).
        features: tapped trunk features, ``features[branch][m]`` is a list over frames (clip
            order) of ``(B, C, H, W)``.
        scores: training only (``targets`` given): per branch, the router's log of
            ``(frame, m, S, d)`` (see :meth:`skipvsr.routing.Router.decide`).
    """

    sr: torch.Tensor
    executed: dict[str, torch.Tensor]
    block_map: dict[str, torch.Tensor | None] = field(default_factory=dict)
    thresholds: dict[str, list[float]] = field(default_factory=dict)
    features: dict[str, dict[int, list[torch.Tensor]]] = field(default_factory=dict)
    scores: dict[str, list] = field(default_factory=dict)


class BasicVSR(nn.Module):
    """Bidirectional recurrent x4 VSR: SpyNet alignment, two trunks, pixel-shuffle upsampler.

    Args:
        num_feat: feature channels (64 in the official models).
        num_block: residual blocks per trunk (30 in the official models).
        estimators: add one confidence estimator per branch (SkipVSR models).
        shared_estimator: one linear layer for all blocks of a branch, as in the paper.
        estimator_inputs: what the estimators read (:data:`skipvsr.routing.ESTIMATOR_INPUTS`).
    """

    scale = 4

    def __init__(
        self,
        num_feat: int = 64,
        num_block: int = 30,
        estimators: bool = False,
        shared_estimator: bool = False,
        estimator_inputs: str = "difference",
    ) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.num_block = num_block
        self.spynet = SpyNet()
        self.backward_trunk = Trunk(num_feat + 3, num_feat, num_block)
        self.forward_trunk = Trunk(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0)
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        if estimators:
            args = (num_feat, num_block, shared_estimator, estimator_inputs)
            self.backward_estimator = ConfidenceEstimator(*args)
            self.forward_estimator = ConfidenceEstimator(*args)
        else:
            self.backward_estimator = None
            self.forward_estimator = None

    def channels_last(self) -> BasicVSR:
        """Run the trunks and the upsampler on channels-last (NHWC) maps, in place; returns self.

        On CPU, oneDNN runs the wide HR convs of the upsampler about 1.5x faster in NHWC (the
        whole frame about 1.2x), and the fp32 residual blocks on an AVX2-only CPU 8 % faster
        (bf16 and routed blocks run channels-last in any case); SpyNet's small convs gain
        nothing, so it stays NCHW. Outputs differ from NCHW by float rounding only (max 2e-6 on
        [0, 1] pixels); the model as constructed is NCHW, the layout of the BasicSR parity.
        """
        for conv in (self.fusion, self.upconv1, self.upconv2, self.conv_hr, self.conv_last):
            conv.to(memory_format=torch.channels_last)
        # the trunks' weights too: oneDNN copied NCHW weights into that layout on each of the
        # 720 block convs of a 6-frame clip (and their bf16 casts keep the layout)
        for trunk in (self.backward_trunk, self.forward_trunk):
            trunk.to(memory_format=torch.channels_last)
        self.backward_trunk.fp32_channels_last = True
        self.forward_trunk.fp32_channels_last = True
        return self

    @property
    def has_estimators(self) -> bool:
        return self.forward_estimator is not None

    def compute_flows(
        self, lr: torch.Tensor, precision: str = "fp32"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows between neighbours of ``lr`` ``(B, T, 3, H, W)``.

        Returns ``(backward, forward)``, each ``(B, T-1, 2, H, W)`` float32: ``backward[:, i]``
        warps frame ``i+1``'s features onto frame ``i``, ``forward[:, i]`` frame ``i`` onto ``i+1``.
        Unless ``precision`` is ``fp32``, SpyNet's convs compute in bf16 (see :class:`SpyNet`).
        """
        check_precision(precision)
        bf16 = precision != "fp32"
        b, t, c, h, w = lr.shape
        if t < 2:
            empty = lr.new_zeros(b, 0, 2, h, w, dtype=torch.float32)
            return empty, empty
        a = lr[:, :-1].reshape(-1, c, h, w)
        z = lr[:, 1:].reshape(-1, c, h, w)
        backward = self.spynet(a, z, bf16).view(b, t - 1, 2, h, w)
        forward = self.spynet(z, a, bf16).view(b, t - 1, 2, h, w)
        return backward, forward

    def upsample(
        self,
        back: torch.Tensor,
        fwd: torch.Tensor,
        x: torch.Tensor,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse the two branches' features ``(B, C, H, W)`` and reconstruct ``(B, 3, 4H, 4W)``
        float32 from them and the LR frame ``x`` ``(B, 3, H, W)``; into ``into`` where given (a
        contiguous float32 map of that shape, e.g. the frame's slot of the clip's output: no
        stack of the frames afterwards, 2.1 ms a frame at 720x1280 on 2 threads; the full
        network 0.990 of the time, paired, 8 rounds).

        The bilinear x4 of ``x`` is computed in float32 and the network's output added into it
        in place (as float32, whatever the convs computed in): the same numbers as adding the
        two, in half the time (a 3-channel channels-last bf16 map added into an NCHW float32
        one, then no copy back to NCHW: 7.0 -> 3.8 ms at 720x1280 on 2 threads). The bilinear
        reads an NCHW copy of ``x``: on a channels-last frame (as decoded video arrives) torch's
        kernel took 4.9 ms against 1.5 at 180x320, for the same numbers."""
        with torch.autocast(x.device.type, enabled=False):
            if into is None:
                base = F.interpolate(
                    x.float().contiguous(), scale_factor=4, mode="bilinear", align_corners=False
                )
            else:  # F.interpolate's own call (the scale given, as scale_factor passes it)
                size = [4 * x.shape[2], 4 * x.shape[3]]
                base = torch.ops.aten.upsample_bilinear2d.out(
                    x.float().contiguous(), size, False, 4.0, 4.0, out=into
                )
        banded = (
            torch.is_autocast_enabled("cpu")
            and prepads(torch.bfloat16)
            and inference_on_channels_last(back)
        )
        if banded:  # the bf16 branches are cast straight into the fusion conv's input
            b, c, h, w = back.shape
            feats = torch.empty(
                b,
                2 * c,
                h,
                w,
                dtype=torch.bfloat16,
                device=back.device,
                memory_format=torch.channels_last,
            )
            feats[:, :c].copy_(back)
            feats[:, c:].copy_(fwd)
        else:
            feats = torch.cat([back, fwd], dim=1)
        out = conv_leaky_relu(feats, self.fusion.weight, self.fusion.bias, 0, 0.1)
        if not banded:
            out = conv_pixel_shuffle(self.upconv1, out, 0.1)
            out = conv_pixel_shuffle(self.upconv2, out, 0.1)
            out = conv_leaky_relu(out, self.conv_hr.weight, self.conv_hr.bias, 1, 0.1)
            return base.add_(self.conv_last(out)).contiguous()
        # oneDNN's bf16 convs run faster on maps padded beforehand than with their own
        # padding (AMX Xeon, 2 threads: upconv2 33.3 -> 29.7 ms, conv_hr 50.1 -> 37.8), and the
        # shuffles write their maps inside a zero border at no cost
        out = conv_pixel_shuffle(self.upconv1, out, 0.1, ring=1)
        rows = band_rows(out.shape[3] - 2, self.conv_hr.in_channels, out.element_size())
        return self.upsample_bands(out, base, rows).contiguous()

    def upsample_bands(self, up: torch.Tensor, base: torch.Tensor, rows: int) -> torch.Tensor:
        """The upsampler from upconv2 on, in bands of ``rows`` rows of the 2x map, each added
        into its rows of ``base`` ``(B, 3, 4H, 4W)`` float32 in place; returns ``base``.

        ``up`` ``(B, C, 2H + 2, 2W + 2)`` channels-last bf16 is upconv1's shuffled output inside
        a 1-pixel zero border. A band of 2x rows ``[a, e)`` computes upconv2 on rows ``[a - 1,
        e + 1)`` (clipped to the map: the 2-row halo of the two 3x3 convs at 4x), shuffles them
        inside a 2-pixel zero border, runs conv_hr without padding on the 4x rows that conv_last
        reads (its outputs past the frame set to 0, conv_last's padding) and conv_last on those:
        the 4x rows ``[2a, 2e)`` of the whole-frame computation. Where ``rows`` spans whole
        maps, a band is ``rows // 2H`` batch elements (the tubes of the patch protocol), else
        the rows of one element, so that every band is a contiguous part of ``up``: bit for
        bit the whole batch's numbers. Small bands stay in the CPU's cache
        (:data:`HR_BAND_BYTES`)."""
        batch, height = up.shape[0], up.shape[2] - 2
        group = max(rows // height, 1)
        weight, bias = shuffle_order(self.upconv2)
        for b0 in range(0, batch, group):
            bs = slice(b0, b0 + group)
            for a in range(0, height, rows):
                e = min(a + rows, height)
                lo, hi = max(a - 1, 0), min(e + 1, height)
                y = conv_leaky_relu(up[bs, :, lo : hi + 2], weight, bias, 0, 0.1)
                hr_in = shuffled(y, 2)  # the 4x rows [2 lo - 2, 2 hi + 2)
                top = 2 * (a - lo)  # where the 4x row 2a - 2 is in it
                hr = conv_leaky_relu(
                    hr_in[:, :, top : top + 2 * (e - a) + 4],
                    self.conv_hr.weight,
                    self.conv_hr.bias,
                    0,
                    0.1,
                )  # the 4x rows [2a - 1, 2e + 1), columns [-1, 4W + 1)
                hr[:, :, :, 0] = 0
                hr[:, :, :, -1] = 0
                if a == 0:
                    hr[:, :, 0] = 0
                if e == height:
                    hr[:, :, -1] = 0
                rgb = F.conv2d(hr, self.conv_last.weight, self.conv_last.bias)
                base[bs, :, 2 * a : 2 * e].add_(rgb)
        return base

    def forward(
        self,
        lr: torch.Tensor,
        route: Route | None = None,
        flows: tuple[torch.Tensor, torch.Tensor] | None = None,
        taps: tuple[int, ...] = (),
        targets: dict[str, dict[int, list[torch.Tensor]]] | None = None,
        target_every: int = 6,
        reuse_targets: bool = False,
        precision: str = "fp32",
    ) -> VSROutput:
        """Super-resolve a clip.

        Args:
            lr: ``(B, T, 3, H, W)`` float in [0, 1], any ``H, W >= 1``.
            route: how to skip residual blocks; ``None`` (or a route that runs everything)
                is plain BasicVSR.
            flows: precomputed ``(backward, forward)`` flows as from :meth:`compute_flows`
                (e.g. cropped from a full frame in the tube protocol).
            taps: trunk depths whose features to return (see :class:`Trunk`).
            targets: training only: the teacher's ``features`` at depths ``target_every``,
                ``2*target_every``, ... (as returned with ``taps``); the routers then log every
                estimator score with its regression distance in ``scores``.
            reuse_targets: training only: log every estimator score with the per-patch RMS
                error of the reused update instead (``route.skip == 'reuse'``, mask execution).
            precision: one of :data:`skipvsr.routing.PRECISIONS`: where the network computes
                in bfloat16.

        Returns:
            :class:`VSROutput` with ``sr`` ``(B, T, 3, 4H, 4W)``.
        """
        if lr.dim() != 5 or lr.shape[2] != 3:
            raise ValueError(f"lr must be (B, T, 3, H, W), got {tuple(lr.shape)}")
        check_precision(precision)
        b, t, _, h, w = lr.shape
        fp32 = torch.autocast(lr.device.type, enabled=False)
        if flows is None:
            with fp32:
                flows = self.compute_flows(lr, precision)
        flows_backward, flows_forward = flows
        training = targets is not None or reuse_targets
        routed = route is not None and (not route.runs_everything() or training)
        grid = PatchGrid(h, w, route.cell) if routed else None
        estimators = {"backward": self.backward_estimator, "forward": self.forward_estimator}

        trunks = {"backward": self.backward_trunk, "forward": self.forward_trunk}
        convs = {n: trunk.block_convs(precision) for n, trunk in trunks.items()}

        def router(name: str, branch_route: Route) -> Router | None:
            if not routed:
                return None
            branch_targets = None if targets is None else targets[name]
            return Router(
                branch_route,
                grid,
                b,
                t,
                self.num_block,
                estimators[name],
                lr.device,
                branch_targets,
                target_every,
                reuse_targets,
                precision,
                convs[name],
                taps,
            )

        split = routed and route.backward_budget is not None and route.block_budget is not None
        backward_route = route
        if split:  # leave the forward branch at least its forced frames
            floor = route.forced_count(t) / t
            share = min(route.backward_budget, max(2 * route.block_budget - floor, 0.0))
            backward_route = replace(route, block_budget=share)
        routers: dict[str, Router | None] = {"backward": router("backward", backward_route)}
        features: dict[str, dict[int, list[torch.Tensor]]] = {n: {} for n in BRANCHES}

        # a channels-last model (see channels_last) propagates channels-last maps, warped by a
        # WarpPlan (equal to flow_warp here, 2.3 ms against 6.2 ms a warp at 180x320 on 2
        # threads, its taps shared with the router); a plain one keeps BasicSR's NCHW path
        nhwc = self.backward_trunk.fp32_channels_last
        layout = torch.channels_last if nhwc else torch.contiguous_format

        def step(
            name: str, trunk: Trunk, i: int, prop: torch.Tensor, flow: torch.Tensor | None
        ) -> torch.Tensor:
            plan = WarpPlan(flow) if flow is not None and nhwc else None
            router = routers[name]
            if router is not None:
                router.start_frame(i, flow, plan)
            if plan is None:
                if flow is not None:
                    prop = flow_warp(prop, flow)
                x = torch.cat([lr[:, i].contiguous(memory_format=layout), prop], dim=1)
                out, tapped = trunk(x, router, taps, precision, convs[name])
            elif precision == "mixed":  # the warp writes the features' bf16 conv input
                warped = torch.empty_like(prop, dtype=torch.bfloat16, memory_format=layout)
                plan.warp_into(prop, warped)
                frame = lr[:, i].contiguous(memory_format=layout)
                out, tapped = trunk(frame, router, taps, precision, convs[name], warped)
            else:  # the warp writes the input conv's feature channels, with no concatenation
                x = torch.empty(
                    b,
                    3 + prop.shape[1],
                    h,
                    w,
                    dtype=prop.dtype,
                    device=prop.device,
                    memory_format=layout,
                )
                x[:, :3] = lr[:, i]
                plan.warp_into(prop, x[:, 3:])
                out, tapped = trunk(x, router, taps, precision, convs[name])
            for m, f in tapped.items():
                features[name].setdefault(m, [None] * t)[i] = f
            return out

        back_feats: list[torch.Tensor] = [None] * t  # type: ignore[list-item]
        prop = lr.new_zeros(b, self.num_feat, h, w).contiguous(memory_format=layout)
        for i in range(t - 1, -1, -1):
            flow = flows_backward[:, i] if i < t - 1 else None
            prop = step("backward", self.backward_trunk, i, prop, flow)
            back_feats[i] = prop
        if routers["backward"] is not None:
            routers["backward"].release()
        forward_route = route
        if split:  # the forward branch spends what the clip's budget has left
            spent = float(routers["backward"].executed.mean())
            left = min(max(2 * route.block_budget - spent, 0.0), 1.0)
            forward_route = replace(route, block_budget=left)
        routers["forward"] = router("forward", forward_route)

        # outside autograd each frame is written into its slot of the output, frame-major so
        # that the slot is contiguous (upsample's ``into``); training stacks the frames
        slots = not torch.is_grad_enabled()
        sr = torch.empty(
            t if slots else 0, b, 3, 4 * h, 4 * w, dtype=torch.float32, device=lr.device
        )
        outs = []
        prop = torch.zeros_like(prop)
        for i in range(t):
            flow = flows_forward[:, i - 1] if i > 0 else None
            prop = step("forward", self.forward_trunk, i, prop, flow)
            with bf16_autocast(lr, precision != "fp32"):
                if slots:
                    self.upsample(back_feats[i], prop, lr[:, i], into=sr[i])
                else:
                    outs.append(self.upsample(back_feats[i], prop, lr[:, i]))
            back_feats[i] = None  # release memory as we go
        sr = sr.transpose(0, 1).contiguous() if slots else torch.stack(outs, dim=1)

        executed = {
            n: (r.executed if r is not None else torch.ones(t, self.num_block))
            for n, r in routers.items()
        }
        return VSROutput(
            sr=sr,
            executed=executed,
            block_map={n: (r.block_map if r is not None else None) for n, r in routers.items()},
            thresholds={n: (r.thresholds if r is not None else []) for n, r in routers.items()},
            features=features,
            scores={n: (r.log if r is not None else []) for n, r in routers.items()},
        )
