"""Pipecat 1.14 on the same server, the same simulated speech and the same tool, in a real pipeline.

Pipeline: user context aggregator -> OpenAILLMService (base_url = the bench server, our function
registered with ``register_function``) -> a TTSService that synthesizes silence of the simulated
duration -> a real ``BaseOutputTransport`` whose ``write_audio_frame`` plays audio in real time (paced
on a clock, as network transports pace it) -> assistant context aggregator; run by a PipelineTask on a
PipelineRunner. Pipecat is an optional bench dependency (``bench/requirements.txt``); without it the
bench reports why and skips these rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from bench.contenders import API_KEY
from bench.scenarios import TOOL_NAME, TOOL_SCHEMA

SYSTEM_PROMPT = "You are a concise phone assistant."

PIPECAT_VERSION = "1.14.0"
SAMPLE_RATE = 16000


def pipecat_available() -> str | None:
    """None when Pipecat can run here, else why not."""
    try:
        # Every module the harnesses use: dev.sh installs pipecat-ai without its dependencies (for its
        # serializers), where e.g. the TTS service's num2words is missing.
        import pipecat
        import pipecat.pipeline.worker
        import pipecat.services.openai.llm
        import pipecat.services.tts_service
        import pipecat.transports.base_output
        import pipecat.transports.websocket.server
    except ImportError as exc:
        return f"pipecat-ai is not installed ({exc}); pip install -r bench/requirements.txt"
    version = getattr(pipecat, "__version__", "?")
    if version != PIPECAT_VERSION:
        return f"pipecat-ai {version} is installed; the bench is written for {PIPECAT_VERSION}"
    return None


def quiet_pipecat_logs() -> None:
    """Pipecat logs every frame at DEBUG to stderr; keep only errors out of the report."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")


@dataclass
class PlaybackLog:
    """What the fake TTS was given and what the fake transport played, with clock times."""

    tts_texts: list[tuple[float, str]] = field(default_factory=list)
    generated_s: float = 0.0
    played_s: float = 0.0
    first_audio_at: float | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    done_when: Callable[[PlaybackLog], bool] = lambda _log: False

    def check(self) -> None:
        if self.done_when(self):
            self.done.set()


@dataclass
class PipecatSession:
    """One Pipecat pipeline bot; ``turn(user_text)`` runs one user turn until its audio has played."""

    base_url: str
    model: str
    seconds_per_char: float
    tool_seconds: float
    # Pipecat's TTS text aggregation: "sentence" (its default: whole sentences to the TTS) or "token"
    # (each LLM token straight to the TTS, its low-latency mode for streaming engines).
    text_aggregation: str = "sentence"
    log: PlaybackLog = field(default_factory=PlaybackLog)
    tool_started: list[float] = field(default_factory=list)
    _task: Any = None
    _runner: Any = None
    _context: Any = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PipecatSession]:
        """The pipeline runs (on its runner, in a task group) for the duration of the block."""
        await self._build()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._runner.run)
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self._task.cancel()
                    await self._runner.cancel()

    async def _build(self) -> None:
        from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
        from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
        from pipecat.frames.frames import Frame, OutputAudioRawFrame, StartFrame, TTSAudioRawFrame
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.worker import PipelineParams, PipelineWorker
        from pipecat.processors.aggregators.llm_context import LLMContext
        from pipecat.processors.aggregators.llm_response_universal import (
            LLMContextAggregatorPair,
            LLMUserAggregatorParams,
        )
        from pipecat.services.llm_service import FunctionCallParams
        from pipecat.services.openai.llm import OpenAILLMService
        from pipecat.services.settings import TTSSettings
        from pipecat.services.tts_service import TextAggregationMode, TTSService
        from pipecat.transports.base_output import BaseOutputTransport
        from pipecat.transports.base_transport import TransportParams
        from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies
        from pipecat.workers.runner import WorkerRunner

        log = self.log
        seconds_per_char = self.seconds_per_char
        aggregation = TextAggregationMode(self.text_aggregation)

        class SimulatedTTS(TTSService):
            """Synthesizes silence lasting as long as the text takes to say."""

            def __init__(self) -> None:
                super().__init__(
                    sample_rate=SAMPLE_RATE,
                    push_start_frame=True,
                    push_stop_frames=True,
                    text_aggregation_mode=aggregation,
                    settings=TTSSettings(model=None, voice=None, language=None),
                )

            def can_generate_metrics(self) -> bool:
                return False

            async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
                log.tts_texts.append((time.perf_counter(), text))
                seconds = len(text) * seconds_per_char
                log.generated_s += seconds
                log.check()
                samples = int(seconds * SAMPLE_RATE)
                if samples:
                    yield TTSAudioRawFrame(b"\0\0" * samples, SAMPLE_RATE, 1, context_id=context_id)

        class RealTimeOutput(BaseOutputTransport):
            """Plays audio at real-time speed, like a network transport pacing its sends."""

            def __init__(self) -> None:
                super().__init__(TransportParams(audio_out_enabled=True, audio_out_sample_rate=SAMPLE_RATE))
                self._next_at = 0.0

            async def start(self, frame: StartFrame) -> None:
                await super().start(frame)
                await self.set_transport_ready(frame)

            async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
                seconds = len(frame.audio) / 2 / frame.sample_rate
                now = time.perf_counter()
                if log.first_audio_at is None:
                    log.first_audio_at = now
                self._next_at = max(self._next_at, now) + seconds
                await anyio.sleep(self._next_at - now)
                log.played_s += seconds
                log.check()
                return True

        tool_seconds = self.tool_seconds
        tool_started = self.tool_started

        async def get_weather(params: FunctionCallParams) -> None:
            tool_started.append(time.perf_counter())
            await anyio.sleep(tool_seconds)
            args = params.arguments
            await params.result_callback(f"{args['city']}: 21 degrees {args['unit']}, sunny.")

        function = TOOL_SCHEMA["function"]
        tools = ToolsSchema(
            standard_tools=[
                FunctionSchema(
                    name=function["name"],
                    description=function["description"],
                    properties=function["parameters"]["properties"],
                    required=function["parameters"]["required"],
                )
            ]
        )
        settings = OpenAILLMService.Settings(model=self.model, system_instruction=SYSTEM_PROMPT)
        llm = OpenAILLMService(api_key=API_KEY, base_url=self.base_url, settings=settings)
        llm.register_function(TOOL_NAME, get_weather)
        self._context = LLMContext(messages=[], tools=tools)
        # Turns arrive as text here, so no user-turn detector: Pipecat's default would load its Smart Turn
        # ONNX model in every session, a cost our turn engine (which has no turn detector) does not pay.
        user_params = LLMUserAggregatorParams(user_turn_strategies=ExternalUserTurnStrategies())
        aggregators = LLMContextAggregatorPair(self._context, user_params=user_params)
        pipeline = Pipeline(
            [aggregators.user(), llm, SimulatedTTS(), RealTimeOutput(), aggregators.assistant()]
        )
        # PipelineWorker is 1.14's name for PipelineTask (kept as a deprecated alias); WorkerRunner for
        # PipelineRunner.
        self._task = PipelineWorker(
            pipeline,
            params=PipelineParams(enable_metrics=False),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )
        self._runner = WorkerRunner(handle_sigint=False)
        await self._runner.add_workers(self._task)

    async def turn(self, user_text: str, done_when: Callable[[PlaybackLog], bool]) -> None:
        from pipecat.frames.frames import LLMMessagesAppendFrame

        self.log.done_when = done_when
        self.log.done = anyio.Event()
        await self._task.queue_frames(
            [LLMMessagesAppendFrame([{"role": "user", "content": user_text}], run_llm=True)]
        )
        await self.log.done.wait()
