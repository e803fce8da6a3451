"""The peers of the benchmark: the same BasicVSR exported to ONNX and run by ONNX Runtime and
OpenVINO, as a user without skipvsr would run it.

Optional: needs ``pip install onnx onnxruntime openvino`` (the ``bench`` extra). Each function
returns ``None`` with a reason when its runtime is not installed, so the benchmark still runs.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.reference import reference_forward
from skipvsr.backbone import BasicVSR


class _Reference(torch.nn.Module):
    """The eager reference forward as a module, so that the ONNX exporter can trace it."""

    def __init__(self, model: BasicVSR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return reference_forward(self.model, lr)


def missing(*modules: str) -> str | None:
    """The first module of ``modules`` that is not installed, or ``None``."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def export_onnx(model: BasicVSR, lr: torch.Tensor, path: Path) -> Path:
    """Trace the reference forward at the fixed shape of ``lr`` ``(1, T, 3, H, W)`` to ONNX."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Reference(model).eval(),
            (lr,),
            str(path),
            input_names=["lr"],
            output_names=["sr"],
            opset_version=17,
            dynamo=False,
        )
    return path


def onnxruntime_runner(path: Path, threads: int):
    """A callable ``lr (1, T, 3, H, W) float32 -> sr`` backed by ONNX Runtime on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(lr: torch.Tensor) -> torch.Tensor:
        (sr,) = session.run(None, {"lr": lr.numpy()})
        return torch.from_numpy(sr)

    return run


def openvino_runner(path: Path, threads: int, precision: str):
    """A callable ``lr -> sr`` backed by OpenVINO on the CPU; ``precision`` is ``f32`` or
    ``bf16`` (OpenVINO's inference precision hint; it falls back to f32 where the CPU has no
    bf16 instructions, which :func:`openvino_precision` reports)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(path),
        "CPU",
        {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads},
    )
    request = compiled.create_infer_request()

    def run(lr: torch.Tensor) -> torch.Tensor:
        out = request.infer({0: lr.numpy()})
        return torch.from_numpy(np.asarray(next(iter(out.values()))))

    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    run.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    return run
