"""Cut caller audio into utterances with a local VAD, for an STT that transcribes whole files.

Pure (no I/O): ``process`` takes PCM16 and returns the VAD's speech events and the ``Segment``s they
close. A segment starts ``pre_roll`` seconds before the VAD's speech start (the VAD needs
``min_speech`` of speech to decide, and the first consonant is quiet) and ends where the end of speech
is heard (its trailing silence included); one longer than ``max_segment`` is cut there, marked as not
the end of speech (Whisper servers take about 30 s per request).
"""

from __future__ import annotations

from dataclasses import dataclass

from voiceagent.stt import SpeechEnded, SpeechStarted
from voiceagent.vad import VADEvent, VoiceActivityDetector


@dataclass(frozen=True, slots=True)
class Segment:
    pcm: bytes
    start: float  # seconds into the stream
    end: float
    end_of_speech: bool  # False when cut at max_segment while the caller still speaks


class VadSegmenter:
    def __init__(
        self,
        vad: VoiceActivityDetector,
        sample_rate: int,
        *,
        pre_roll: float = 0.3,
        max_segment: float = 30.0,
        vad_delay: float = 1.0,
    ) -> None:
        """``vad_delay``: how long after a speech start the VAD may report it (its ``min_speech`` and
        frame buffering); that much more audio is kept while silent, so the pre-roll is always there."""
        if sample_rate <= 0 or max_segment <= 0 or pre_roll < 0 or vad_delay < 0:
            raise ValueError("sample_rate, max_segment must be positive; pre_roll, vad_delay not negative")
        self.vad = vad
        self.sample_rate = sample_rate
        self._pre_roll = int(pre_roll * sample_rate)
        self._max = max(1, int(max_segment * sample_rate))
        self._keep = self._pre_roll + int(vad_delay * sample_rate)
        self._buffer = bytearray()  # audio from sample ``_base`` to now
        self._base = 0
        self._start: int | None = None  # first sample of the open segment, None while silent

    @property
    def speaking(self) -> bool:
        return self._start is not None

    def process(self, pcm: bytes) -> list[VADEvent | Segment]:
        self._buffer += pcm
        out: list[VADEvent | Segment] = []
        for event in self.vad.process(pcm, self.sample_rate):
            if isinstance(event, SpeechStarted) and self._start is None:
                self._start = max(self._base, int(event.at * self.sample_rate) - self._pre_roll)
                out.append(event)
            elif isinstance(event, SpeechEnded) and self._start is not None:
                out.append(event)
                out.append(self._cut(end_of_speech=True))
        if self._start is not None and self._now() - self._start >= self._max:
            out.append(self._cut(end_of_speech=False))
            self._start = self._now()
        if self._start is None:  # keep only what a late speech start may still need
            self._trim(self._now() - self._keep)
        return out

    def flush(self) -> Segment | None:
        """The open segment (the stream is ending mid-speech), or None."""
        return self._cut(end_of_speech=True) if self._start is not None else None

    def _now(self) -> int:
        return self._base + len(self._buffer) // 2

    def _cut(self, *, end_of_speech: bool) -> Segment:
        assert self._start is not None
        start, end = self._start, self._now()
        pcm = bytes(self._buffer[2 * (start - self._base) : 2 * (end - self._base)])
        self._start = None
        self._trim(end - self._keep)
        return Segment(pcm, start / self.sample_rate, end / self.sample_rate, end_of_speech)

    def _trim(self, keep_from: int) -> None:
        drop = keep_from - self._base
        if drop > 0:
            del self._buffer[: 2 * drop]
            self._base = keep_from
