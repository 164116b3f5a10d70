"""Session: one live conversation. Caller audio -> STT -> agent turns -> TTS -> caller, with barge-in.

Turn-taking: a segment final is not the end of the caller's turn. Every STT event (and the
local VAD's, for an STT without VAD events) goes to one ``EndOfTurnDetector``; the session asks it when
the turn is over and joins the segment finals into one user turn. When the words are final enough
(``draft``) a speculative turn starts at once, held: it streams but says nothing and runs no tool. At the
end of the turn it is released if the caller said nothing more, or discarded without a trace (nothing
played, nothing committed, its requests recorded as speculative) and a turn on the joined text starts.

Barge-in: when the caller says at least ``min_words`` real words (for at least ``min_speech_seconds``)
while the bot is speaking, the current turn is cancelled (its stream, its tools per their policy, its
speech; the transport's playback is cleared by the sink's output) and the conversation keeps only what
the caller heard. While the turn's tools run (the filler is playing) they finish first and their results
are kept. Backchannels ("mhm", "ok") and speech with no words (a cough) do not interrupt.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from voiceagent.agent import Agent
from voiceagent.endpointing import EndOfTurnDetector, EndpointingDetector
from voiceagent.errors import VoiceAgentError
from voiceagent.events import SpeechQueued, TurnEvent, TurnFinished
from voiceagent.logs import get_logger, log_context
from voiceagent.results import RoundRecord, TurnResult
from voiceagent.stt import (
    Finalizes,
    ReportsSpeech,
    SpeechEnded,
    SpeechStarted,
    STTEvent,
    STTSource,
    Transcript,
)
from voiceagent.telephony.amd import AnsweringMachineResult
from voiceagent.telephony.settings import CallSettings
from voiceagent.telephony.supervisor import CallSupervisor
from voiceagent.transport import OwnsOutput, TextDisplay, Transport
from voiceagent.transport_output import TransportOutput
from voiceagent.turn import Turn
from voiceagent.vad import VoiceActivityDetector, default_vad

log = get_logger(__name__)

DEFAULT_BACKCHANNELS = frozenset(
    {
        "mhm", "mm", "mmhm", "hmm", "uh huh", "uh-huh", "ok", "okay", "yeah", "yep", "yes", "right",
        "sure", "got it", "i see", "alright", "all right", "cool", "great",
    }
)  # fmt: skip

_MAX_QUEUED_TURNS = 4  # turns asked for by call control (DTMF entries) not started yet

# The agents a running session is serving: an Agent is one conversation, so two sessions at once on
# one agent would interleave two callers in one history. One after the other is fine.
_SERVING: weakref.WeakSet[Agent] = weakref.WeakSet()


@contextmanager
def _serving(agent: Agent) -> Iterator[None]:
    if agent in _SERVING:
        raise VoiceAgentError(
            f"agent {agent.session_id} is already serving a running session: build one Agent per call "
            "(tools may be shared between agents)"
        )
    _SERVING.add(agent)
    try:
        yield
    finally:
        _SERVING.discard(agent)


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
    # Interrupt once the caller has said this many words (backchannels aside)...
    min_words: int = 1
    # ...and has been speaking this long (VAD onset, or the first words without VAD). A shorter
    # utterance still interrupts when its turn ends: it is a turn of its own.
    min_speech_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.min_words < 1 or self.min_speech_seconds < 0:
            raise ValueError("min_words must be at least 1 and min_speech_seconds not negative")


@dataclass
class _Running:
    """One turn in flight, speculative (held) or confirmed, and the task that runs it."""

    turn: Turn
    text: str
    done: anyio.Event = field(default_factory=anyio.Event)
    result: TurnResult | None = None
    held_events: list[TurnEvent] = field(default_factory=list)  # shown only if it is released
    speculative_rounds: tuple[RoundRecord, ...] = ()


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
        endpointing: EndOfTurnDetector | None = None,
        vad: VoiceActivityDetector | Literal["auto"] | None = "auto",
        call: CallSettings | None = None,
    ) -> None:
        """``output``: the ``TransportOutput`` the agent's sink writes to; the session follows its marks.
        A transport that owns its output (``OwnsOutput``: Twilio, the web page) needs none: build the sink
        on ``transport.output``.
        ``endpointing``: the end-of-turn policy (default ``EndpointingDetector``). ``vad``: a local VAD on
        the caller's audio, used only when the STT sends no speech events of its own; "auto" picks
        ``voiceagent.vad.default_vad()``, None runs none (then each final ends an utterance).
        ``call``: call control for a phone call (``CallSettings``: the end_call/transfer_call tools,
        DTMF, idle prompts, a maximum duration, answering machines); ``self.call`` runs it."""
        self.agent = agent
        self.transport = transport
        self.stt = stt
        if output is None and isinstance(transport, OwnsOutput):
            output = transport.output
        self.output = output
        self.policy = policy or BargeInPolicy()
        self.greeting = greeting
        stt_vad = isinstance(stt, ReportsSpeech) and stt.vad_events
        self.vad = None if stt_vad else default_vad() if vad == "auto" else vad
        self.detector = endpointing or EndpointingDetector(vad=stt_vad or vad is not None)
        self.barge_ins = 0
        self.results: list[TurnResult] = []
        self.discarded: list[TurnResult] = []  # speculative turns dropped because the caller went on
        self._turn: Turn | None = None
        self._current: _Running | None = None  # the confirmed turn in flight
        self._speculative: _Running | None = None
        self._spec_rounds: list[RoundRecord] = []  # discarded since the last confirmed turn
        self._wake = anyio.Event()
        self._finalize = False
        self._utterance_at: float | None = None  # when the caller's current utterance began
        # What a TextDisplay transport shows: (caller?, text, final). Queued, so showing text never
        # holds up the STT events or the turn.
        self._display: MemoryObjectSendStream[tuple[bool, str, bool]] | None = None
        # Call control (CallSupervisor): lines said outside a turn, turns queued by it (DTMF), whether
        # the call is ending (no new turns), and the task group it ends.
        self._lines = 0
        self._queued: list[str] = []
        self._ending = False
        self._tg: TaskGroup | None = None
        self.call = CallSupervisor(call, self) if call is not None else None
        # The built-in call tools are this session's own, offered to its turns through a view of the
        # agent's runner: the agent is left unchanged, so it (or its tools) can serve the next call.
        self._built_ins = tuple(self.call.tools()) if self.call is not None else ()
        if self._built_ins:
            agent.runner.with_tools(self._built_ins)  # a name clash fails here, not mid-call

    @property
    def bot_speaking(self) -> bool:
        """A confirmed turn is in flight (a held speculative one says nothing)."""
        return self._current is not None

    async def run(self) -> None:
        """Serve until the caller's audio ends and the STT source has said its last word."""
        with _serving(self.agent), log_context(session=self.agent.session_id):
            log.info("session started")
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.output is not None:
                    tg.start_soon(self.output.run)
                if self.call is not None:
                    tg.start_soon(self.call.run)
                if isinstance(self.transport, TextDisplay):
                    lines, shown = anyio.create_memory_object_stream[tuple[bool, str, bool]](math.inf)
                    self._display = lines
                    tg.start_soon(self._show, self.transport, shown)
                tg.start_soon(self._pump_audio)
                tg.start_soon(self._take_turns, tg)
                async for event in self.stt.events():
                    self._on_stt(event)
                tg.cancel_scope.cancel()  # the call is over: stop what still speaks or plays
            log.info("session over: %d turn(s), %d barge-in(s)", len(self.results), self.barge_ins)

    async def _pump_audio(self) -> None:
        rate = self.transport.input_sample_rate
        try:
            async for pcm in self.transport.audio_in():
                if self.vad is not None:
                    for event in self.vad.process(pcm, rate):
                        self._on_stt(event)
                await self.stt.send_audio(pcm)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stt.aclose()  # lets the STT flush its last transcript and end events()

    # -- what the caller says ----------------------------------------------------------------------

    def _on_stt(self, event: STTEvent) -> None:
        now = anyio.current_time()
        if self.call is not None:
            if isinstance(event, SpeechStarted) or (isinstance(event, Transcript) and event.text.strip()):
                self.call.caller_active()
            else:
                self.call.notify()
        if isinstance(event, SpeechStarted):
            if self._utterance_at is None:
                self._utterance_at = now
            if self.policy.enabled and self.policy.on_speech_start:
                self._barge_in("speech started")
        elif isinstance(event, Transcript):
            text = event.text.strip()
            if not text:
                return
            backchannel = is_backchannel(text, self.policy.backchannels)
            if self.bot_speaking and backchannel:
                self._queue_display(True, text, event.is_final)
                return  # "mhm" while the bot talks: keep talking, and it is no turn of its own
            if self._utterance_at is None:
                self._utterance_at = now
        elif not isinstance(event, SpeechEnded):
            return
        if self.detector.observe(event, now):
            self._finalize = True
        if isinstance(event, Transcript):
            # One caller line per turn: everything heard so far, final only when the turn ends.
            self._queue_display(True, self.detector.heard(), False)
        if isinstance(event, SpeechEnded) and not self.detector.heard():
            self._utterance_at = None  # speech with no words (a cough, a dropped "mhm"): not an utterance
        if isinstance(event, Transcript) and self.bot_speaking and self._enough_to_interrupt(now):
            self._barge_in(f"caller said {len(self.detector.heard().split())} word(s)")
        self._wake.set()

    def _enough_to_interrupt(self, now: float) -> bool:
        if not self.policy.enabled:
            return False
        heard = self.detector.heard()
        if is_backchannel(heard, self.policy.backchannels):
            return False
        started = self._utterance_at if self._utterance_at is not None else now
        return len(heard.split()) >= self.policy.min_words and now - started >= self.policy.min_speech_seconds

    def _barge_in(self, why: str) -> None:
        running = self._current
        if running is not None and not running.turn.cancelled:
            log.info("barge-in: %s", why)
            self.barge_ins += 1
            running.turn.cancel(keep_tools=True)

    # -- turns -------------------------------------------------------------------------------------

    async def _take_turns(self, tg: TaskGroup) -> None:
        if self.greeting:
            await self._speak_greeting(self.greeting)
        while True:
            self._wake = anyio.Event()  # reset first: whatever arrives from here on wakes us again
            if self._ending:  # the call is ending: no more turns
                await self._wake.wait()
                continue
            if self._queued:  # a turn call control asked for (a DTMF entry)
                await self._confirm(self._queued.pop(0), tg)
                continue
            if self._finalize:
                self._finalize = False
                await self._ask_finalize()
            await self._steer_speculation(tg)
            ends = self.detector.ends_at()
            if ends is not None and anyio.current_time() >= ends:
                self._utterance_at = None
                text = self.detector.take()
                self._queue_display(True, text, True)
                await self._confirm(text, tg)
                continue
            with anyio.move_on_after(math.inf if ends is None else ends - anyio.current_time()):
                await self._wake.wait()

    async def _ask_finalize(self) -> None:
        if isinstance(self.stt, Finalizes):
            try:
                await self.stt.finalize()
            except Exception as exc:  # the turn still ends: on the partial, after the final wait
                log.warning("could not ask the STT to finalize: %r", exc)

    async def _steer_speculation(self, tg: TaskGroup) -> None:
        draft = self.detector.draft()
        spec = self._speculative
        if spec is not None and spec.text != draft:
            await self._discard(spec)  # the caller went on: the early reply answers the wrong words
        if draft is not None and self._speculative is None and self._current is None:
            self._speculative = self._start(draft, tg, held=True)

    async def _discard(self, spec: _Running) -> None:
        self._speculative = None
        spec.turn.discard()
        await spec.done.wait()
        if spec.result is not None:
            self.discarded.append(spec.result)
            self._spec_rounds.extend(spec.result.rounds)

    async def _confirm(self, text: str, tg: TaskGroup) -> None:
        spec = self._speculative
        if spec is not None and spec.text != text:
            await self._discard(spec)
            spec = None
        current = self._current
        if current is not None:  # the caller took a turn of their own while the bot spoke
            self._barge_in("the caller's turn ended")
            await current.done.wait()
        if self._ending:
            return
        if spec is not None:
            self._speculative = None
            running = spec
            spec.turn.release()
            for event in spec.held_events:
                self._show_turn_event(event)
            spec.held_events.clear()
        else:
            running = self._start(text, tg, held=False)
        running.speculative_rounds, self._spec_rounds = tuple(self._spec_rounds), []
        self._current = running
        self._turn = running.turn

    def _start(self, text: str, tg: TaskGroup, *, held: bool) -> _Running:
        def on_event(event: TurnEvent) -> None:
            if running.turn.released:
                self._show_turn_event(event)
            elif not running.turn.discarded:
                running.held_events.append(event)

        # Per turn: the agent's runner may have been wrapped since (replay substitutes tools).
        if self._built_ins:
            runner = self.agent.runner.with_tools(self._built_ins)
            turn = self.agent.new_turn(on_event, held=held, runner=runner)
        else:
            turn = self.agent.new_turn(on_event, held=held)
        running = _Running(turn, text)
        tg.start_soon(self._drive, running)
        if self.call is not None:
            self.call.notify()
        return running

    async def _drive(self, running: _Running) -> None:
        try:
            result = await running.turn.run(running.text)
            if not running.turn.discarded:
                result = replace(result, speculative_rounds=running.speculative_rounds)
                self.results.append(result)
                self.agent.results.append(result)
            running.result = result  # before done: whoever waits on done reads it
        finally:
            running.done.set()
            if self._current is running:
                self._current = self._turn = None
            self._wake.set()
            if self.call is not None:
                self.call.notify()

    async def _speak_greeting(self, text: str) -> None:
        await self.say(text)

    # -- call control (voiceagent.telephony.supervisor) ---------------------------------------------

    @property
    def quiet(self) -> bool:
        """Neither side is speaking: no turn in flight, no caller utterance under way, no line being said."""
        return (
            not self._ending
            and self._current is None
            and self._speculative is None
            and self._utterance_at is None
            and not self.detector.heard()
            and self._lines == 0
            and not self._queued
        )

    async def say(self, text: str) -> None:
        """Say a line outside any turn (greeting, idle prompt, goodbye) and return once it was heard."""
        self._lines += 1
        if self.call is not None:
            self.call.notify()
        try:
            self._queue_display(False, text, True)
            await self.agent.sink.speak(text)
            await self.agent.sink.flush()
            if self.output is not None:
                await self.output.wait_played()
        finally:
            self._lines -= 1
            if self.call is not None:
                self.call.notify()

    def take_turn(self, text: str) -> None:
        """Take ``text`` as the caller's next turn (interrupting the bot, as speech would)."""
        if len(self._queued) >= _MAX_QUEUED_TURNS:  # keys pressed faster than turns can answer them
            log.warning("dropping a queued turn: %d are waiting", len(self._queued))
            self._queued.pop(0)
        self._queued.append(text)
        self._wake.set()

    def interrupt(self, why: str) -> None:
        self._barge_in(why)

    async def stop_turns(self) -> None:
        """No new turns from here on; a held speculative turn is dropped; the turn in flight finishes."""
        self._ending = True
        self._queued.clear()
        self._wake.set()
        if self._speculative is not None:
            await self._discard(self._speculative)
        while self._current is not None:
            await self._current.done.wait()

    def resume_turns(self) -> None:
        self._ending = False
        self._wake.set()

    def end(self) -> None:
        """End the session now (the call was hung up or transferred)."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def answering_machine(self, result: AnsweringMachineResult) -> None:
        """An answering-machine detection result for this call, from another task of the same event
        loop (a webhook handler); it is acted on in the session's own task group."""
        if self.call is not None:
            self.call.deliver_answering_machine(result)
        else:
            log.info("answered by %s; no CallSettings, so nothing is done", result.answered_by)

    # -- text display ------------------------------------------------------------------------------

    def _show_turn_event(self, event: TurnEvent) -> None:
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
