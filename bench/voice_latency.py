"""7. Voice latency end to end: the STT's final transcript -> the first media frame on the Twilio socket.

Everything between runs for real, through the full ``Session``: the final enters at the STT seam (a
scripted ``STTSource`` with VAD events, so no Pulse timing rides in the number), ``EndpointingDetector``
waits its ``delay``, the turn streams from the bench server (its own process; the first token
``LLM_TTFT`` after the request, then a word every 20 ms; the first delta completes a speakable chunk),
a ``Speaker`` over a fake ``TTSEngine`` that waits ``TTS_TTFB`` before its first audio, the call's
``TransportOutput`` encodes mu-law frames onto ``TwilioServer``'s WebSocket, and a ``FakeTwilioCall``
stamps the first ``media`` message it receives.

The fakes' delays are configured, so the framework's own share is what is left of the total after
subtracting them. Per stage (all stamps on CLOCK_MONOTONIC, server and client alike):

- endpointing: the final -> the request reaching the server (the configured delay + our turn start and
  request set-up);
- LLM TTFT: the request's arrival -> the first token's send (the server's configured wait);
- token -> TTS: the first token's send -> the engine getting its first text (read, parse, chunker);
- TTS TTFB: the engine's configured wait;
- audio -> phone: the engine's first bytes -> the phone receiving the first media frame (Speaker,
  output, mu-law, WebSocket).

Rows: speculation off (stages in sequence) and at ``speech_ended`` (the default: the reply streams
while the endpointing delay runs, so the LLM's TTFT hides behind it).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bench.contenders import API_KEY
from bench.scenarios import scenario
from bench.server import ServerProcess
from bench.stats import Summary, summarize
from voiceagent.adapters.twilio import TwilioMediaStream, TwilioServer
from voiceagent.adapters.twilio.fake_call import FakeTwilioCall
from voiceagent.agent import Agent
from voiceagent.endpointing import EndpointingDetector, Speculate
from voiceagent.llm import LLMClient
from voiceagent.session import Session
from voiceagent.speaker import Speaker
from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, Transcript
from voiceagent.turn import TurnConfig

ENDPOINTING_DELAY = 0.2
LLM_TTFT = 0.3
TTS_TTFB = 0.1
CHUNK_DELAY = 0.02
SAMPLE_RATE = 8000
AUTH_TOKEN = "bench-auth-token"  # the upgrade is signed and checked as in production
USER_TEXT = "What time do you open tomorrow?"
STAGES = ("endpointing", "LLM TTFT", "token -> TTS", "TTS TTFB", "audio -> phone")


class ScriptedSTT:
    """The STT seam: the bench hands it events; it reports VAD events itself (as Pulse does)."""

    vad_events = True

    def __init__(self) -> None:
        self._send: MemoryObjectSendStream[STTEvent]
        self._receive: MemoryObjectReceiveStream[STTEvent]
        self._send, self._receive = anyio.create_memory_object_stream[STTEvent](16)

    async def push(self, event: STTEvent) -> None:
        await self._send.send(event)

    async def send_audio(self, pcm: bytes) -> None:
        pass  # the caller's audio is not transcribed: the bench scripts the transcripts

    async def events(self) -> AsyncIterator[STTEvent]:
        async for event in self._receive:
            yield event

    async def aclose(self) -> None:
        await self._send.aclose()


@dataclass
class DelayedEngine:
    """A ``TTSEngine`` that answers ``ttfb`` after it gets text: 60 ms of quiet per character."""

    ttfb: float
    sample_rate: int = SAMPLE_RATE
    text_at: list[float] = field(default_factory=list)
    audio_at: list[float] = field(default_factory=list)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.text_at.append(time.perf_counter())
        await anyio.sleep(self.ttfb)
        pcm = b"\x00\x00" * int(0.06 * len(text) * self.sample_rate)
        self.audio_at.append(time.perf_counter())
        for start in range(0, len(pcm), 1600):  # 100 ms pieces, as a streaming vendor sends them
            yield pcm[start : start + 1600]

    async def interrupt(self) -> None:
        pass


@dataclass(frozen=True)
class VoiceRow:
    speculate: str
    reps: int
    total_ms: Summary  # the final -> first media frame at the phone
    stage_ms: dict[str, Summary]
    configured_ms: float  # what the fakes alone account for
    framework_ms: Summary  # total - configured, per repetition (the fakes' own timer lateness included)
    own_ms: (
        Summary  # our stages only: endpointing - its delay (when in sequence), token -> TTS, audio -> phone
    )


@dataclass(frozen=True)
class VoiceLatencyResult:
    endpointing_s: float
    ttft_s: float
    ttfb_s: float
    rows: tuple[VoiceRow, ...]


@dataclass
class _Stamps:
    final_at: float = math.nan
    media_at: float = math.nan
    engine: DelayedEngine | None = None


async def one_call(server: ServerProcess, tag: str, speculate: Speculate) -> _Stamps:
    stamps = _Stamps()
    ready = anyio.Event()
    stts: list[ScriptedSTT] = []
    sessions: list[Session] = []
    model = scenario(tag, "latency-text", delay=CHUNK_DELAY, ttft=LLM_TTFT).model

    async def call(stream: TwilioMediaStream) -> None:
        stt = ScriptedSTT()
        engine = DelayedEngine(TTS_TTFB)
        stamps.engine = engine
        async with LLMClient(base_url=server.base_url, api_key=API_KEY, model=model) as llm:
            agent = Agent(
                llm=llm,
                sink=Speaker(engine, stream.output),
                system_prompt="You answer the phone.",
                config=TurnConfig(filler=None),
            )
            session = Session(
                agent=agent,
                transport=stream,
                stt=stt,
                endpointing=EndpointingDetector(delay=ENDPOINTING_DELAY, speculate=speculate),
                vad=None,
            )
            stts.append(stt)
            sessions.append(session)
            ready.set()
            await session.run()

    async with TwilioServer(call, auth_token=AUTH_TOKEN) as twilio:
        async with FakeTwilioCall(twilio.url, auth_token=AUTH_TOKEN, playback_speed=math.inf) as phone:
            with anyio.fail_after(20):
                await ready.wait()
                stt = stts[0]
                await stt.push(SpeechStarted())
                await stt.push(Transcript(USER_TEXT, is_final=False))
                await stt.push(SpeechEnded())
                await anyio.sleep(0.05)  # the session has taken in the partial and the end of speech
                stamps.final_at = time.perf_counter()
                await stt.push(Transcript(USER_TEXT, is_final=True, end_of_turn=True))
                await phone.wait_until(lambda: any(m.get("event") == "media" for m in phone.received))
                stamps.media_at = time.perf_counter()
                while sessions[0].bot_speaking:  # noqa: ASYNC110 - session state, no event to wait on
                    await anyio.sleep(0.02)
            await phone.stop()
    return stamps


async def _run(server: ServerProcess, reps: int, modes: tuple[Speculate, ...]) -> dict[str, list[_Stamps]]:
    runs: dict[str, list[_Stamps]] = {mode: [] for mode in modes}
    for mode in modes:  # warm-up, dropped
        await one_call(server, f"voice-warm-{mode}", mode)
    for rep in range(reps):
        for mode in modes:
            runs[mode].append(await one_call(server, f"voice-{rep}-{mode}", mode))
    return runs


def measure_voice_latency(
    server: ServerProcess, *, reps: int, modes: tuple[Speculate, ...] = ("off", "speech_ended")
) -> VoiceLatencyResult:
    server.send_log()
    server.request_log()
    runs = anyio.run(_run, server, reps, modes)
    sent = server.send_log()
    arrived = server.request_log()
    rows = []
    for mode in modes:
        stages: dict[str, list[float]] = {name: [] for name in STAGES}
        totals: list[float] = []
        over: list[float] = []
        own: list[float] = []
        overlapped = max(ENDPOINTING_DELAY, LLM_TTFT)  # speculating: the reply streams during the delay
        configured = TTS_TTFB + (ENDPOINTING_DELAY + LLM_TTFT if mode == "off" else overlapped)
        for rep, stamps in enumerate(runs[mode]):
            tag = f"voice-{rep}-{mode}"
            engine = stamps.engine
            assert engine is not None and engine.text_at and engine.audio_at
            request_at = arrived[tag][0]  # speculation off: one request per turn
            first_token = sent[tag][0]
            stages["endpointing"].append(request_at - stamps.final_at)
            stages["LLM TTFT"].append(first_token - request_at)
            stages["token -> TTS"].append(engine.text_at[0] - first_token)
            stages["TTS TTFB"].append(engine.audio_at[0] - engine.text_at[0])
            stages["audio -> phone"].append(stamps.media_at - engine.audio_at[0])
            total = stamps.media_at - stamps.final_at
            totals.append(total * 1000)
            over.append((total - configured) * 1000)
            waited = ENDPOINTING_DELAY if mode == "off" else 0.0  # speculating, the request goes at once
            ours = (
                stages["endpointing"][-1] - waited + stages["token -> TTS"][-1] + stages["audio -> phone"][-1]
            )
            own.append(ours * 1000)
        rows.append(
            VoiceRow(
                speculate=mode,
                reps=reps,
                total_ms=summarize(totals),
                stage_ms={name: summarize([v * 1000 for v in values]) for name, values in stages.items()},
                configured_ms=configured * 1000,
                framework_ms=summarize(over),
                own_ms=summarize(own),
            )
        )
    return VoiceLatencyResult(ENDPOINTING_DELAY, LLM_TTFT, TTS_TTFB, tuple(rows))


def render_rows(result: VoiceLatencyResult) -> list[str]:
    """The detail table: one row per speculation mode, a column per stage."""
    header = [
        "speculation",
        "final → first media frame",
        *STAGES,
        "fakes' configured delays",
        "total − configured",
        "framework stages alone",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result.rows:
        cells = [
            row.speculate,
            row.total_ms.fmt(" ms", 1),
            *(row.stage_ms[name].fmt(" ms", 1) for name in STAGES),
            f"{row.configured_ms:.0f} ms",
            f"**{row.framework_ms.fmt(' ms', 1)}**",
            row.own_ms.fmt(" ms", 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


__all__ = ["VoiceLatencyResult", "measure_voice_latency", "render_rows"]
