"""Reading and writing videos and frame folders with PyAV.

Frames travel as ``(H, W, 3) uint8`` RGB numpy arrays together with their presentation
timestamp ``pts`` (an int) and the ``time_base`` (a :class:`fractions.Fraction`) it counts in,
so that variable frame rate survives a round trip.

* :func:`probe` / :func:`format_info` describe a file or a folder of frames.
* :class:`FrameSource` decodes a video file or reads a folder of PNG/JPG frames.
* :class:`FrameSink` encodes a video (audio and subtitles copied from the source by
  :class:`skipvsr.video.audio.AuxCopier`) or writes a PNG folder; the result appears at the
  target path only once it is complete.

Frame folders are read with :func:`skipvsr.frames.read_rgb8` (8-bit RGB only); every error is
a one-line :class:`skipvsr.frames.MediaError`.

Colour: YUV is converted with the matrix the stream is tagged with (BT.601 when it is
untagged and smaller than HD, BT.709 otherwise) and with its range (limited unless tagged full
or a ``yuvj`` format). Output is limited-range ``yuv420p`` tagged BT.709, or BT.601 when the
source was tagged BT.601 and the output is still smaller than HD.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from skipvsr.frames import MediaError, list_frames, read_rgb8
from skipvsr.video.audio import AuxCopier
from skipvsr.video.heap import filled_heap

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm")
MIN_SIZE = 8
DEFAULT_FOLDER_FPS = Fraction(25)
CRF_CODECS = ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1")

# AVColorSpace values (as found on frames and streams) -> swscale matrix names.
_MATRIX = {
    1: "ITU709",
    4: "FCC",
    5: "ITU601",
    6: "ITU601",
    7: "SMPTE240M",
    9: "BT2020",
    10: "BT2020",
}
_MATRIX_NAMES = {0: "rgb", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m",
                 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}  # fmt: skip
_RANGE_NAMES = {0: "unknown", 1: "tv (limited)", 2: "pc (full)"}
_PRIMARIES_NAMES = {1: "bt709", 2: "unknown", 5: "bt470bg", 6: "smpte170m", 9: "bt2020"}
_TRC_NAMES = {1: "bt709", 2: "unknown", 6: "smpte170m", 13: "srgb", 16: "smpte2084", 18: "hlg"}


def _is_hd(width: int, height: int) -> bool:
    return height >= 720 or width >= 1280


def _open_input(path: Path) -> av.container.InputContainer:
    if path.is_symlink() and not path.exists():
        raise MediaError(f"input: {path} is a broken or looping symlink (expected a video file)")
    if not path.exists():
        raise MediaError(f"input: {path} does not exist (expected a video file or a frame folder)")
    try:
        return av.open(str(path), "r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(f"input: {path} is not a readable media file ({e})") from None


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise MediaError(f"input: {path} has no video stream (expected at least one)")
    return container.streams.video[0]


# --------------------------------------------------------------------------- probing


@dataclass
class StreamInfo:
    """One stream: ``type`` ('video', 'audio', ...), ``codec`` name, human-readable details."""

    index: int
    type: str
    codec: str
    details: str


@dataclass
class MediaInfo:
    """What :func:`probe` found. Times in seconds; ``fps`` is the average frame rate."""

    path: str
    container: str
    width: int
    height: int
    frames: int
    fps: float
    variable_fps: bool
    duration: float
    pix_fmt: str = ""
    colorspace: str = "unknown"
    color_range: str = "unknown"
    color_primaries: str = "unknown"
    color_trc: str = "unknown"
    streams: list[StreamInfo] = field(default_factory=list)


def _video_timing(container, stream) -> tuple[int, list[int]]:
    """Count video packets by demuxing (no decoding); return (count, sorted pts)."""
    pts = []
    count = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        count += 1
        if packet.pts is not None:
            pts.append(packet.pts)
    return count, sorted(pts)


def _name(table: dict[int, str], value) -> str:
    return table.get(int(value), str(int(value)))


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a video file or a folder of frames (raises :class:`MediaError`)."""
    path = Path(path)
    if path.is_dir():
        with FrameSource(path) as src:
            n = len(src._files)
            fps = float(src.fps)
            return MediaInfo(
                str(path), "image folder", src.width, src.height, n, fps, False, n / fps,
                "rgb24", "rgb", "pc (full)", streams=[StreamInfo(0, "video", "png", f"{n} images")],
            )  # fmt: skip
    container = _open_input(path)
    try:
        vs = _video_stream(container, path)
        cc = vs.codec_context
        streams = []
        for s in container.streams:
            ctx = s.codec_context
            name = ctx.name if ctx is not None else "?"
            if s.type == "video":
                rate = s.average_rate or s.guessed_rate
                details = (
                    f"{ctx.width}x{ctx.height} {ctx.pix_fmt or '?'} {float(rate or 0):.3f} fps"
                )
            elif s.type == "audio":
                layout = ctx.layout.name if ctx.layout else "?"
                details = f"{ctx.sample_rate} Hz {layout} {ctx.format.name if ctx.format else '?'}"
            else:
                details = ""
            if s.language:
                details = f"{details} [{s.language}]".strip()
            streams.append(StreamInfo(s.index, s.type, name, details))
        count, pts = _video_timing(container, vs)
        tb = vs.time_base
        deltas = np.diff(np.asarray(pts, dtype=np.int64)) if len(pts) > 1 else np.zeros(0)
        deltas = deltas[deltas > 0]
        if len(deltas):
            variable = bool(deltas.max() - deltas.min() > max(1, 0.01 * deltas.min()))
            span = (pts[-1] - pts[0] + float(np.median(deltas))) * tb
            fps = count / float(span) if span else 0.0
        else:
            variable = False
            fps = float(vs.average_rate or vs.guessed_rate or 0)
        if container.duration:
            duration = container.duration / av.time_base
        elif fps:
            duration = count / fps
        else:
            duration = 0.0
        return MediaInfo(
            str(path), container.format.name, cc.width, cc.height, count, fps, variable, duration,
            pix_fmt=cc.pix_fmt or "",
            colorspace=_name(_MATRIX_NAMES, cc.colorspace),
            color_range=_name(_RANGE_NAMES, cc.color_range),
            color_primaries=_name(_PRIMARIES_NAMES, cc.color_primaries),
            color_trc=_name(_TRC_NAMES, cc.color_trc),
            streams=streams,
        )  # fmt: skip
    except av.error.FFmpegError as e:
        raise MediaError(f"input: {path} could not be read ({e})") from None
    finally:
        container.close()


def format_info(info: MediaInfo) -> str:
    """Multi-line human-readable summary of :func:`probe` output."""
    rate = "variable" if info.variable_fps else "constant"
    lines = [
        f"{info.path} ({info.container})",
        f"  video: {info.width}x{info.height}, {info.frames} frames, {info.fps:.3f} fps ({rate}), "
        f"{info.duration:.3f} s",
        f"  colour: matrix {info.colorspace}, range {info.color_range}, "
        f"primaries {info.color_primaries}, transfer {info.color_trc}, pixels {info.pix_fmt}",
    ]
    for s in info.streams:
        lines.append(f"  stream #{s.index}: {s.type} {s.codec} {s.details}".rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading


def _color_args(frame: av.VideoFrame, tagged_space: int, tagged_range: int) -> dict:
    """Arguments for ``VideoFrame.reformat`` that convert this frame's YUV to RGB correctly."""
    fmt = frame.format.name
    if not fmt.startswith(("yuv", "nv", "p0", "p2", "y2", "uyv", "yv")):
        return {}  # RGB, gray, palette: no YUV matrix involved
    space = int(frame.colorspace) if int(frame.colorspace) in _MATRIX else tagged_space
    matrix = _MATRIX.get(space)
    if matrix is None:
        matrix = "ITU709" if _is_hd(frame.width, frame.height) else "ITU601"
    rng = int(frame.color_range) or tagged_range
    if rng == 0:
        rng = 2 if fmt.startswith("yuvj") else 1
    return {"src_colorspace": matrix, "src_color_range": "JPEG" if rng == 2 else "MPEG"}


class FrameSource:
    """Frames of a video file or a folder of PNG/JPG images, in display order.

    Iterating yields ``(rgb, pts, time_base)``: ``rgb`` is ``(H, W, 3) uint8``, ``pts`` an int
    counted in ``time_base`` (Fraction). ``start_seconds`` seeks (frames before it are skipped),
    ``max_frames`` stops early. For folders ``fps`` sets the frame rate (default 25) and
    ``pts`` is the frame index. Attributes known after construction: ``width``, ``height``,
    ``fps`` (Fraction, average), ``time_base``, ``colorspace`` (AVColorSpace int as tagged),
    ``color_range``, ``color_primaries``, ``color_trc``, ``is_folder``, ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        start_seconds: float = 0.0,
        max_frames: int | None = None,
        fps: float | Fraction | None = None,
    ) -> None:
        self.path = Path(path)
        if start_seconds < 0:
            raise MediaError(f"start: {start_seconds} is negative (expected seconds >= 0)")
        if max_frames is not None and max_frames < 1:
            raise MediaError(f"max_frames: {max_frames} (expected a positive integer or None)")
        self.start_seconds = float(start_seconds)
        self.max_frames = max_frames
        self.container = None
        self.is_folder = self.path.is_dir()
        self.colorspace = self.color_range = 0
        self.color_primaries = self.color_trc = 2
        if self.is_folder:
            self._files = list_frames(self.path)
            if not self._files:
                raise MediaError(f"input: folder {self.path} has no .png/.jpg frames")
            first = read_rgb8(self._files[0])
            self.height, self.width = first.shape[:2]
            self.fps = Fraction(fps).limit_denominator(1001) if fps else DEFAULT_FOLDER_FPS
            self.time_base = 1 / self.fps
            self.color_range = 2
        else:
            self.container = _open_input(self.path)
            try:
                self.stream = _video_stream(self.container, self.path)
            except MediaError:
                self.container.close()
                raise
            cc = self.stream.codec_context
            self.width, self.height = cc.width, cc.height
            rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
            self.fps = Fraction(fps) if fps else Fraction(rate)
            self.time_base = self.stream.time_base
            self.colorspace, self.color_range = int(cc.colorspace), int(cc.color_range)
            self.color_primaries, self.color_trc = int(cc.color_primaries), int(cc.color_trc)

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, int, Fraction]]:
        return self._iter_folder() if self.is_folder else self._iter_video()

    def _iter_folder(self):
        skip = int(round(self.start_seconds * self.fps))
        files = self._files[skip:]
        if self.max_frames is not None:
            files = files[: self.max_frames]
        for i, f in enumerate(files):
            yield read_rgb8(f, (self.width, self.height)), skip + i, self.time_base

    def _iter_video(self):
        vs, tb = self.stream, self.time_base
        vs.thread_type = "AUTO"
        start_pts = None
        if self.start_seconds > 0:
            offset = (vs.start_time or 0) + int(self.start_seconds / tb)
            start_pts = offset
            self.container.seek(offset, stream=vs, backward=True, any_frame=False)
        n = 0
        try:
            for frame in self.container.decode(vs):
                if n == 0:
                    _check_first_frame(frame, self.path)
                pts = frame.pts if frame.pts is not None else n
                if start_pts is not None and pts < start_pts:
                    continue
                args = _color_args(frame, self.colorspace, self.color_range)
                rgb = frame.to_ndarray(format="rgb24", **args)
                yield rgb, pts, tb
                n += 1
                if self.max_frames is not None and n >= self.max_frames:
                    return
        except av.error.FFmpegError as e:
            if n == 0:
                raise MediaError(f"input: {self.path} could not be decoded ({e})") from None
            # A damaged tail: keep what decoded, like most players do.


def _check_first_frame(frame: av.VideoFrame, path: Path) -> None:
    """:class:`MediaError` for frames that would come out wrong: a display rotation (phone
    videos; the frames are stored sideways) or interlaced fields (the model sees combing)."""
    if frame.rotation:
        raise MediaError(
            f"input: {path} is to be shown rotated by {frame.rotation} degrees (expected upright "
            "frames; let ffmpeg apply the rotation first: ffmpeg -i IN -c:a copy OUT.mp4)"
        )
    if frame.interlaced_frame:
        raise MediaError(
            f"input: {path} is interlaced (expected progressive frames; deinterlace first: "
            "ffmpeg -i IN -vf bwdif=0 -c:a copy OUT.mp4)"
        )


# --------------------------------------------------------------------------- writing


def is_folder_output(path: str | os.PathLike) -> bool:
    """An output without a suffix (or an existing folder) is written as a PNG folder."""
    p = Path(path)
    return p.is_dir() or p.suffix == "" or str(path).endswith(os.sep)


def _temp_path(target: Path) -> Path:
    return target.with_name(f".{target.stem}.skipvsr-tmp-{os.getpid()}{target.suffix}")


def check_output(target: str | os.PathLike, *, overwrite: bool) -> Path:
    """Validate the output path before any work is done (raises :class:`MediaError`)."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise MediaError(f"output: {parent} is a file (expected an existing directory)")
    if not parent.is_dir():
        raise MediaError(f"output: directory {parent} does not exist (expected an existing dir)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MediaError(f"output: directory {parent} is not writable (expected a writable dir)")
    if target.exists() and not overwrite:
        raise MediaError(f"output: {target} already exists (expected a new path, or overwrite)")
    if target.is_dir() and overwrite:
        foreign = [p.name for p in target.iterdir() if p.suffix.lower() != ".png"]
        if foreign:
            raise MediaError(
                f"output: folder {target} holds non-PNG files like {foreign[0]} "
                "(expected a frame folder to overwrite)"
            )
    if not is_folder_output(target) and target.suffix.lower() not in VIDEO_SUFFIXES:
        raise MediaError(
            f"output: suffix {target.suffix} not supported (expected one of "
            f"{', '.join(VIDEO_SUFFIXES)} or no suffix for a PNG folder)"
        )
    return target


class FrameSink:
    """Write upscaled frames to a video file or a PNG folder, atomically.

    ``write(rgb, pts, time_base)`` takes ``(H, W, 3) uint8`` frames in display order. Video
    output keeps the timestamps (rescaled to the output time base) and copies the audio and
    subtitle streams of ``source`` (a :class:`FrameSource`) for the same time range, re-encoding
    audio only where the container cannot hold the original codec; :attr:`messages` then says
    so. ``close()`` finishes and renames the temp file (``temp``, default a hidden name beside
    ``output``) onto ``output``; ``abort()`` (also run on an exception inside ``with``) removes
    the temp file.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        *,
        width: int,
        height: int,
        source: FrameSource | None = None,
        fps: Fraction | float = DEFAULT_FOLDER_FPS,
        time_base: Fraction | None = None,
        codec: str = "libx264",
        crf: int = 18,
        overwrite: bool = False,
        temp: Path | None = None,
    ) -> None:
        self.target = check_output(output, overwrite=overwrite)
        self.overwrite = overwrite
        self.width, self.height = width, height
        self.source = source
        self.messages: list[str] = []
        self.frames = 0
        self.folder = is_folder_output(self.target)
        self.temp = _temp_path(self.target) if temp is None else Path(temp)
        self._container = None
        self._last_pts = None
        self._pts_offset = None
        self._aux = None
        if self.folder:
            self.temp.mkdir()
            return
        try:
            with filled_heap():
                self._open_video(fps, time_base, codec, crf)
        except BaseException:
            self.abort()
            raise

    # -- video output
    def _open_video(self, fps, time_base, codec, crf) -> None:
        try:
            av.Codec(codec, "w")
        except (av.error.FFmpegError, ValueError):
            raise MediaError(f"codec: {codec} is not an available encoder (e.g. libx264)") from None
        fmt = {".m4v": "mp4"}.get(self.target.suffix.lower())
        self._container = av.open(str(self.temp), "w", format=fmt)
        if av.Codec(codec, "w").canonical_name not in self._container.supported_codecs:
            raise MediaError(
                f"codec: {codec} cannot go in a {self.target.suffix} file (expected another "
                "--codec, e.g. libvpx-vp9 for .webm, or another suffix)"
            )
        rate = Fraction(fps).limit_denominator(100000)
        options = {"crf": str(crf)} if codec in CRF_CODECS else {}
        vs = self._container.add_stream(codec, rate=rate, options=options)
        vs.width, vs.height = self.width, self.height
        formats = [f.name for f in (vs.codec_context.codec.video_formats or [])]
        vs.pix_fmt = "yuv420p" if not formats or "yuv420p" in formats else formats[0]
        self._time_base = Fraction(time_base) if time_base else 1 / rate
        self._step = 1 / rate
        vs.codec_context.time_base = self._time_base
        vs.time_base = self._time_base
        src = self.source
        src_601 = src is not None and src.colorspace in (5, 6)
        self._space = 5 if src_601 and not _is_hd(self.width, self.height) else 1
        self._yuv = vs.pix_fmt.startswith("yuv")
        cc = vs.codec_context
        cc.colorspace = self._space
        cc.color_range = 1 if self._yuv else 2
        prim = src.color_primaries if src is not None else 2
        trc = src.color_trc if src is not None else 2
        cc.color_primaries = prim if prim != 2 else (1 if self._space == 1 else 6)
        cc.color_trc = trc if trc != 2 else (1 if self._space == 1 else 6)
        self._vstream = vs
        if src is not None and not src.is_folder:
            self._aux = AuxCopier(src.path, src.start_seconds, self._container, self.messages)

    def write(self, rgb: np.ndarray, pts: int, time_base: Fraction) -> None:
        """Append one frame ``(height, width, 3) uint8`` shown at ``pts * time_base`` seconds."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise MediaError(
                f"frame: shape {rgb.shape} {rgb.dtype} "
                f"(expected ({self.height}, {self.width}, 3) uint8)"
            )
        if self.folder:
            Image.fromarray(rgb).save(self.temp / f"frame_{self.frames + 1:06d}.png")
            self.frames += 1
            return
        if self._pts_offset is None:
            start = self.source.start_seconds if self.source is not None else 0.0
            self._pts_offset = Fraction(pts) * time_base if start > 0 else Fraction(0)
            if self._aux is not None:
                self._aux.offset = self._pts_offset
        t = Fraction(pts) * time_base - self._pts_offset
        out_pts = round(t / self._time_base)
        if self._last_pts is not None and out_pts <= self._last_pts:
            out_pts = self._last_pts + 1  # keep timestamps strictly increasing
        with filled_heap():
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if self._yuv:
                frame = frame.reformat(
                    format=self._vstream.pix_fmt,
                    dst_colorspace="ITU709" if self._space == 1 else "ITU601",
                    dst_color_range="MPEG",
                )
            else:
                frame = frame.reformat(format=self._vstream.pix_fmt)
            frame.pts = out_pts
            frame.time_base = self._time_base
            if self._aux is not None:
                self._aux.copy_until(t)
            for packet in self._vstream.encode(frame):
                self._container.mux(packet)
        self._last_pts = out_pts
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and move it onto the target path; returns the target."""
        try:
            if self.frames == 0:
                raise MediaError("input: no frames were written (expected at least 1)")
            if self._container is not None:
                with filled_heap():
                    self._finish_video()
            if self.target.is_dir():
                shutil.rmtree(self.target)
            os.replace(self.temp, self.target)
        except BaseException:
            self.abort()
            raise
        return self.target

    def _finish_video(self) -> None:
        """Flush the encoder, copy the rest of the audio and subtitles, and close the file."""
        for packet in self._vstream.encode():
            self._container.mux(packet)
        if self._aux is not None:
            end = None
            if self.source is not None and self.source.max_frames is not None:
                end = Fraction(self._last_pts) * self._time_base + self._step
            self._aux.copy_until(end, final=True)
            self._aux.close()
            self._aux = None
        self._container.close()
        self._container = None

    def abort(self) -> None:
        """Drop everything written so far; the target path is left untouched."""
        if self._aux is not None:
            with contextlib.suppress(Exception):
                self._aux.close()
            self._aux = None
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self.temp.is_dir():
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.temp.unlink()

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
