"""Local VAD on real speech: espeak-ng audio with silence around it, at the phone's 8 kHz."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from voiceagent.audio import read_wav, resample
from voiceagent.stt import SpeechEnded, SpeechStarted
from voiceagent.vad import FrameVad, SileroVad, VoiceActivityDetector, WebRtcVad, silero_model_path

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def speech(text: str, rate: int = 8000) -> bytes:
    wav = subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True).stdout
    pcm, source_rate = read_wav(wav)
    return resample(pcm, source_rate, rate)


def run(vad: VoiceActivityDetector, pcm: bytes, rate: int = 8000) -> list[SpeechStarted | SpeechEnded]:
    events = []
    for offset in range(0, len(pcm), 320):  # 20 ms pieces, as a phone sends them
        events += vad.process(pcm[offset : offset + 320], rate)
    return events


def test_frame_vad_needs_min_speech_to_start_and_min_silence_to_end() -> None:
    vad = FrameVad(
        lambda frame: frame[0] != 0, rate=8000, frame_samples=160, min_speech=0.06, min_silence=0.1
    )
    loud, quiet = b"\x01\x00" * 160, b"\x00\x00" * 160
    # A 40 ms blip is no speech; 0.5 s of speech with an 80 ms gap is one utterance.
    audio = quiet * 5 + loud * 2 + quiet * 5 + loud * 10 + quiet * 4 + loud * 15 + quiet * 10
    events = run(vad, audio)
    assert events == [SpeechStarted(at=12 * 0.02), SpeechEnded(at=41 * 0.02)]


def _one_utterance(vad: VoiceActivityDetector, rate: int = 8000) -> None:
    words = speech("I would like to book a table for two at eight tonight", rate)
    silence = b"\x00\x00" * rate
    events = run(vad, silence + words + silence, rate)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    start, end = events[0].at, events[1].at
    spoken = len(words) / 2 / rate
    assert 0.9 <= start <= 1.3  # espeak's clip starts with a little silence
    assert 1.0 + spoken - 0.5 <= end <= 1.0 + spoken + 0.5


@needs_espeak
def test_webrtc_vad_hears_one_utterance_of_espeak_speech() -> None:
    pytest.importorskip("webrtcvad")
    _one_utterance(WebRtcVad())


@needs_espeak
def test_webrtc_vad_resamples_other_input_rates() -> None:
    pytest.importorskip("webrtcvad")
    _one_utterance(WebRtcVad(rate=8000), rate=16000)


@needs_espeak
@pytest.mark.skipif(silero_model_path() is None, reason="no Silero model (pip install --no-deps silero-vad)")
def test_silero_vad_hears_one_utterance_of_espeak_speech() -> None:
    pytest.importorskip("onnxruntime")
    _one_utterance(SileroVad(rate=16000))
    _one_utterance(SileroVad(rate=8000))


def test_bad_rates_are_refused() -> None:
    pytest.importorskip("webrtcvad")
    with pytest.raises(ValueError):
        WebRtcVad(rate=22050)
