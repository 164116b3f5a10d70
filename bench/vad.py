"""Local VAD: accuracy on espeak-ng speech with pauses and noise, and CPU per call.

    .venv/bin/python -m bench.vad            # ~1 minute
    .venv/bin/python -m bench.vad --quick

The caller's audio is built from espeak-ng sentences (two voices, 8 kHz as a phone delivers it) with
pauses of 0.25-1.2 s between them; the truth is where each sentence's audio begins and ends (a pause
inside a sentence is speech). Noise is added at a signal-to-noise ratio: white noise, "brown" (a low
rumble, as in a car) and "babble" (another espeak-ng talker, 20 dB down). Each VAD runs with the same
hysteresis (onset after 0.1 s of speech frames, end after 0.3 s without), as ``Session`` uses it.
Reported per VAD and condition:
- frame accuracy: 10 ms frames where the VAD's speaking state equals the truth;
- utterances found / missed, and false starts (an onset outside every sentence);
- end delay: from a sentence's true end to the VAD's SpeechEnded (median);
- CPU: process time per second of audio (x100 = % of one core for one call).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from voiceagent.audio import read_wav, resample
from voiceagent.stt import SpeechEnded, SpeechStarted
from voiceagent.vad import SileroVad, VoiceActivityDetector, WebRtcVad, silero_model_path

RATE = 8000
SENTENCES = [
    "I would like to book a table for two.",
    "Tomorrow at eight, if you have one.",
    "No, wait, make that nine o'clock.",
    "Can you tell me the weather in Paris?",
    "Yes please.",
    "My card number starts with four five.",
    "Could you repeat that more slowly?",
    "Thanks, that is all for today.",
]
BABBLE = "the quarterly figures look fine and the meeting moved to the other room after lunch " * 3


def espeak(text: str, voice: str, wpm: int = 170) -> bytes:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text], check=True, capture_output=True
    ).stdout
    pcm, rate = read_wav(wav)
    return resample(pcm, rate, RATE)


def trim(pcm: bytes, threshold: int = 300) -> bytes:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    loud = [i for i, s in enumerate(samples) if abs(s) > threshold]
    return pcm[2 * loud[0] : 2 * (loud[-1] + 1)] if loud else b""


@dataclass(frozen=True)
class Call:
    pcm: bytes
    truth: list[tuple[float, float]]  # sentence spans, seconds


def build_call(seed: int, sentences: list[str]) -> Call:
    rng = random.Random(seed)
    voice = rng.choice(["en-us", "en-gb+f3"])
    out = bytearray(b"\x00\x00" * int(0.5 * RATE))
    truth = []
    for text in sentences:
        clip = trim(espeak(text, voice, rng.choice([150, 170, 190])))
        start = len(out) / 2 / RATE
        out += clip
        truth.append((start, len(out) / 2 / RATE))
        out += b"\x00\x00" * int(rng.uniform(0.25, 1.2) * RATE)
    return Call(bytes(out), truth)


def add_noise(pcm: bytes, snr_db: float | None, kind: str, seed: int, babble: bytes) -> bytes:
    if snr_db is None:
        return pcm
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    speech = [s for s in samples if abs(s) > 300]
    power = statistics.fmean(s * s for s in speech) if speech else 1.0
    noise_rms = math.sqrt(power / 10 ** (snr_db / 10))
    rng = random.Random(seed)
    if kind == "white":
        noise = [rng.gauss(0, noise_rms) for _ in samples]
    elif kind == "brown":  # a rumble (road, car): integrated white noise, scaled to the SNR
        walk, level = [], 0.0
        for _ in samples:
            level = 0.98 * level + rng.gauss(0, 1)
            walk.append(level)
        w_rms = math.sqrt(statistics.fmean(x * x for x in walk)) or 1.0
        noise = [x * noise_rms / w_rms for x in walk]
    else:  # babble: other speech, looped, scaled to the SNR
        b = struct.unpack(f"<{len(babble) // 2}h", babble)
        b_rms = math.sqrt(statistics.fmean(x * x for x in b)) or 1.0
        offset = rng.randrange(len(b))
        noise = [b[(offset + i) % len(b)] * noise_rms / b_rms for i in range(len(samples))]
    mixed = (max(-32768, min(32767, int(s + n))) for s, n in zip(samples, noise, strict=True))
    return struct.pack(f"<{len(samples)}h", *mixed)


@dataclass
class Score:
    frames: int = 0
    correct: int = 0
    found: int = 0
    missed: int = 0
    false_starts: int = 0
    end_delays: list[float] | None = None
    cpu: float = 0.0
    audio: float = 0.0


def run_vad(make: Callable[[], VoiceActivityDetector], call: Call, pcm: bytes, score: Score) -> None:
    vad = make()
    events: list[SpeechStarted | SpeechEnded] = []
    t0 = time.process_time()
    for offset in range(0, len(pcm), 320):  # 20 ms frames, as Twilio sends them
        events += vad.process(pcm[offset : offset + 320], RATE)
    score.cpu += time.process_time() - t0
    duration = len(pcm) / 2 / RATE
    score.audio += duration
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for e in events:
        if isinstance(e, SpeechStarted):
            start = e.at
        elif start is not None:
            spans.append((start, e.at))
            start = None
    if start is not None:
        spans.append((start, duration))
    for i in range(int(duration * 100)):
        t = i / 100
        truth = any(a <= t < b for a, b in call.truth)
        said = any(a <= t < b for a, b in spans)
        score.frames += 1
        score.correct += truth == said
    delays = score.end_delays if score.end_delays is not None else []
    for a, b in call.truth:
        hits = [s for s in spans if s[0] < b and s[1] > a]
        if hits:
            score.found += 1
            delays.append(max(h[1] for h in hits) - b)
        else:
            score.missed += 1
    score.end_delays = delays
    score.false_starts += sum(1 for s in spans if not any(s[0] < b + 0.3 and s[1] > a for a, b in call.truth))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    calls = [
        build_call(seed, SENTENCES if not args.quick else SENTENCES[:4])
        for seed in range(2 if args.quick else 4)
    ]
    babble = espeak(BABBLE, "en-us+m3", 200)
    vads: dict[str, Callable[[], VoiceActivityDetector]] = {
        "webrtcvad mode 1": lambda: WebRtcVad(aggressiveness=1),
        "webrtcvad mode 3": lambda: WebRtcVad(aggressiveness=3),
    }
    if silero_model_path() is not None:
        vads["silero 8 kHz"] = lambda: SileroVad(rate=8000)
        vads["silero 16 kHz"] = lambda: SileroVad(rate=16000)
    else:
        print("silero: no model file (pip install --no-deps silero-vad); its rows are skipped")
    conditions: list[tuple[str, float | None, str]] = [
        ("clean", None, "white"),
        ("white 20 dB", 20, "white"),
        ("white 10 dB", 10, "white"),
        ("white 5 dB", 5, "white"),
        ("brown 10 dB", 10, "brown"),
        ("babble 20 dB", 20, "babble"),
    ]
    total = sum(len(c.truth) for c in calls)
    seconds = sum(len(c.pcm) for c in calls) / 2 / RATE
    print(f"{len(calls)} calls, {total} sentences, {seconds:.0f} s of audio at 8 kHz\n")
    print("| VAD | condition | frame accuracy | sentences found | false starts | end delay (median) | CPU |")
    print("|---|---|---|---|---|---|---|")
    for name, make in vads.items():
        for label, snr, kind in conditions:
            score = Score()
            for seed, call in enumerate(calls):
                run_vad(make, call, add_noise(call.pcm, snr, kind, seed, babble), score)
            delay = statistics.median(score.end_delays) if score.end_delays else math.nan
            print(
                f"| {name} | {label} | {score.correct / score.frames:.1%} | {score.found}/{total} | "
                f"{score.false_starts} | {delay * 1000:.0f} ms | {score.cpu / score.audio:.2%} of a core |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
