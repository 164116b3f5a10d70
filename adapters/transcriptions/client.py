"""Any OpenAI-compatible ``/audio/transcriptions`` endpoint (OpenAI, Groq, a local Whisper server) as a
voiceagent ``STTSource``: a local VAD cuts the caller's audio into utterances and each is sent, as a
WAV file, with the ``openai`` SDK's ``audio.transcriptions.create``.

The source reports speech itself (``vad_events``): ``SpeechStarted``/``SpeechEnded`` from its VAD, then
one final ``Transcript`` per utterance with ``end_of_turn`` (a segment cut at ``max_segment`` mid-speech
is final without it). There are no partials: the words come once the caller has stopped.
"""

from __future__ import annotations

import math

import anyio
import openai
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from voiceagent.audio import wav_bytes
from voiceagent.logs import get_logger
from voiceagent.stt import Transcript
from voiceagent.stt_session import STTSession
from voiceagent.vad import VoiceActivityDetector, default_vad

from .errors import TranscriptionConnectionError, TranscriptionError, TranscriptionStatusError
from .segmenter import Segment, VadSegmenter

logger = get_logger(__name__)


class TranscriptionSTT(STTSession):
    """``client``: an ``openai.AsyncOpenAI`` pointed at the endpoint (or ``base_url``/``api_key`` to make
    one; its ``max_retries`` retry a dropped request). ``vad``: the segmenting VAD (default
    ``voiceagent.vad.default_vad()``). Segments are transcribed one at a time, in order."""

    vendor = "transcriptions"

    def __init__(
        self,
        client: openai.AsyncOpenAI | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str = "whisper-1",
        language: str | None = None,
        prompt: str | None = None,
        sample_rate: int = 16000,
        vad: VoiceActivityDetector | None = None,
        pre_roll: float = 0.3,
        max_segment: float = 30.0,
        close_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self._client = client or openai.AsyncOpenAI(base_url=base_url, api_key=api_key)
        vad = vad or default_vad()
        if vad is None:
            raise ValueError("TranscriptionSTT needs a VAD: pass vad=, or install the [vad] extra")
        self.model, self.language, self.prompt = model, language, prompt
        self.sample_rate = sample_rate
        self._segmenter = VadSegmenter(vad, sample_rate, pre_roll=pre_roll, max_segment=max_segment)
        self._close_timeout = close_timeout
        self._segments_tx: MemoryObjectSendStream[Segment]
        self._segments_rx: MemoryObjectReceiveStream[Segment]
        self._segments_tx, self._segments_rx = anyio.create_memory_object_stream[Segment](math.inf)
        self.segments_sent = 0

    @property
    def vad_events(self) -> bool:
        return True  # its own VAD: the session runs no other

    def _start(self, tg: TaskGroup) -> None:
        tg.start_soon(self._worker)

    async def send_audio(self, pcm: bytes) -> None:
        self._check_open()
        for item in self._segmenter.process(pcm):
            if isinstance(item, Segment):
                self._segments_tx.send_nowait(item)
            else:
                self._emit(item)

    async def aclose(self) -> None:
        """Transcribe the utterance still open and those queued (up to ``close_timeout``), then end."""
        if self._tg is None:
            return  # never opened: nothing to close
        if not self._closing:
            self._closing = True
            if self._failure is None and (last := self._segmenter.flush()) is not None:
                self._segments_tx.send_nowait(last)
            self._segments_tx.close()
        with anyio.move_on_after(self._close_timeout) as scope:
            await self._finished.wait()
        if scope.cancelled_caught:
            logger.warning("transcriptions still pending at close were dropped")
            assert self._tg is not None
            self._tg.cancel_scope.cancel()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._tg is None or self._closing:
            raise TranscriptionConnectionError("the transcription source is not open (use 'async with')")

    async def _worker(self) -> None:
        failure: TranscriptionError | None = None
        try:
            async for segment in self._segments_rx:
                text = await self._transcribe(segment)
                if text.strip():
                    self._emit(Transcript(text.strip(), True, segment.end_of_speech))
        except TranscriptionError as exc:
            failure = exc
        finally:
            self._finish(failure)

    async def _transcribe(self, segment: Segment) -> str:
        file = ("speech.wav", wav_bytes(segment.pcm, self.sample_rate), "audio/wav")
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model,
                file=file,
                response_format="json",
                language=self.language or openai.omit,
                prompt=self.prompt or openai.omit,
            )
        except openai.APIStatusError as exc:
            raise TranscriptionStatusError(_message(exc), status_code=exc.status_code) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise TranscriptionConnectionError(f"cannot reach the transcription endpoint: {exc}") from None
        self.segments_sent += 1
        return str(result.text)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message
