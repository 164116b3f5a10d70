"""Session: one live conversation. Caller audio -> STT -> agent turns -> TTS -> caller, with barge-in.

Barge-in: when the caller says real words while the bot is speaking, the current turn is cancelled
(its stream, its tools per their policy, its speech; the transport's playback is cleared by the sink's
output) and the conversation keeps only what the caller heard. Backchannels ("mhm", "ok") do not
interrupt. Final transcripts become the next user turn; several that pile up are joined.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from voiceagent.agent import Agent
from voiceagent.events import SpeechQueued, TurnEvent, TurnFinished
from voiceagent.logs import get_logger, log_context
from voiceagent.results import TurnResult
from voiceagent.stt import SpeechStarted, STTEvent, STTSource, Transcript
from voiceagent.transport import TextDisplay, Transport
from voiceagent.transport_output import TransportOutput
from voiceagent.turn import Turn

log = get_logger(__name__)

DEFAULT_BACKCHANNELS = frozenset(
    {
        "mhm", "mm", "mmhm", "hmm", "uh huh", "uh-huh", "ok", "okay", "yeah", "yep", "yes", "right",
        "sure", "got it", "i see", "alright", "all right", "cool", "great",
    }
)  # fmt: skip

_WORDS = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")


def is_backchannel(text: str, backchannels: Iterable[str] = DEFAULT_BACKCHANNELS) -> bool:
    """True when every word of ``text`` is a backchannel ("ok", "mhm mhm", "yeah, right")."""
    phrases = {" ".join(_WORDS.findall(p.lower())) for p in backchannels}
    words = _WORDS.findall(text.lower())
    if not words:
        return False
    i = 0
    while i < len(words):  # greedy: longest backchannel phrase first
        for size in (3, 2, 1):
            if " ".join(words[i : i + size]) in phrases:
                i += size
                break
        else:
            return False
    return True


@dataclass(frozen=True)
class BargeInPolicy:
    enabled: bool = True
    backchannels: frozenset[str] = field(default_factory=lambda: DEFAULT_BACKCHANNELS)
    # Interrupt on voice activity alone, before any words: fastest, but a cough or "mhm" cuts the bot.
    on_speech_start: bool = False


class Session:
    def __init__(
        self,
        *,
        agent: Agent,
        transport: Transport,
        stt: STTSource,
        output: TransportOutput | None = None,
        policy: BargeInPolicy | None = None,
        greeting: str | None = None,
    ) -> None:
        """``output``: the ``TransportOutput`` the agent's sink writes to; the session follows its marks."""
        self.agent = agent
        self.transport = transport
        self.stt = stt
        self.output = output
        self.policy = policy or BargeInPolicy()
        self.greeting = greeting
        self.barge_ins = 0
        self.results: list[TurnResult] = []
        self._turn: Turn | None = None
        # What a TextDisplay transport shows: (caller?, text, final). Queued, so showing text never
        # holds up the STT events or the turn.
        self._display: MemoryObjectSendStream[tuple[bool, str, bool]] | None = None

    @property
    def bot_speaking(self) -> bool:
        return self._turn is not None

    async def run(self) -> None:
        """Serve until the caller's audio ends and the STT source has said its last word."""
        with log_context(session=self.agent.session_id):
            log.info("session started")
            async with anyio.create_task_group() as tg:
                if self.output is not None:
                    tg.start_soon(self.output.run)
                if isinstance(self.transport, TextDisplay):
                    lines, shown = anyio.create_memory_object_stream[tuple[bool, str, bool]](math.inf)
                    self._display = lines
                    tg.start_soon(self._show, self.transport, shown)
                send, receive = anyio.create_memory_object_stream[str](math.inf)
                tg.start_soon(self._pump_audio)
                tg.start_soon(self._run_turns, receive)
                async with send:
                    async for event in self.stt.events():
                        self._on_stt(event, send)
                tg.cancel_scope.cancel()  # the call is over: stop what still speaks or plays
            log.info("session over: %d turn(s), %d barge-in(s)", len(self.results), self.barge_ins)

    async def _pump_audio(self) -> None:
        try:
            async for pcm in self.transport.audio_in():
                await self.stt.send_audio(pcm)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stt.aclose()  # lets the STT flush its last transcript and end events()

    def _on_stt(self, event: STTEvent, turns: MemoryObjectSendStream[str]) -> None:
        if isinstance(event, SpeechStarted):
            if self.policy.enabled and self.policy.on_speech_start:
                self._barge_in("speech started")
            return
        if not isinstance(event, Transcript) or not event.text.strip():
            return
        self._queue_display(True, event.text.strip(), event.is_final)
        backchannel = is_backchannel(event.text, self.policy.backchannels)
        if self.bot_speaking and backchannel:
            return  # "mhm" while the bot talks: keep talking, and it is no turn of its own
        if self.policy.enabled and not backchannel:
            self._barge_in(f"caller said {len(event.text.split())} word(s)")
        if event.is_final:
            turns.send_nowait(event.text.strip())

    def _barge_in(self, why: str) -> None:
        turn = self._turn
        if turn is not None and not turn.cancelled:
            log.info("barge-in: %s", why)
            self.barge_ins += 1
            turn.cancel()

    async def _run_turns(self, texts: MemoryObjectReceiveStream[str]) -> None:
        if self.greeting:
            await self._speak_greeting(self.greeting)
        async with texts:
            async for first in texts:
                parts = [first]
                while True:  # the caller said more while we were busy: one turn for all of it
                    try:
                        parts.append(texts.receive_nowait())
                    except anyio.WouldBlock:
                        break
                turn = self._turn = self.agent.new_turn(self._on_turn_event)
                try:
                    result = await turn.run(" ".join(parts))
                finally:
                    self._turn = None
                self.results.append(result)
                self.agent.results.append(result)

    async def _speak_greeting(self, text: str) -> None:
        self._queue_display(False, text, True)
        await self.agent.sink.speak(text)
        await self.agent.sink.flush()

    # -- text display ------------------------------------------------------------------------------

    def _on_turn_event(self, event: TurnEvent) -> None:
        if isinstance(event, SpeechQueued):
            self._queue_display(False, event.text.strip(), False)
        elif isinstance(event, TurnFinished):
            self._queue_display(False, "", True)

    def _queue_display(self, caller: bool, text: str, final: bool) -> None:
        if self._display is not None:
            self._display.send_nowait((caller, text, final))

    async def _show(
        self, display: TextDisplay, lines: MemoryObjectReceiveStream[tuple[bool, str, bool]]
    ) -> None:
        async with lines:
            async for caller, text, final in lines:
                try:
                    if caller:
                        await display.send_transcript(text, is_final=final)
                    else:
                        await display.send_agent_text(text, final=final)
                except Exception as exc:
                    # Text is a nicety: a page that cannot show it must not end the call.
                    log.warning("could not show text on the transport (%r); no more text is sent", exc)
                    self._display = None
                    return
