"""Local voice-activity detection on the caller's audio, for STTs that send no speech events.

A ``VoiceActivityDetector`` turns PCM16 into ``SpeechStarted``/``SpeechEnded``. ``FrameVad`` does the
streaming part once (fixed frames, a speech onset after ``min_speech`` seconds of speech frames, an
end after ``min_silence`` seconds without); a classifier says whether one frame is speech:
- ``WebRtcVad`` (``webrtcvad-wheels``, tiny, the default): Google's GMM VAD, 20 ms frames;
- ``SileroVad`` (``onnxruntime`` + a Silero ONNX model file; the ``[silero]`` extra): a small neural
  net, better in noise, about 10x the CPU (bench/vad.py measures both).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from voiceagent.audio import Resampler
from voiceagent.stt import SpeechEnded, SpeechStarted

VADEvent = SpeechStarted | SpeechEnded


@runtime_checkable
class VoiceActivityDetector(Protocol):
    def process(self, pcm: bytes, sample_rate: int) -> list[VADEvent]:
        """Feed the next PCM16 mono audio; the speech events it completes (``at``: seconds of audio)."""
        ...


class FrameVad:
    """Frames, hysteresis and timestamps around a per-frame speech classifier."""

    def __init__(
        self,
        classify: Callable[[bytes], bool],
        *,
        rate: int,
        frame_samples: int,
        min_speech: float = 0.1,
        min_silence: float = 0.3,
    ) -> None:
        self._classify = classify
        self.rate = rate
        self._frame_bytes = 2 * frame_samples
        self._frame_seconds = frame_samples / rate
        self._start_frames = max(1, round(min_speech / self._frame_seconds))
        self._end_frames = max(1, round(min_silence / self._frame_seconds))
        self._resampler: Resampler | None = None
        self._input_rate: int | None = None
        self._buffer = bytearray()
        self._frames = 0  # frames classified so far: the clock
        self._run = 0  # consecutive frames disagreeing with the current state
        self.speaking = False

    def process(self, pcm: bytes, sample_rate: int) -> list[VADEvent]:
        if sample_rate != self._input_rate:
            self._input_rate = sample_rate
            self._resampler = None if sample_rate == self.rate else Resampler(sample_rate, self.rate)
        self._buffer += self._resampler.process(pcm) if self._resampler is not None else pcm
        events: list[VADEvent] = []
        size = self._frame_bytes
        while len(self._buffer) >= size:
            frame = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._frames += 1
            if self._classify(frame) != self.speaking:
                self._run += 1
            else:
                self._run = 0
            if not self.speaking and self._run >= self._start_frames:
                self.speaking, self._run = True, 0
                events.append(SpeechStarted(at=(self._frames - self._start_frames) * self._frame_seconds))
            elif self.speaking and self._run >= self._end_frames:
                self.speaking, self._run = False, 0
                events.append(SpeechEnded(at=(self._frames - self._end_frames) * self._frame_seconds))
        return events


class WebRtcVad(FrameVad):
    """``aggressiveness`` 0 (lets most audio count as speech) .. 3 (strictest, best in noise)."""

    def __init__(
        self, *, aggressiveness: int = 3, rate: int = 8000, min_speech: float = 0.1, min_silence: float = 0.3
    ) -> None:
        if rate not in (8000, 16000, 32000, 48000):
            raise ValueError("webrtcvad runs at 8, 16, 32 or 48 kHz")
        try:
            import webrtcvad
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("WebRtcVad needs the webrtcvad-wheels package") from exc
        vad = webrtcvad.Vad(aggressiveness)
        frame_samples = rate // 50  # 20 ms
        super().__init__(
            lambda frame: bool(vad.is_speech(frame, rate)),
            rate=rate,
            frame_samples=frame_samples,
            min_speech=min_speech,
            min_silence=min_silence,
        )


def silero_model_path() -> str | None:
    """The Silero ONNX file: ``$VOICEAGENT_SILERO_MODEL``, or the one shipped by an installed
    ``silero-vad`` package (``pip install --no-deps silero-vad``), found without importing it (its
    ``__init__`` imports torch); None when there is neither."""
    configured = os.environ.get("VOICEAGENT_SILERO_MODEL")
    if configured:
        return configured
    spec = importlib.util.find_spec("silero_vad")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "data", "silero_vad.onnx")
        if os.path.exists(path):
            return path
    return None


def default_vad() -> VoiceActivityDetector | None:
    """The local VAD a session uses when its STT sends no speech events: Silero when onnxruntime and a
    model are installed (it still hears the end of speech in 5-10 dB of noise, where webrtcvad hears
    speech forever; bench/vad.py), else webrtcvad, else None (then every final ends an utterance)."""
    if silero_model_path() is not None and importlib.util.find_spec("onnxruntime") is not None:
        return SileroVad()
    if importlib.util.find_spec("webrtcvad") is not None:
        return WebRtcVad()
    return None


class SileroVad(FrameVad):
    """Silero VAD (v5 ONNX) over onnxruntime: 32 ms windows at 16 kHz (256 samples at 8 kHz)."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        rate: int = 16000,
        threshold: float = 0.5,
        min_speech: float = 0.1,
        min_silence: float = 0.3,
    ) -> None:
        if rate not in (8000, 16000):
            raise ValueError("Silero runs at 8 or 16 kHz")
        try:
            import numpy as np
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("SileroVad needs onnxruntime and numpy (the [silero] extra)") from exc
        path = model_path or silero_model_path()
        if path is None:
            raise FileNotFoundError("no Silero ONNX model: pass model_path, or install silero-vad --no-deps")
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1  # one call must not take every core
        self._session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._np = np
        self._state: Any = np.zeros((2, 1, 128), dtype=np.float32)
        self._context: Any = np.zeros((1, 64 if rate == 16000 else 32), dtype=np.float32)
        self._sr = np.array(rate, dtype=np.int64)
        self._threshold = threshold
        super().__init__(
            self._is_speech,
            rate=rate,
            frame_samples=512 if rate == 16000 else 256,
            min_speech=min_speech,
            min_silence=min_silence,
        )

    def _is_speech(self, frame: bytes) -> bool:
        np = self._np
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)[None, :] / 32768.0
        window = np.concatenate([self._context, samples], axis=1)  # v5 wants the last samples before it
        self._context = window[:, -self._context.shape[1] :]
        out, self._state = self._session.run(None, {"input": window, "state": self._state, "sr": self._sr})
        return float(out[0][0]) >= self._threshold
