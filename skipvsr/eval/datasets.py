"""Benchmark clips from folders of frames: Vid4, REDS4, Vimeo-90K-T, UDM10 and generic pairs.

A clip is a :class:`Clip`: ``hr`` and ``lr`` are ``(T, H, W, 3)`` uint8 RGB arrays with
``lr`` exactly ``hr / 4`` in size (``hr`` is mod-cropped to a multiple of 4). ``hr`` is ``None``
when no ground truth exists. Frames are PNG or JPEG files, natural-sorted by name
(``2.png`` before ``10.png``), and must all be 8-bit RGB of one size.

When no LR folder is given the LR frames are made on the fly from HR with
:func:`skipvsr.degradation.degrade`: ``"BI"`` (MATLAB bicubic), ``"BD"`` (BasicVSR's
``BD_degradation.m``) or ``"BD_DUF"`` (DUF-style, not for BasicVSR BD weights).

Layouts (all paths come from arguments; nothing is downloaded):

* Vid4: ``<root>/<clip>/HR/*.png`` for calendar, city, foliage, walk; ``<root>/<clip>/LR_BI``
  is used for BI when present.
* REDS4: ``<root>/GT/<clip>`` for 000, 011, 015, 020; ``<root>/sharp_bicubic/<clip>`` (BI) if
  present.
* Vimeo-90K-T: ``<root>/sequences/<a>/<b>/im1.png .. im7.png``, clips listed in
  ``<root>/sep_testlist.txt`` (lines ``<a>/<b>``); optional ``lr_root`` with ``<a>/<b>/im*.png``.
* UDM10: ``<root>/GT/<clip>``; ``<root>/BDx4/<clip>`` is used for BD when present.
* Folders: :class:`FolderPairs`, any ``hr_dir`` / ``lr_dir`` of clip folders (or of frames).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skipvsr.degradation import DEGRADATIONS, degrade_clip
from skipvsr.frames import list_frames, natural_key, read_rgb8

SCALE = 4
VID4_CLIPS = ("calendar", "city", "foliage", "walk")
REDS4_CLIPS = ("000", "011", "015", "020")


@dataclass
class Clip:
    """One test clip.

    ``hr``: ``(T, H, W, 3)`` uint8 or ``None``; ``lr``: ``(T, H/4, W/4, 3)`` uint8;
    ``frames``: the frame file names (of ``hr`` if present, else of ``lr``).
    """

    name: str
    hr: np.ndarray | None
    lr: np.ndarray
    frames: list[str] = field(default_factory=list)


def read_frames(folder: str | Path) -> tuple[np.ndarray, list[str]]:
    """All frames of ``folder`` as ``(T, H, W, 3)`` uint8, plus their file names.

    Raises ``ValueError`` for an empty folder, and :class:`skipvsr.frames.MediaError` (a
    ``ValueError``) naming the file for a frame that is not 8-bit RGB or whose size differs from
    the first one.
    """
    paths = list_frames(folder)
    if not paths:
        raise ValueError(f"no .png/.jpg frames in {folder}")
    first = read_rgb8(paths[0])
    size = (first.shape[1], first.shape[0])
    frames = [first, *(read_rgb8(p, size) for p in paths[1:])]
    return np.stack(frames), [p.name for p in paths]


def _check_degradation(degradation: str) -> None:
    if degradation not in DEGRADATIONS:
        raise ValueError(f"degradation must be one of {DEGRADATIONS}, got {degradation!r}")


def make_clip(
    name: str,
    hr_dir: str | Path | None,
    lr_dir: str | Path | None = None,
    degradation: str = "BI",
) -> Clip:
    """Load a clip: HR from ``hr_dir`` (mod-cropped to 4), LR from ``lr_dir`` or made from HR.

    At least one of the folders must be given. With both, the frame counts must agree and
    LR must be exactly HR / 4 in size.
    """
    _check_degradation(degradation)
    hr = lr = None
    names: list[str] = []
    if hr_dir is not None:
        hr, names = read_frames(hr_dir)
        h, w = hr.shape[1:3]
        hr = np.ascontiguousarray(hr[:, : h - h % SCALE, : w - w % SCALE])
    if lr_dir is not None:
        lr, lr_names = read_frames(lr_dir)
        names = names or lr_names
    elif hr is not None:
        lr = degrade_clip(hr, degradation, SCALE)
    else:
        raise ValueError(f"clip {name!r}: neither an HR nor an LR folder was given")
    if hr is not None:
        want = (hr.shape[0], hr.shape[1] // SCALE, hr.shape[2] // SCALE, 3)
        if lr.shape != want:
            raise ValueError(
                f"clip {name!r}: LR frames {lr.shape} in {lr_dir} do not match HR {hr.shape} "
                f"in {hr_dir}; expected {want} (T, H/{SCALE}, W/{SCALE}, 3)"
            )
    return Clip(name, hr, lr, names)


class _Dataset:
    """Lazy sequence of clips: ``len()``, ``names``, ``load(name)``, iteration loads one clip
    at a time."""

    names: list[str]

    def load(self, name: str) -> Clip:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Clip]:
        for name in self.names:
            yield self.load(name)


def _pick(available: Sequence[str], clips: Sequence[str] | None, where: str) -> list[str]:
    if clips is None:
        return list(available)
    missing = [c for c in clips if c not in available]
    if missing:
        raise ValueError(f"unknown clips {missing} for {where}; available: {list(available)}")
    return list(clips)


class Vid4(_Dataset):
    """Vid4: ``<root>/<clip>/HR``; LR from ``<root>/<clip>/LR_BI`` for BI when present, else
    made from HR. ``LR_BD_DUF`` folders are never used (wrong phase for BasicVSR BD)."""

    def __init__(
        self, root: str | Path, degradation: str = "BI", clips: Sequence[str] | None = None
    ):
        _check_degradation(degradation)
        self.root = Path(root)
        self.degradation = degradation
        self.names = _pick(VID4_CLIPS, clips, f"Vid4 at {self.root}")

    def load(self, name: str) -> Clip:
        lr_dir = self.root / name / "LR_BI"
        use_lr = self.degradation == "BI" and lr_dir.is_dir()
        return make_clip(
            name, self.root / name / "HR", lr_dir if use_lr else None, self.degradation
        )


class FolderPairs(_Dataset):
    """Generic clips: ``hr_dir/<clip>/frames`` and optionally ``lr_dir/<clip>/frames``.

    If ``hr_dir`` (or ``lr_dir`` when ``hr_dir`` is ``None``) holds frames directly, it is one
    clip named after the folder. Without ``lr_dir`` LR is made with ``degradation``; with
    ``hr_dir=None`` the clips have no ground truth.
    """

    def __init__(
        self,
        hr_dir: str | Path | None,
        lr_dir: str | Path | None = None,
        degradation: str = "BI",
        clips: Sequence[str] | None = None,
    ):
        _check_degradation(degradation)
        if hr_dir is None and lr_dir is None:
            raise ValueError("FolderPairs needs hr_dir, lr_dir or both")
        self.hr_dir = Path(hr_dir) if hr_dir is not None else None
        self.lr_dir = Path(lr_dir) if lr_dir is not None else None
        self.degradation = degradation
        base = self.hr_dir if self.hr_dir is not None else self.lr_dir
        if not base.is_dir():
            raise FileNotFoundError(f"folder not found: {base}")
        self.single = bool(list_frames(base))
        if self.single:
            found = [base.name]
        else:
            subdirs = [p.name for p in base.iterdir() if p.is_dir()]
            found = sorted(subdirs, key=natural_key)
            if not found:
                raise ValueError(f"{base} holds neither frames nor clip folders")
        self.names = _pick(found, clips, str(base))

    def _dir(self, top: Path | None, name: str) -> Path | None:
        if top is None:
            return None
        return top if self.single else top / name

    def load(self, name: str) -> Clip:
        return make_clip(
            name, self._dir(self.hr_dir, name), self._dir(self.lr_dir, name), self.degradation
        )


class REDS4(FolderPairs):
    """REDS4: ``<root>/GT/<clip>`` (000, 011, 015, 020) with ``<root>/sharp_bicubic/<clip>``
    used for BI when present."""

    def __init__(
        self, root: str | Path, degradation: str = "BI", clips: Sequence[str] | None = None
    ):
        root = Path(root)
        lr = root / "sharp_bicubic"
        lr_dir = lr if degradation == "BI" and lr.is_dir() else None
        super().__init__(root / "GT", lr_dir, degradation, _pick(REDS4_CLIPS, clips, "REDS4"))


class UDM10(FolderPairs):
    """UDM10: ``<root>/GT/<clip>`` with ``<root>/BDx4/<clip>`` used for BD when present."""

    def __init__(
        self, root: str | Path, degradation: str = "BD", clips: Sequence[str] | None = None
    ):
        root = Path(root)
        lr = root / "BDx4"
        lr_dir = lr if degradation == "BD" and lr.is_dir() else None
        super().__init__(root / "GT", lr_dir, degradation, clips)


class Vimeo90KT(_Dataset):
    """Vimeo-90K-T: ``<root>/sequences/<a>/<b>/im1..7.png``, clips from ``sep_testlist.txt``.

    Clip names are ``"<a>/<b>"``. ``lr_root`` (optional) holds ``<a>/<b>/im*.png`` LR frames.
    The full test set has 7824 clips: iterate rather than loading it all at once.
    """

    def __init__(
        self,
        root: str | Path,
        degradation: str = "BI",
        clips: Sequence[str] | None = None,
        lr_root: str | Path | None = None,
    ):
        _check_degradation(degradation)
        self.root = Path(root)
        self.lr_root = Path(lr_root) if lr_root is not None else None
        self.degradation = degradation
        listing = self.root / "sep_testlist.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"Vimeo-90K-T clip list not found: {listing}")
        found = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        self.names = _pick(found, clips, str(listing))

    def load(self, name: str) -> Clip:
        lr_dir = self.lr_root / name if self.lr_root is not None else None
        return make_clip(name, self.root / "sequences" / name, lr_dir, self.degradation)


DATASETS = {"vid4": Vid4, "reds4": REDS4, "vimeo90k-t": Vimeo90KT, "udm10": UDM10}


def open_dataset(
    name: str, root: str | Path, degradation: str = "BI", clips: Sequence[str] | None = None
) -> _Dataset:
    """Lazy dataset by name (``vid4``, ``reds4``, ``vimeo90k-t``, ``udm10``; case-insensitive).

    ``root`` is the dataset folder (see the module docstring for each layout).
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[key](root, degradation, clips)


def load_dataset(
    name: str, root: str | Path, degradation: str = "BI", clips: Sequence[str] | None = None
) -> list[Clip]:
    """All clips of :func:`open_dataset` loaded into memory, as a list of :class:`Clip`."""
    return list(open_dataset(name, root, degradation, clips))
