"""Audio and subtitles of a source video, copied into an upscaled output by time."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

# What MP4/MOV players accept for stream copy (libavformat's own list is more permissive than
# what its muxer can finish, e.g. PCM in .mp4).
_MP4_COPY = {"aac", "mp3", "mp2", "ac3", "eac3", "alac", "flac", "opus", "mov_text"}
# Audio encoder where the source codec cannot be copied (FLAC for the other containers).
_REENCODE = {".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".webm": "libopus"}


def _can_copy(suffix: str, codec: str, supported: set[str]) -> bool:
    if suffix in (".mp4", ".m4v"):
        return codec in _MP4_COPY
    if suffix == ".mov":
        return codec in _MP4_COPY or codec.startswith("pcm_")
    return codec in supported


class AuxCopier:
    """Copy audio and subtitle packets of the source into the output, interleaved by time.

    Packets are stream-copied where the output container accepts the codec; otherwise audio is
    decoded and re-encoded (AAC for MP4/MOV, Opus for WebM, FLAC elsewhere) and subtitles are
    dropped, each with a one-line note in ``messages``. Only packets inside the processed time
    range are kept.
    """

    def __init__(self, path: Path, start: float, out, messages: list[str]) -> None:
        """Copy from the media file ``path``, from ``start`` seconds on, into the open output
        container ``out``; notes go to ``messages``."""
        self.container = av.open(str(path), "r")
        self.start = start
        self._start_cut = Fraction(self.start).limit_denominator(10**6) - Fraction(1, 1000)
        self.offset = Fraction(0)
        self.out = out
        supported = out.supported_codecs
        self.map = {}  # input stream index -> (output stream, encoder or None)
        suffix = Path(out.name).suffix.lower()
        for s in self.container.streams:
            if s.type not in ("audio", "subtitle") or s.codec_context is None:
                continue
            name = s.codec_context.codec.canonical_name
            if _can_copy(suffix, name, supported):
                self.map[s.index] = (out.add_stream_from_template(s), None)
            elif s.type == "audio":
                enc = _REENCODE.get(suffix, "flac")
                codec = av.Codec(enc, "w")
                rate = s.codec_context.sample_rate
                if codec.audio_rates and rate not in codec.audio_rates:
                    rate = max(codec.audio_rates)  # Opus: 48 kHz; the encoder resamples
                channels = len(s.codec_context.layout.channels) or 2
                layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}.get(channels, "stereo")
                fmt = codec.audio_formats[0].name
                o = out.add_stream(enc, rate=rate, format=fmt, layout=layout)
                if enc == "aac":
                    o.bit_rate = 320_000
                self.map[s.index] = (o, s)
                messages.append(
                    f"audio stream #{s.index} ({name}) re-encoded to {enc}: "
                    f"{suffix} cannot hold {name}"
                )
            else:
                messages.append(
                    f"subtitle stream #{s.index} ({name}) dropped: {suffix} cannot hold it "
                    "(use .mkv to keep it)"
                )
        self._packets = None
        if self.map:
            streams = [self.container.streams[i] for i in self.map]
            if self.start > 0:
                self.container.seek(int(self.start * av.time_base), backward=True)
            self._packets = self.container.demux(*streams)
        self._pending = None

    def _next(self):
        if self._pending is not None:
            p, self._pending = self._pending, None
            return p
        if self._packets is None:
            return None
        for packet in self._packets:
            if packet.size == 0 or (packet.dts is None and packet.pts is None):
                continue
            return packet
        self._packets = None
        return None

    def copy_until(self, t: Fraction | None, final: bool = False) -> None:
        """Mux packets whose (shifted) time is before ``t`` seconds; ``None`` means all."""
        while True:
            packet = self._next()
            if packet is None:
                break
            ts = packet.pts if packet.pts is not None else packet.dts
            when = Fraction(ts) * packet.time_base
            if self.start > 0 and when < self._start_cut:
                continue
            if t is not None and when - self.offset >= t:
                if not final:
                    self._pending = packet
                break
            out_stream, decoder = self.map[packet.stream.index]
            shift = round(self.offset / packet.time_base)
            if decoder is None:
                if shift:
                    packet.pts = packet.pts - shift if packet.pts is not None else None
                    packet.dts = packet.dts - shift if packet.dts is not None else None
                packet.stream = out_stream
                self.out.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = frame.pts - shift if frame.pts is not None else None
                    for p in out_stream.encode(frame):
                        self.out.mux(p)
        if final:
            for out_stream, decoder in self.map.values():
                if decoder is not None:
                    for p in out_stream.encode():
                        self.out.mux(p)

    def close(self) -> None:
        self.container.close()
