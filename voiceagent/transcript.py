"""A turn's transcript: what it queued to be spoken and the messages it will commit.

Pure bookkeeping, no I/O: a ``Turn`` adds utterances and messages as it goes, and when a barge-in
stops it, ``truncate_to_heard`` keeps of each round's words only what the listener heard (a character
count the sink reports) and drops assistant messages left with neither words nor calls. It can be
tested with plain strings, without a server or a sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from voiceagent.conversation import Message


@dataclass(frozen=True, slots=True)
class Utterance:
    round: int
    text: str
    filler: bool  # ours (filler, fallback), not the model's words


@dataclass
class TurnTranscript:
    utterances: list[Utterance] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # to commit, in order
    _assistant_at: dict[int, int] = field(default_factory=dict)  # round -> its assistant message's index

    def say(self, round: int, text: str, *, filler: bool = False) -> Utterance:
        """Record a chunk to be spoken; a chunk spoken apart from the one before (a filler, another
        round) gets a space between them, as a reader expects."""
        last = self.utterances[-1] if self.utterances else None
        if last is not None and (last.round != round or last.filler or filler):
            if last.text and not last.text[-1].isspace() and not text[:1].isspace():
                text = " " + text
        utterance = Utterance(round, text, filler)
        self.utterances.append(utterance)
        return utterance

    def extend_last(self, text: str) -> Utterance:
        """The utterance being streamed (the last one) goes on with ``text``."""
        last = self.utterances[-1]
        self.utterances[-1] = extended = Utterance(last.round, last.text + text, last.filler)
        return extended

    def add_round(self, round: int, assistant: Message, tool_messages: Sequence[Message] = ()) -> None:
        """A round's assistant message and the tool messages answering its calls."""
        self._assistant_at[round] = len(self.messages)
        self.messages.append(assistant)
        self.messages.extend(tool_messages)

    @property
    def spoken_text(self) -> str:
        return "".join(u.text for u in self.utterances)

    @property
    def said_model_words(self) -> bool:
        return any(not u.filler for u in self.utterances)

    def heard_chars(self, played: int, *, stopped: bool) -> int:
        """How much of the spoken text was heard: all of it unless the turn was stopped."""
        total = sum(len(u.text) for u in self.utterances)
        return total if not stopped else max(0, min(played, total))

    def truncate_to_heard(self, heard: int, *, cut_round: int | None = None) -> None:
        """Keep what the listener heard of each round's words (the first ``heard`` characters of the
        spoken text). ``cut_round``: the round in flight when the turn stopped; the chunker may have held
        words of it that were never spoken, so its message is only what was heard even when every queued
        chunk played in full."""
        heard_by_round: dict[int, list[str]] = {}
        full_by_round: dict[int, bool] = {}
        position = 0
        for u in self.utterances:
            kept = u.text[: max(0, heard - position)]
            position += len(u.text)
            if u.filler:
                continue
            heard_by_round.setdefault(u.round, []).append(kept)
            full_by_round[u.round] = full_by_round.get(u.round, True) and kept == u.text
        for number, at in self._assistant_at.items():
            if number != cut_round and full_by_round.get(number, True):
                continue
            text = "".join(heard_by_round.get(number, [])).strip()
            self.messages[at]["content"] = text or None
        # An assistant message with neither words nor calls would be rejected by the server.
        self.messages = [
            m
            for m in self.messages
            if not (m["role"] == "assistant" and not m["content"] and not m.get("tool_calls"))
        ]
        self._assistant_at = {}  # indexes no longer hold after the filter; truncation happens once
