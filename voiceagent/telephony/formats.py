"""Telephony audio encodings: PCM16 to and from what a provider's stream carries (pcmu, pcma, l16, l16be)."""

from __future__ import annotations

from voiceagent.audio import (
    SAMPLE_WIDTH,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    swap_bytes16,
    ulaw_to_pcm16,
)

from .events import AudioFormat, Encoding

FRAME_MS = 20  # the frame every provider uses for telephony audio

# The encoded value of a zero sample: mu-law's and A-law's silence are not zero bytes.
SILENCE: dict[Encoding, bytes] = {"pcmu": b"\xff", "pcma": b"\xd5", "l16": b"\x00", "l16be": b"\x00"}
_BYTES_PER_SAMPLE: dict[Encoding, int] = {"pcmu": 1, "pcma": 1, "l16": SAMPLE_WIDTH, "l16be": SAMPLE_WIDTH}


def bytes_per_sample(fmt: AudioFormat) -> int:
    return _BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels


def frame_bytes(fmt: AudioFormat, frame_ms: int = FRAME_MS) -> int:
    """Bytes of one ``frame_ms`` frame in ``fmt`` (160 for pcmu at 8 kHz, 640 for l16 at 16 kHz)."""
    return fmt.sample_rate * frame_ms // 1000 * bytes_per_sample(fmt)


def silence(fmt: AudioFormat, size: int) -> bytes:
    """``size`` bytes of encoded silence (``size`` is a whole number of samples)."""
    return SILENCE[fmt.encoding] * size


def encode(fmt: AudioFormat, pcm16: bytes) -> bytes:
    """Mono PCM16 (already at ``fmt.sample_rate``) to ``fmt``'s encoding."""
    if fmt.encoding == "pcmu":
        return pcm16_to_ulaw(pcm16)
    if fmt.encoding == "pcma":
        return pcm16_to_alaw(pcm16)
    if fmt.encoding == "l16be":
        return swap_bytes16(pcm16)
    return pcm16  # l16 is little-endian, as PCM16 is here


def decode(fmt: AudioFormat, payload: bytes) -> bytes:
    """``fmt``-encoded audio (whole samples) to mono PCM16 at ``fmt.sample_rate``."""
    if fmt.encoding == "pcmu":
        return ulaw_to_pcm16(payload)
    if fmt.encoding == "pcma":
        return alaw_to_pcm16(payload)
    if fmt.encoding == "l16be":
        return swap_bytes16(payload)
    return payload
