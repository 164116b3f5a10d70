from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pytest

from tests.audio_helpers import samples, tone_power
from voiceagent import audio


def test_sine_has_the_requested_length_and_frequency() -> None:
    pcm = audio.sine_pcm16(440, 0.5, 16000)
    assert len(pcm) == 16000  # 8000 samples * 2 bytes
    assert audio.duration_seconds(pcm, 16000) == 0.5
    assert tone_power(pcm, 16000, 440) > 100 * tone_power(pcm, 16000, 1000)


@pytest.mark.parametrize(("src", "dst"), [(16000, 8000), (22050, 24000), (24000, 16000), (8000, 44100)])
def test_resample_keeps_duration_and_tone(src: int, dst: int) -> None:
    pcm = audio.sine_pcm16(440, 1.0, src)
    out = audio.resample(pcm, src, dst)
    assert abs(len(out) // 2 - dst) <= dst // src + 2
    assert tone_power(out, dst, 440) > 100 * tone_power(out, dst, 1500)
    assert abs(audio.rms(out) - audio.rms(pcm)) < 0.05 * audio.rms(pcm)


def test_streaming_resampler_matches_whole_buffer() -> None:
    pcm = audio.sine_pcm16(300, 0.3, 22050)
    resampler = audio.Resampler(22050, 16000)
    pieces = [resampler.process(pcm[i : i + 1000]) for i in range(0, len(pcm), 1000)]
    streamed = samples(b"".join(pieces) + resampler.flush())
    whole = samples(audio.resample(pcm, 22050, 16000))
    # The same signal; soxr's block boundaries only move the float rounding (a few LSB, under -78 dBFS).
    assert len(streamed) == len(whole)
    assert max(abs(a - b) for a, b in zip(streamed, whole, strict=True)) <= 4


def test_ulaw_round_trip_error_is_bounded() -> None:
    pcm = audio.sine_pcm16(440, 0.2, 8000, amplitude=0.8)
    ulaw = audio.pcm16_to_ulaw(pcm)
    assert len(ulaw) == len(pcm) // 2
    back = audio.ulaw_to_pcm16(ulaw)
    errors = [abs(a - b) for a, b in zip(samples(pcm), samples(back), strict=True)]
    # mu-law keeps ~13 bits near zero and ~3% relative precision at full scale
    assert max(errors) <= 0.04 * 32767
    assert sum(errors) / len(errors) < 0.01 * 32767


def test_twilio_conversion_is_8khz_mulaw_both_ways() -> None:
    pcm = audio.sine_pcm16(440, 1.0, 24000)
    payload = audio.pcm16_to_twilio(pcm, 24000)
    assert abs(len(payload) - 8000) <= 2  # one byte per 8 kHz sample
    back = audio.twilio_to_pcm16(payload, 16000)
    assert abs(len(back) // 2 - 16000) <= 4
    assert tone_power(back, 16000, 440) > 100 * tone_power(back, 16000, 1500)


def test_wav_round_trip_is_exact(tmp_path: Path) -> None:
    pcm = audio.sine_pcm16(440, 0.25, 16000)
    path = tmp_path / "tone.wav"
    audio.write_wav(path, pcm, 16000)
    assert audio.read_wav(path) == (pcm, 16000)
    assert audio.read_wav(path.read_bytes()) == (pcm, 16000)


def test_read_wav_mixes_stereo_8bit_down_to_mono_pcm16() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128 + 64, 128 + 64, 128 - 64, 128 - 64]))
    pcm, rate = audio.read_wav(buf.getvalue())
    assert rate == 8000
    assert samples(pcm) == (64 * 256, -64 * 256)


def test_read_wav_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a PCM WAV"):
        audio.read_wav(b"this is not audio at all")


def test_wav_stream_decoder_handles_placeholder_sizes_and_odd_splits() -> None:
    pcm = audio.sine_pcm16(440, 0.1, 22050)
    wav = bytearray(audio.wav_bytes(pcm, 22050))
    # what espeak-ng --stdout writes: sizes it cannot know yet
    wav[4:8] = struct.pack("<I", 0x7FFFF024)
    wav[40:44] = struct.pack("<I", 0x7FFFF000)
    decoder = audio.WavStreamDecoder()
    out = b"".join(decoder.feed(bytes(wav[i : i + 7])) for i in range(0, len(wav), 7))
    assert decoder.header == audio.WavHeader(22050, 1, 2, 44)
    assert out == pcm


def test_wav_stream_decoder_rejects_non_wav() -> None:
    with pytest.raises(ValueError, match="not a WAV"):
        audio.WavStreamDecoder().feed(b"ID3\x04 mp3 data here")


def test_frames_split_and_pad() -> None:
    pcm = audio.sine_pcm16(440, 0.05, 8000)  # 400 samples
    chunks = list(audio.frames(pcm, 8000, 20))
    assert [len(c) for c in chunks] == [320, 320, 160]
    assert b"".join(chunks) == pcm
    padded = list(audio.frames(pcm, 8000, 20, pad=True))
    assert [len(c) for c in padded] == [320, 320, 320]
    assert padded[-1].endswith(b"\x00" * 160)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="even number"):
        audio.resample(b"\x00\x01\x02", 8000, 16000)
    with pytest.raises(ValueError, match="positive"):
        audio.duration_seconds(b"", 0)
    with pytest.raises(ValueError, match="less than one sample"):
        list(audio.frames(b"", 100, 1))
    assert audio.bytes_for_duration(0.5, 16000) == 16000


def test_decode_audio_through_pydub_and_ffmpeg() -> None:
    from pydub import AudioSegment

    pcm = audio.sine_pcm16(440, 1.0, 44100)
    mp3 = io.BytesIO()
    AudioSegment(pcm, frame_rate=44100, sample_width=2, channels=1).export(mp3, format="mp3")
    assert mp3.getvalue()[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
    decoded = audio.decode_audio(mp3.getvalue(), 16000, "mp3")
    # mp3 pads with encoder delay; the tone must survive and the length stay within 0.1 s
    assert abs(audio.duration_seconds(decoded, 16000) - 1.0) < 0.1
    assert tone_power(decoded, 16000, 440) > 100 * tone_power(decoded, 16000, 1500)


def test_decode_audio_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        audio.decode_audio(b"definitely not audio" * 10, 16000, "mp3")


def test_downsampling_filters_out_what_the_new_rate_cannot_carry() -> None:
    # 6 kHz is above 8 kHz's Nyquist (4 kHz): audioop.ratecv folded it back as a full-scale 2 kHz alias.
    pcm = audio.sine_pcm16(6000, 0.5, 24000, amplitude=0.9)
    out = audio.resample(pcm, 24000, 8000)
    reference = tone_power(audio.sine_pcm16(2000, 0.5, 8000, amplitude=0.9), 8000, 2000)
    middle = out[800:-800]  # 50 ms in from each end: the tone's abrupt start and stop are broadband
    assert tone_power(middle, 8000, 2000) < reference * 1e-6  # the alias is at least 60 dB down
    assert audio.rms(middle) < 0.001 * audio.rms(pcm)


def test_streaming_resampler_flush_returns_the_tail_and_starts_over() -> None:
    pcm = audio.sine_pcm16(440, 0.2, 24000)
    resampler = audio.Resampler(24000, 16000)
    first = b"".join(resampler.process(pcm[i : i + 960]) for i in range(0, len(pcm), 960)) + resampler.flush()
    assert abs(len(first) // 2 - 3200) <= 2
    second = samples(resampler.process(pcm) + resampler.flush())  # flush() started a fresh stream
    whole = samples(audio.resample(pcm, 24000, 16000))
    assert len(second) == len(whole) == len(first) // 2
    assert max(abs(a - b) for a, b in zip(second, whole, strict=True)) <= 4
    assert resampler.flush() == b""
