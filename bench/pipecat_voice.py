"""7, Pipecat's row: the same call shape through Pipecat 1.14, to the first media frame on a Twilio socket.

Pipecat's pipeline: its ``SingleClientWebsocketServerTransport`` with its own ``TwilioFrameSerializer``
(auto hang-up off) -> user aggregator -> ``OpenAILLMService`` on the bench server (the same scenario:
first token ``LLM_TTFT`` after the request) -> a ``TTSService`` that waits ``TTS_TTFB`` and yields quiet
audio (``TOKEN`` text aggregation, Pipecat's low-latency mode) -> the transport's output -> assistant
aggregator. The same ``FakeTwilioCall`` connects to it and stamps the first ``media`` message.

What is not the same: Pipecat's own end-of-turn detection is a different mechanism (VAD + turn
analyzers on audio), so the bench does Pipecat's endpointing for it: at the final it waits
``ENDPOINTING_DELAY`` and then hands the pipeline the user's text (``LLMMessagesAppendFrame``). That
is the "speculation off" row; Pipecat has no speculative turn to compare with ours.
"""

from __future__ import annotations

import math
import socket
import time
from typing import Any

import anyio

from bench.contenders import API_KEY
from bench.scenarios import scenario
from bench.server import ServerProcess
from bench.stats import summarize
from bench.voice_latency import (
    CHUNK_DELAY,
    ENDPOINTING_DELAY,
    LLM_TTFT,
    SAMPLE_RATE,
    STAGES,
    TTS_TTFB,
    USER_TEXT,
    VoiceRow,
)
from voiceagent.adapters.twilio.fake_call import FakeTwilioCall

PIPECAT_ROW = "Pipecat 1.14, TOKEN mode (the bench waits its endpointing delay)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Stamps:
    def __init__(self) -> None:
        self.final_at = math.nan
        self.media_at = math.nan
        self.text_at: list[float] = []
        self.audio_at: list[float] = []


async def one_call(server: ServerProcess, tag: str) -> _Stamps:
    from pipecat.frames.frames import Frame, LLMMessagesAppendFrame, TTSAudioRawFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.settings import TTSSettings
    from pipecat.services.tts_service import TextAggregationMode, TTSService
    from pipecat.transports.websocket.server import (
        SingleClientWebsocketServerParams,
        SingleClientWebsocketServerTransport,
    )
    from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies
    from pipecat.workers.runner import WorkerRunner

    stamps = _Stamps()

    class DelayedTTS(TTSService):
        def __init__(self) -> None:
            super().__init__(
                sample_rate=SAMPLE_RATE,
                push_start_frame=True,
                push_stop_frames=True,
                text_aggregation_mode=TextAggregationMode.TOKEN,
                settings=TTSSettings(model=None, voice=None, language=None),
            )

        def can_generate_metrics(self) -> bool:
            return False

        async def run_tts(self, text: str, context_id: str) -> Any:
            stamps.text_at.append(time.perf_counter())
            await anyio.sleep(TTS_TTFB)
            stamps.audio_at.append(time.perf_counter())
            frame: Frame = TTSAudioRawFrame(
                b"\x00\x00" * int(0.06 * len(text) * SAMPLE_RATE), SAMPLE_RATE, 1, context_id=context_id
            )
            yield frame

    phone_stream_sid = "MZ00000000000000000000000000000001"  # FakeTwilioCall's default
    serializer = TwilioFrameSerializer(
        stream_sid=phone_stream_sid, params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
    )
    port = _free_port()
    transport = SingleClientWebsocketServerTransport(
        SingleClientWebsocketServerParams(
            serializer=serializer,
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_sample_rate=SAMPLE_RATE,
            add_wav_header=False,
        ),
        host="127.0.0.1",
        port=port,
    )
    listening, connected = anyio.Event(), anyio.Event()

    async def on_listening(_transport: Any) -> None:
        listening.set()

    async def on_connected(_transport: Any, _ws: Any) -> None:
        connected.set()

    transport.add_event_handler("on_websocket_ready", on_listening)
    transport.add_event_handler("on_client_connected", on_connected)

    model = scenario(tag, "latency-text", delay=CHUNK_DELAY, ttft=LLM_TTFT).model
    llm = OpenAILLMService(
        api_key=API_KEY,
        base_url=server.base_url,
        settings=OpenAILLMService.Settings(model=model, system_instruction="You answer the phone."),
    )
    context = LLMContext(messages=[])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(user_turn_strategies=ExternalUserTurnStrategies())
    )
    pipeline = Pipeline(
        [
            transport.input(),
            aggregators.user(),
            llm,
            DelayedTTS(),
            transport.output(),
            aggregators.assistant(),
        ]
    )
    task = PipelineWorker(
        pipeline, params=PipelineParams(enable_metrics=False), cancel_on_idle_timeout=False, enable_rtvi=False
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        try:
            with anyio.fail_after(20):
                await listening.wait()
                async with FakeTwilioCall(f"ws://127.0.0.1:{port}", playback_speed=math.inf) as phone:
                    await connected.wait()
                    await anyio.sleep(0.05)
                    stamps.final_at = time.perf_counter()
                    await anyio.sleep(ENDPOINTING_DELAY)  # the endpointing wait, done for Pipecat
                    await task.queue_frames(
                        [LLMMessagesAppendFrame([{"role": "user", "content": USER_TEXT}], run_llm=True)]
                    )
                    await phone.wait_until(lambda: any(m.get("event") == "media" for m in phone.received))
                    stamps.media_at = time.perf_counter()
        finally:
            with anyio.CancelScope(shield=True):
                await task.cancel()
                await runner.cancel()
    return stamps


async def _run(server: ServerProcess, reps: int) -> list[_Stamps]:
    await one_call(server, "pcvoice-warm")
    return [await one_call(server, f"pcvoice-{rep}") for rep in range(reps)]


def measure_pipecat_voice(server: ServerProcess, *, reps: int) -> VoiceRow:
    server.send_log()
    server.request_log()
    runs = anyio.run(_run, server, reps)
    sent, arrived = server.send_log(), server.request_log()
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    totals, over, own = [], [], []
    configured = ENDPOINTING_DELAY + LLM_TTFT + TTS_TTFB
    for rep, stamps in enumerate(runs):
        tag = f"pcvoice-{rep}"
        request_at, first_token = arrived[tag][0], sent[tag][0]
        values = {
            "endpointing": request_at - stamps.final_at,
            "LLM TTFT": first_token - request_at,
            "token -> TTS": stamps.text_at[0] - first_token,
            "TTS TTFB": stamps.audio_at[0] - stamps.text_at[0],
            "audio -> phone": stamps.media_at - stamps.audio_at[0],
        }
        for name, value in values.items():
            stages[name].append(value * 1000)
        total = stamps.media_at - stamps.final_at
        totals.append(total * 1000)
        over.append((total - configured) * 1000)
        theirs = values["endpointing"] - ENDPOINTING_DELAY + values["token -> TTS"] + values["audio -> phone"]
        own.append(theirs * 1000)
    return VoiceRow(
        speculate=PIPECAT_ROW,
        reps=reps,
        total_ms=summarize(totals),
        stage_ms={name: summarize(v) for name, v in stages.items()},
        configured_ms=configured * 1000,
        framework_ms=summarize(over),
        own_ms=summarize(own),
    )


__all__ = ["PIPECAT_ROW", "measure_pipecat_voice"]
