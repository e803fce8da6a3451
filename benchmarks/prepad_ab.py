"""bf16 convs on zero-bordered maps against the same convs padding themselves, in one process.

    python benchmarks/prepad_ab.py [--threads 2] [--rounds 30] [--size 180x320]

Times, alternating the two forms round by round (:func:`benchmarks.bench.paired_times`):

* ``trunk``: one trunk's 30 residual blocks of the official network in a row, in ``mixed``
  (:meth:`skipvsr.routing.BlockConvs.update` against ``second(first(h))``);
* ``upsampler``: the upsampler under bf16 autocast (zero-bordered shuffles and conv_hr's ring
  against the padded convs).

Prints each one's median time in both forms, the median of the paired new/old ratios and the
largest difference of the outputs. Needs a CPU where oneDNN computes bf16
(:func:`skipvsr.routing.prepads`); run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import cpu_info, paired_times  # noqa: E402
from skipvsr import backbone, routing  # noqa: E402
from skipvsr.video.heap import tune_allocator  # noqa: E402
from skipvsr.weights import load_model  # noqa: E402


def padded(self: routing.BlockConvs, h: torch.Tensor) -> torch.Tensor:
    """The block's convs with their own padding (the form before zero-bordered maps)."""
    return self.second(self.first(h))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--size", default="180x320")
    args = p.parse_args()
    if not routing.prepads(torch.bfloat16):
        print("this CPU has no oneDNN bf16 path: nothing to compare")
        return 1
    tune_allocator()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    model = load_model("basicvsr-vimeo-bi").eval().channels_last()
    gen = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    feats = [
        (torch.randn(1, 64, h, w, generator=gen) * 0.5).contiguous(memory_format=cl)
        for _ in range(3)
    ]
    lr = torch.rand(1, 3, h, w, generator=gen)
    zero_bordered = routing.BlockConvs.update

    def trunk(new: bool):
        def run() -> torch.Tensor:
            routing.BlockConvs.update = zero_bordered if new else padded
            x = feats[0].clone()
            for m, block in enumerate(model.forward_trunk.blocks):
                x.add_(routing.residual_update(block, x, routing.block_precision("mixed", m)))
            return x

        return run

    def upsampler(new: bool):
        def run() -> torch.Tensor:
            backbone.prepads = routing.prepads if new else (lambda dtype: False)
            with routing.bf16_autocast(lr, True):
                return model.upsample(feats[1], feats[2], lr)

        return run

    print(f"{cpu_info().get('cpu_model')}, {args.threads} threads, {h}x{w}")
    with torch.no_grad():
        for name, make in (("trunk", trunk), ("upsampler", upsampler)):
            diff = float((make(True)() - make(False)()).abs().max())
            ratio, old, new = paired_times(make(False), make(True), args.rounds)
            print(
                f"{name}: padded {old * 1e3:.1f} ms, zero-bordered {new * 1e3:.1f} ms (medians); "
                f"paired ratio {ratio:.3f}; largest difference {diff:.4g}"
            )
    routing.BlockConvs.update = zero_bordered
    backbone.prepads = routing.prepads
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
