"""Audio utilities: PCM16 mono resampling, mu-law 8 kHz (Twilio), WAV read/write, durations, framing.

Everything works on mono 16-bit little-endian PCM (``pcm16``); resampling is soxr's (anti-aliased).
``audioop`` is imported here and only here: the stdlib module on Python 3.11/3.12, the ``audioop-lts``
backport (same module name) on 3.13+.
``decode_audio`` goes through pydub and ffmpeg for compressed formats (mp3, ogg, ...).
"""

from __future__ import annotations

import io
import struct
import warnings
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from typing import Any

with warnings.catch_warnings():
    # 3.11/3.12 warn that the stdlib module goes away in 3.13; audioop-lts replaces it there.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

import numpy
import soxr

SAMPLE_WIDTH = 2
TWILIO_SAMPLE_RATE = 8000

__all__ = [
    "SAMPLE_WIDTH",
    "TWILIO_SAMPLE_RATE",
    "Resampler",
    "WavHeader",
    "WavStreamDecoder",
    "alaw_to_pcm16",
    "bytes_for_duration",
    "decode_audio",
    "duration_seconds",
    "frames",
    "parse_wav_header",
    "pcm16_to_alaw",
    "pcm16_to_twilio",
    "pcm16_to_ulaw",
    "read_wav",
    "resample",
    "rms",
    "sine_pcm16",
    "twilio_to_pcm16",
    "ulaw_to_pcm16",
    "wav_bytes",
    "write_wav",
]


def _check_pcm16(pcm16: bytes) -> None:
    if len(pcm16) % SAMPLE_WIDTH:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm16)}")


def _check_rate(rate: int, name: str = "sample_rate") -> None:
    if rate <= 0:
        raise ValueError(f"{name} must be positive, got {rate}")


def duration_seconds(pcm16: bytes, sample_rate: int) -> float:
    """Seconds of audio in mono PCM16 data."""
    _check_rate(sample_rate)
    return len(pcm16) / SAMPLE_WIDTH / sample_rate


def bytes_for_duration(seconds: float, sample_rate: int) -> int:
    """Byte length of ``seconds`` of mono PCM16 audio, rounded down to a whole sample."""
    _check_rate(sample_rate)
    if seconds < 0:
        raise ValueError(f"seconds must not be negative, got {seconds}")
    return int(seconds * sample_rate) * SAMPLE_WIDTH


def frames(pcm16: bytes, sample_rate: int, frame_ms: int = 20, *, pad: bool = False) -> Iterator[bytes]:
    """Split PCM16 into frames of ``frame_ms``; the last one is short unless ``pad`` fills it with silence."""
    _check_pcm16(pcm16)
    _check_rate(sample_rate)
    if frame_ms <= 0:
        raise ValueError(f"frame_ms must be positive, got {frame_ms}")
    size = sample_rate * frame_ms // 1000 * SAMPLE_WIDTH
    if size == 0:
        raise ValueError(f"{frame_ms} ms at {sample_rate} Hz is less than one sample")
    for start in range(0, len(pcm16), size):
        frame = pcm16[start : start + size]
        if pad and len(frame) < size:
            frame += b"\x00" * (size - len(frame))
        yield frame


class Resampler:
    """Streaming resampler (soxr, high quality): feed PCM16 pieces in order; filter state carries
    across pieces so the joins are seamless (resampling pieces independently clicks at every boundary).

    soxr low-pass filters before decimating: ``audioop.ratecv`` does not, so at 24 -> 8 kHz a 6 kHz
    tone came out as a full-scale 2 kHz alias. soxr works in blocks, so ``process`` may return less
    than it was given (even nothing for a short piece); ``flush()`` returns the rest at the end of a
    stream and starts a new one.

    With ``carry_odd_byte`` a piece may end mid-sample (byte streams split anywhere): the dangling
    byte is held for the next piece instead of being an error.
    """

    def __init__(self, from_rate: int, to_rate: int, *, carry_odd_byte: bool = False) -> None:
        _check_rate(from_rate, "from_rate")
        _check_rate(to_rate, "to_rate")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._carry_odd_byte = carry_odd_byte
        self._odd = b""
        self._stream: Any = None
        self._fed = False

    def _soxr(self) -> Any:
        if self._stream is None:
            self._stream = soxr.ResampleStream(self.from_rate, self.to_rate, 1, dtype="int16", quality="HQ")
        return self._stream

    def process(self, pcm16: bytes) -> bytes:
        if self._carry_odd_byte:
            pcm16 = self._odd + pcm16
            cut = len(pcm16) - len(pcm16) % SAMPLE_WIDTH
            pcm16, self._odd = pcm16[:cut], pcm16[cut:]
        else:
            _check_pcm16(pcm16)
        if self.from_rate == self.to_rate or not pcm16:
            return pcm16
        self._fed = True
        out = self._soxr().resample_chunk(numpy.frombuffer(pcm16, dtype="<i2"))
        return bytes(out.astype("<i2", copy=False).tobytes())

    def flush(self) -> bytes:
        """End of the stream: the audio still inside the filter; the next piece starts a new stream."""
        self._odd = b""
        if not self._fed:
            return b""
        self._fed = False
        stream = self._soxr()
        out = stream.resample_chunk(numpy.zeros(0, dtype="<i2"), last=True)
        stream.clear()
        return bytes(out.astype("<i2", copy=False).tobytes())

    def reset(self) -> None:
        """Forget the filter state (and any held byte): the next piece starts a new stream."""
        self._odd = b""
        if self._fed:
            self._soxr().clear()
            self._fed = False


def resample(pcm16: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole mono PCM16 buffer."""
    resampler = Resampler(from_rate, to_rate)
    return resampler.process(pcm16) + resampler.flush()


def pcm16_to_ulaw(pcm16: bytes) -> bytes:
    """G.711 mu-law encode (one byte per sample); the rate is unchanged."""
    _check_pcm16(pcm16)
    return bytes(audioop.lin2ulaw(pcm16, SAMPLE_WIDTH))


def pcm16_to_alaw(pcm16: bytes) -> bytes:
    """G.711 A-law encode (one byte per sample); the rate is unchanged."""
    _check_pcm16(pcm16)
    return bytes(audioop.lin2alaw(pcm16, SAMPLE_WIDTH))


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    return bytes(audioop.ulaw2lin(ulaw, SAMPLE_WIDTH))


def alaw_to_pcm16(alaw: bytes) -> bytes:
    """G.711 A-law decode (one byte per sample in, two out); the rate is unchanged."""
    return bytes(audioop.alaw2lin(alaw, SAMPLE_WIDTH))


def swap_bytes16(data: bytes) -> bytes:
    """Swap the two bytes of each 16-bit sample: little-endian PCM16 <-> big-endian (RTP's L16)."""
    _check_pcm16(data)
    return bytes(audioop.byteswap(data, SAMPLE_WIDTH))


def pcm16_to_twilio(pcm16: bytes, sample_rate: int) -> bytes:
    """PCM16 at any rate to the raw mu-law/8000 Twilio Media Streams expects (no header)."""
    return pcm16_to_ulaw(resample(pcm16, sample_rate, TWILIO_SAMPLE_RATE))


def twilio_to_pcm16(ulaw: bytes, sample_rate: int = TWILIO_SAMPLE_RATE) -> bytes:
    """Twilio's mu-law/8000 to PCM16 at ``sample_rate``."""
    return resample(ulaw_to_pcm16(ulaw), TWILIO_SAMPLE_RATE, sample_rate)


def rms(pcm16: bytes) -> int:
    """Root-mean-square level of PCM16 (0..32767)."""
    _check_pcm16(pcm16)
    return int(audioop.rms(pcm16, SAMPLE_WIDTH))


def sine_pcm16(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> bytes:
    """A pure tone as PCM16, for tests and fake servers (stdlib only)."""
    import math

    _check_rate(sample_rate)
    count = int(seconds * sample_rate)
    peak = amplitude * 32767
    step = 2 * math.pi * frequency / sample_rate
    return struct.pack(f"<{count}h", *(round(peak * math.sin(step * i)) for i in range(count)))


# --- WAV ---------------------------------------------------------------------------------------


def wav_bytes(pcm16: bytes, sample_rate: int) -> bytes:
    """A complete mono 16-bit WAV file holding ``pcm16``."""
    _check_pcm16(pcm16)
    _check_rate(sample_rate)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(sample_rate)
        w.writeframes(pcm16)
    return buf.getvalue()


def write_wav(path: str | PathLike[str], pcm16: bytes, sample_rate: int) -> None:
    data = wav_bytes(pcm16, sample_rate)
    with open(path, "wb") as f:
        f.write(data)


def _to_mono_pcm16(data: bytes, channels: int, sample_width: int) -> bytes:
    if sample_width == 1:
        # WAV 8-bit PCM is unsigned; audioop works on signed samples.
        data = audioop.bias(data, 1, -128)
    if sample_width != SAMPLE_WIDTH:
        data = audioop.lin2lin(data, sample_width, SAMPLE_WIDTH)
    if channels == 2:
        data = audioop.tomono(data, SAMPLE_WIDTH, 0.5, 0.5)
    elif channels != 1:
        raise ValueError(f"only mono or stereo WAV is supported, got {channels} channels")
    return bytes(data)


def read_wav(source: str | PathLike[str] | bytes) -> tuple[bytes, int]:
    """Read a PCM WAV (path or bytes) as ``(mono pcm16, sample_rate)``; stereo is mixed down,
    8/24/32-bit samples converted to 16-bit."""
    try:
        if isinstance(source, bytes):
            w = wave.open(io.BytesIO(source), "rb")
        else:
            w = wave.open(str(source), "rb")
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a PCM WAV file: {exc}") from exc
    with w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        data = w.readframes(w.getnframes())
    return _to_mono_pcm16(data, channels, width), rate


@dataclass(frozen=True, slots=True)
class WavHeader:
    sample_rate: int
    channels: int
    sample_width: int
    data_offset: int


def parse_wav_header(data: bytes) -> WavHeader | None:
    """Parse the header of a possibly still-growing WAV stream (``espeak-ng --stdout`` and some HTTP
    servers write placeholder sizes, which the ``wave`` module rejects).

    Returns None while more bytes are needed; raises ValueError when it is not a PCM WAV.
    """
    if len(data) < 12:
        if not b"RIFF".startswith(data[:4]):
            raise ValueError("not a WAV stream (no RIFF header)")
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream (no RIFF/WAVE header)")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while True:
        if len(data) < pos + 8:
            return None
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk_id == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            fmt_tag, channels, rate, bits = fmt
            if fmt_tag not in (1, 0xFFFE):
                raise ValueError(f"unsupported WAV encoding {fmt_tag} (only PCM)")
            return WavHeader(sample_rate=rate, channels=channels, sample_width=bits // 8, data_offset=body)
        if len(data) < body + size:
            return None
        if chunk_id == b"fmt ":
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            fmt = (tag, channels, rate, bits)
        pos = body + size + (size & 1)


class WavStreamDecoder:
    """Turn a WAV byte stream, fed in pieces, into mono PCM16 pieces (header parsed once, odd byte
    splits carried over)."""

    def __init__(self) -> None:
        self._head = b""
        self._carry = b""
        self.header: WavHeader | None = None

    def feed(self, data: bytes) -> bytes:
        if self.header is None:
            self._head += data
            self.header = parse_wav_header(self._head)
            if self.header is None:
                return b""
            data, self._head = self._head[self.header.data_offset :], b""
        frame = self.header.channels * self.header.sample_width
        data = self._carry + data
        usable = len(data) - len(data) % frame
        data, self._carry = data[:usable], data[usable:]
        return _to_mono_pcm16(data, self.header.channels, self.header.sample_width)


def decode_audio(data: bytes, sample_rate: int, audio_format: str | None = None) -> bytes:
    """Decode any format ffmpeg reads (mp3, ogg, flac, wav, ...) to mono PCM16 at ``sample_rate``,
    through pydub. Needs the ``ffmpeg`` binary for anything but WAV."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pydub import AudioSegment

    try:
        segment = AudioSegment.from_file(io.BytesIO(data), format=audio_format)
    except FileNotFoundError as exc:
        raise RuntimeError("decoding compressed audio needs ffmpeg: apt-get install ffmpeg") from exc
    except Exception as exc:  # pydub raises CouldntDecodeError (and others) with ffmpeg's stderr
        raise ValueError(f"cannot decode audio ({audio_format or 'unknown format'}): {exc}") from exc
    segment = segment.set_channels(1).set_sample_width(SAMPLE_WIDTH).set_frame_rate(sample_rate)
    return bytes(segment.raw_data)
