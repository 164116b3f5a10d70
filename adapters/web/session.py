"""One browser connection seen as a ``voiceagent.transport.Transport``."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from voiceagent.audio import Resampler, resample
from voiceagent.errors import VoiceAgentError
from voiceagent.logs import get_logger
from voiceagent.marks import MarkLedger, MarkOutcome
from voiceagent.transport_output import TransportOutput
from voiceagent.tts import AudioChunk
from voiceagent.ws_safety import DEFAULT_SEND_TIMEOUT, SendStalledError, send_bounded

from .messages import (
    Hello,
    MarkPlayed,
    PlaybackState,
    ProtocolViolationError,
    agent_text_message,
    clear_message,
    mark_message,
    parse_browser_message,
    transcript_message,
)

log = get_logger(__name__)


class SessionClosedError(VoiceAgentError):
    """The browser connection is gone; nothing more can be sent to it."""


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why a session ended. ``code`` is the WebSocket close code the server sends (None: already closed)."""

    code: int | None
    reason: str
    clean: bool = True


def describe_close(exc: ConnectionClosed) -> CloseReason:
    if isinstance(exc, ConnectionClosedOK):
        return CloseReason(None, f"browser closed the connection ({exc})")
    # Oversized frames end here too: websockets has already closed with 1009.
    return CloseReason(None, f"connection failed: {exc}", clean=False)


_IDLE = PlaybackState(event="drained", playing=False, queued_ms=0.0)


class WebSession:
    """A browser session: PCM16 in from the mic, PCM16 out to the page's player, marks and clear.

    The browser's ``hello`` fixed ``input_sample_rate``; audio sent with ``send_audio`` is resampled
    to the same rate. ``audio_in()`` is bounded and lossless: when the app stops taking mic audio,
    reading from the socket pauses (TCP backpressure), and so do mark and playback reports; keep
    reading it for the whole session. Disconnects are noticed regardless.

    Marks are counted once, in the session's ``MarkLedger`` (``output`` reads the same one), and the page
    keeps the same ledger rules: a mark is echoed once all audio sent before it has played; a ``clear``
    drops every pending mark, which the page lists as dropped instead of echoing.
    """

    def __init__(
        self,
        connection: ServerConnection,
        session_id: str,
        hello: Hello,
        *,
        audio_buffer: int,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self._ws = connection
        self._send_timeout = send_timeout
        self._stalled: CloseReason | None = None  # set when a send timed out and the socket was dropped
        self.id = session_id
        self._rate = hello.sample_rate
        self._resampler: Resampler | None = None
        self._output: TransportOutput | None = None
        self._audio_tx: MemoryObjectSendStream[bytes]
        self._audio_rx: MemoryObjectReceiveStream[bytes]
        self._audio_tx, self._audio_rx = anyio.create_memory_object_stream[bytes](audio_buffer)
        # Unbounded is safe: only marks this session sent (and not yet reported) are accepted.
        self._marks_tx: MemoryObjectSendStream[str]
        self._marks_rx: MemoryObjectReceiveStream[str]
        self._marks_tx, self._marks_rx = anyio.create_memory_object_stream[str](math.inf)
        # The page reports the marks a clear dropped: their reports are told apart like Twilio's echoes.
        self._ledger = MarkLedger(echoes_cleared=True)
        self._playback = _IDLE
        self._playback_changed = anyio.Event()
        self._closed = False
        self.close_reason: CloseReason | None = None

    # ---- Transport -------------------------------------------------------------------------

    @property
    def input_sample_rate(self) -> int:
        return self._rate

    @property
    def output_sample_rate(self) -> int:
        return self._rate

    @property
    def output(self) -> TransportOutput:
        """The page's ``AudioOutput`` at the page's rate (nothing is resampled here): give it to the
        TTS sink; ``Session`` follows its marks."""
        if self._output is None:
            self._output = TransportOutput(self, self._rate, ledger=self._ledger)  # marks counted once
        return self._output

    def audio_in(self) -> AsyncIterator[bytes]:
        """Mic audio, PCM16 mono at ``input_sample_rate``; ends when the browser disconnects."""
        return self._audio_rx

    async def send_audio(self, chunk: AudioChunk) -> None:
        if chunk.sample_rate == self._rate:
            pcm = resample(chunk.pcm16, self._rate, self._rate)  # checks, then passes through
        else:
            if self._resampler is None or self._resampler.from_rate != chunk.sample_rate:
                self._resampler = Resampler(chunk.sample_rate, self._rate)
            pcm = self._resampler.process(chunk.pcm16)
        if pcm:
            await self._send_pcm(pcm, chunk.text_span)

    async def _send_pcm(self, pcm: bytes, text: str = "") -> None:
        await self._send(pcm)
        self._ledger.audio_sent(len(pcm) / 2 / self._rate, text)

    async def mark(self, name: str) -> None:
        if not name:
            raise ValueError("a mark needs a non-empty name")
        if self._resampler is not None and (tail := self._resampler.flush()):
            await self._send_pcm(tail)  # the mark follows everything sent so far, the filter's tail too
        self._ledger.mark_sent(name)
        await self._send(mark_message(name))

    async def clear(self) -> None:
        if self._resampler is not None:
            self._resampler.reset()
        self._ledger.cleared()
        await self._send(clear_message())

    def played_marks(self) -> AsyncIterator[str]:
        """Marks in the order the page played them. Marks dropped by ``clear`` never appear here
        (they are listed in the ``cleared`` playback state instead)."""
        return self._marks_rx

    # ---- display ---------------------------------------------------------------------------

    async def send_transcript(self, text: str, *, is_final: bool) -> None:
        await self._send(transcript_message(text, is_final))

    async def send_agent_text(self, text: str, *, final: bool = True) -> None:
        await self._send(agent_text_message(text, final))

    # ---- playback state --------------------------------------------------------------------

    @property
    def playback(self) -> PlaybackState:
        """The page's latest playback report."""
        return self._playback

    @property
    def pending_marks(self) -> list[str]:
        """Marks sent whose audio is not proven played and that no ``clear`` dropped."""
        return list(self._ledger.pending_marks)

    async def wait_playback(self, predicate: Callable[[PlaybackState], bool]) -> PlaybackState:
        """Wait until the page reports a playback state satisfying ``predicate`` (checks the latest first)."""
        while not predicate(self._playback):
            if self._closed:
                raise SessionClosedError(f"session {self.id} closed")
            await self._playback_changed.wait()
        return self._playback

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- driven by WebServer ---------------------------------------------------------------

    async def _send(self, message: bytes | str) -> None:
        if self._closed:
            raise SessionClosedError(f"session {self.id} is closed")
        try:
            await send_bounded(self._ws, message, seconds=self._send_timeout)
        except ConnectionClosed as exc:
            raise SessionClosedError(f"session {self.id}: browser disconnected ({exc})") from exc
        except SendStalledError as exc:
            # The page stopped reading: its socket is already dropped, the reader reports this reason.
            self._stalled = CloseReason(None, str(exc), clean=False)
            log.warning("dropping session %s: %s", self.id, exc)
            raise SessionClosedError(f"session {self.id}: {exc}") from exc

    async def read_loop(self) -> CloseReason:
        """Read frames until the browser leaves or breaks the protocol; return why it ended."""
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    await self._on_audio(message)
                else:
                    self._on_control(parse_browser_message(message))
        except ConnectionClosed as exc:
            return self._stalled or describe_close(exc)
        except ProtocolViolationError as exc:
            return CloseReason(1008, str(exc), clean=False)
        return self._stalled or describe_close(self._ws.protocol.close_exc)

    async def watch_connection(self) -> CloseReason:
        """Notice a disconnect even while ``read_loop`` waits for the app to take audio."""
        await self._ws.wait_closed()
        return self._stalled or describe_close(self._ws.protocol.close_exc)

    async def _on_audio(self, pcm: bytes) -> None:
        if not pcm or len(pcm) % 2:
            raise ProtocolViolationError(f"audio frame of {len(pcm)} bytes is not PCM16 (even, non-empty)")
        try:
            await self._audio_tx.send(pcm)
        except anyio.BrokenResourceError:
            pass  # the app closed audio_in(): it no longer wants mic audio

    def _on_control(self, message: object) -> None:
        if isinstance(message, MarkPlayed):
            outcome = self._ledger.mark_echoed(message.name)
            if outcome is MarkOutcome.UNKNOWN:
                raise ProtocolViolationError(
                    f"played mark {message.name[:40]!r} was never sent or already settled"
                )
            # CLEARED: pending when we sent clear, played as it reached the page; like Twilio's echo of a
            # flushed mark it counts as not heard (conservative), and is no played mark.
            if outcome is MarkOutcome.PLAYED:
                self._marks_tx.send_nowait(message.name)
        elif isinstance(message, PlaybackState):
            for name in message.dropped_marks:
                if self._ledger.mark_echoed(name) is not MarkOutcome.CLEARED:
                    raise ProtocolViolationError(
                        f"dropped mark {name[:40]!r} was never cleared or already settled"
                    )
            self._playback = message
            changed, self._playback_changed = self._playback_changed, anyio.Event()
            changed.set()
        elif isinstance(message, Hello):
            raise ProtocolViolationError("duplicate hello")

    def _finish(self, reason: CloseReason) -> None:
        """The connection is over: end audio_in()/played_marks() and wake playback waiters."""
        self._closed = True
        self.close_reason = reason
        self._audio_tx.close()
        self._marks_tx.close()
        self._playback_changed.set()
