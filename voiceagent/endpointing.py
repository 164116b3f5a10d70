"""End of turn: when has the caller finished speaking, and what did they say?

A segment final is not the end of a turn: Pulse cuts a final every few words. A turn ends on an
end-of-utterance signal (the STT's ``speech_ended``, a local VAD's, or a transcript's own
``end_of_turn`` flag) followed by ``delay`` seconds in which the caller does not start again; its text is
every segment final of the utterance, joined. An STT with no VAD at all makes each final count as an
end of utterance (as LiveKit's Smallest plugin does without ``vad_events``).

The detector is pure (it is given the time) and swappable: ``Session`` feeds it every STT and VAD event
and asks it when the turn ends and whether the words are final enough to start a reply early.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

from voiceagent.stt import SpeechEnded, SpeechStarted, STTEvent, Transcript

# 0.4 s after speech_ended: Pulse's own VAD already waited out its silence window (LiveKit asks for
# 300 ms) before it says speech_ended, so this is the pause on top of that which still lets a caller
# take a breath mid-sentence. With speculation the reply is being generated during the delay, so it
# costs only what it exceeds time-to-first-token by (bench/turntaking.py measures both).
DEFAULT_DELAY = 0.4
# How long after the end of speech to wait for the final of words still open (we ask the STT to
# finalize them at speech_ended) before taking the last partial as it is.
DEFAULT_FINAL_WAIT = 1.0
# A VAD that never hears the speech end (webrtcvad in 10 dB of noise, bench/vad.py) must not hold the
# turn forever: this long after the last words with no end of speech, the utterance is over anyway.
DEFAULT_WORDS_TIMEOUT = 2.5

Speculate = Literal["off", "final", "speech_ended"]


@runtime_checkable
class EndOfTurnDetector(Protocol):
    """Decides when a user turn is over. ``now`` is the session's clock in seconds (monotonic)."""

    def observe(self, event: STTEvent, now: float) -> bool:
        """Feed one STT or VAD event; True when the STT should be asked to finalize its open words now."""
        ...

    def ends_at(self) -> float | None:
        """When the turn is over if nothing else arrives; None while the caller may go on or said nothing."""
        ...

    def draft(self) -> str | None:
        """The text so far when it is final enough to start a reply on (it may still grow), else None."""
        ...

    def heard(self) -> str:
        """Everything heard of the turn so far, finals and the open partial."""
        ...

    def take(self) -> str:
        """The turn is over: its joined text; the detector starts on the next turn."""
        ...


class EndpointingDetector:
    """The default policy: end-of-utterance signal + ``delay``; finals joined.

    ``vad``: whether speech events will come (from the STT or a local VAD). Without them a final is an
    end of utterance. ``speculate``: "speech_ended" (a draft once the caller has stopped and the words
    are final: one early request per utterance unless the caller goes on), "final" (a draft at every
    segment final: earliest, costs a request per segment while the caller talks) or "off".
    """

    def __init__(
        self,
        *,
        delay: float = DEFAULT_DELAY,
        vad: bool = True,
        speculate: Speculate = "speech_ended",
        final_wait: float = DEFAULT_FINAL_WAIT,
        words_timeout: float = DEFAULT_WORDS_TIMEOUT,
    ) -> None:
        if delay < 0 or final_wait < 0 or words_timeout <= 0:
            raise ValueError("delay and final_wait must not be negative, words_timeout must be positive")
        if speculate not in ("off", "final", "speech_ended"):
            raise ValueError('speculate must be "off", "final" or "speech_ended"')
        self.delay = delay
        self.vad = vad
        self.speculate = speculate
        self.final_wait = final_wait
        self.words_timeout = words_timeout
        self._words_at = 0.0  # when the last transcript came
        self._finals: list[str] = []
        self._open = ""  # the latest partial, not final yet
        self._ended_at: float | None = None  # last end-of-utterance signal, None while speaking
        self._speaking = False  # the VAD's view

    def observe(self, event: STTEvent, now: float) -> bool:
        if isinstance(event, SpeechStarted):
            self._speaking = True
            self._ended_at = None  # the caller goes on: whatever pause came before was mid-turn
            return False
        if isinstance(event, SpeechEnded):
            self._speaking = False
            self._ended_at = now
            return bool(self._open)
        if not isinstance(event, Transcript) or not event.text.strip():
            return False
        self._words_at = now
        if event.is_final:
            self._finals.append(event.text.strip())
            self._open = ""
            # With VAD, a final ends the utterance only while the VAD hears no speech: it trails
            # speech_ended, or the VAD missed quiet words (else the turn would wait forever). An
            # end_of_turn flag (an answer to our finalize) that arrives after the caller started again
            # is stale: the VAD wins.
            if not self.vad or not self._speaking:
                self._ended_at = now
        else:
            self._open = event.text.strip()
            if not self.vad:
                self._ended_at = None  # no VAD: new words are the only sign the caller goes on
        return False

    def ends_at(self) -> float | None:
        if not (self._finals or self._open):
            return None  # nothing said yet, or a false start (speech without words)
        if self._ended_at is None:  # still speaking, says the VAD; unless no words came for too long
            stuck = self.vad and math.isfinite(self.words_timeout)
            return self._words_at + self.words_timeout if stuck else None
        if self._open:
            return self._ended_at + max(self.delay, self.final_wait)
        return self._ended_at + self.delay

    def draft(self) -> str | None:
        if self.speculate == "off" or self._open or not self._finals:
            return None
        if self.speculate == "speech_ended" and self._ended_at is None:
            return None
        return " ".join(self._finals)

    def heard(self) -> str:
        return " ".join([*self._finals, self._open] if self._open else self._finals)

    def take(self) -> str:
        text = self.heard()
        self._finals, self._open, self._ended_at = [], "", None
        return text
