"""Resumable upscaling: a job's progress kept beside its output, one segment per finished chunk.

A job on the output ``OUT`` lives in the folder ``.OUT.skipvsr-job`` next to it:

* ``job.json``: the settings (the caller's and the streaming ones) and the input's identity
  (:class:`InputIdentity`), written once when the job starts;
* ``chunk_000000.npz``, ...: each finished chunk's upscaled frames ``(n, H, W, 3) uint8`` with
  their timestamps, and the chunk's stats as JSON, each file renamed into place when complete;
* ``partial.*``: the output being encoded (the sink's temporary file).

Why lossless segments and one continuous encode: a resumed job replays the finished chunks'
frames into a fresh encoder and then carries on, so the encoder sees the same frames with the
same timestamps in the same order as in an uninterrupted run, and the file comes out the same
(the encoder is deterministic for a given thread count). Encoding each chunk apart and joining
packets would start a new group of pictures at every chunk border, which an uninterrupted run
does not do. The price is disk: about ``H * W * 3`` bytes per frame before compression.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from skipvsr.frames import MediaError, list_frames
from skipvsr.video.io import probe

JOB_FILE = "job.json"
IDENTITY_BYTES = 1 << 20  # the input's first MiB is hashed


def job_folder(output: str | os.PathLike) -> Path:
    """The progress folder of the job writing ``output``."""
    output = Path(output)
    return output.with_name(f".{output.name}.skipvsr-job")


@dataclass(frozen=True)
class InputIdentity:
    """What must not change under a resumed job: ``size`` in bytes (all frame files of a
    folder), ``frames`` (packets of the video stream, or frame files), and the ``sha256`` of the
    first MiB (of the first frame file, and the frame names, for a folder)."""

    size: int
    frames: int
    sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike) -> InputIdentity:
        path = Path(path)
        frames = probe(path).frames  # first: it names a missing or unreadable input
        digest = hashlib.sha256()
        if path.is_dir():
            files = list_frames(path)
            digest.update("\n".join(f.name for f in files).encode())
            first = files[0] if files else None
            size = sum(f.stat().st_size for f in files)
        else:
            first, size = path, path.stat().st_size
        if first is not None:
            with open(first, "rb") as f:
                digest.update(f.read(IDENTITY_BYTES))
        return cls(size=size, frames=frames, sha256=digest.hexdigest())


@dataclass
class Resumable:
    """How :func:`skipvsr.video.streaming.upscale_media` keeps a job's progress.

    ``folder`` is the job folder (:func:`job_folder`); ``settings`` the caller's JSON-ready
    settings that a resumed job must share (model, route, ...); ``resume`` continues the job
    found there. ``stats_to_json`` / ``stats_from_json`` store the opaque per-chunk stats.
    """

    folder: Path
    settings: dict = field(default_factory=dict)
    resume: bool = False
    stats_to_json: Callable[[Any], Any] = lambda stats: None
    stats_from_json: Callable[[Any], Any] = lambda data: None

    def segment(self, index: int) -> Path:
        return self.folder / f"chunk_{index:06d}.npz"

    def finished(self) -> list[Path]:
        """The segments of chunks 0, 1, ... that are complete (the first gap ends the list)."""
        out = []
        while self.segment(len(out)).is_file():
            out.append(self.segment(len(out)))
        return out

    def begin(self, input: str | os.PathLike, settings: dict, overwrite: bool) -> list[Path]:
        """Start or continue the job on ``input`` with the caller's settings plus the streaming
        ``settings``; returns the finished segments to replay (none for a new job).

        Raises :class:`MediaError` (one line) when resuming with other settings or a changed
        input, or when an unfinished job would be lost without ``resume`` or ``overwrite``.
        """
        record = {
            "settings": {**self.settings, **settings},
            "input": asdict(InputIdentity.of(input)),
        }
        record = json.loads(json.dumps(record))  # tuples -> lists, as read back
        job_file = self.folder / JOB_FILE
        if self.resume and job_file.is_file():
            self._check_same(json.loads(job_file.read_text()), record, input)
            for stale in self.folder.glob("partial*"):
                _remove(stale)
            return self.finished()
        done = self.finished()
        if done and not overwrite:
            raise MediaError(
                f"output: an unfinished job ({len(done)} chunks done) is kept in {self.folder} "
                "(expected --resume to continue it, or --overwrite to start over)"
            )
        _remove(self.folder)
        self.folder.mkdir()
        _write_atomic(job_file, json.dumps(record, indent=2))
        return []

    def _check_same(self, saved: dict, now: dict, input) -> None:
        if saved.get("input") != now["input"]:
            raise MediaError(
                f"--resume: input {input} is not the one this job started on (size, frame "
                f"count or first MiB differ from {self.folder / JOB_FILE}); "
                "expected the same input, or --overwrite to start over"
            )
        old, new = _flat(saved.get("settings", {})), _flat(now["settings"])
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise MediaError(
                    f"--resume: {key} is {new.get(key)!r} but the job started with "
                    f"{old.get(key)!r}; expected the same settings, or --overwrite to start over"
                )

    def save(self, index: int, images: np.ndarray, stamps: list, stats: Any) -> None:
        """Keep chunk ``index``: frames ``(n, H, W, 3) uint8``, ``stamps`` ``[(pts, time_base)]``
        and its stats; the file appears only once complete."""
        tb = [(Fraction(t).numerator, Fraction(t).denominator) for _, t in stamps]
        path = self.segment(index)
        temp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            temp,
            images=images,
            pts=np.asarray([p for p, _ in stamps], dtype=np.int64),
            time_base=np.asarray(tb, dtype=np.int64).reshape(-1, 2),
            stats=np.asarray(json.dumps(self.stats_to_json(stats))),
        )
        os.replace(temp, path)

    def load(self, path: Path) -> tuple[np.ndarray, list, Any]:
        """``(images, stamps, stats)`` of a segment written by :meth:`save`."""
        try:
            with np.load(path) as z:
                stamps = [(int(p), Fraction(int(n), int(d))) for p, (n, d) in
                          zip(z["pts"], z["time_base"], strict=True)]  # fmt: skip
                stats = json.loads(str(z["stats"]))
                return z["images"], stamps, self.stats_from_json(stats)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise MediaError(
                f"--resume: segment {path} is damaged ({e}); expected --overwrite to start over"
            ) from None

    def partial(self, suffix: str) -> Path:
        """Where the output is encoded until it is complete."""
        return self.folder / f"partial{suffix}"

    def __enter__(self) -> Resumable:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Once the output is complete the progress goes; see :meth:`abandon` for failures."""
        if exc_type is None:
            _remove(self.folder)
        else:
            self.abandon()

    def abandon(self) -> None:
        """The job failed: it keeps its segments, or leaves nothing if it finished none."""
        if not self.finished():
            _remove(self.folder)


def _flat(settings: dict, prefix: str = "") -> dict:
    """``{"route": {"seed": 0}}`` -> ``{"route.seed": 0}``, so a refusal names the leaf."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
