"""An independent reference for SpeechChunker's chunking rules (the module docstring's stage 2).

Written from the spec, sharing no code with ``voiceagent.chunker``: its own punctuation sets (straight
from the ``regex`` package's Unicode properties, not the generated table), its own word and abbreviation
handling, and the naive per-character machine the spec describes (held text as a plain string, every
rule re-checked after every character by scanning). It is slow on purpose; property tests compare the
real chunker with it on small texts.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import regex

NONE, CLAUSE, SENTENCE = 0, 1, 2


@cache
def is_closer(char: str) -> bool:
    return char in "\"'" or regex.match(r"[\p{Pe}\p{Pf}]", char) is not None


@cache
def is_opener(char: str) -> bool:
    return char in "\"'" or regex.match(r"[\p{Ps}\p{Pi}]", char) is not None


LINE_BREAKS = set("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
ABBREVIATIONS = "dr mr mrs ms st prof jr sr vs etc e.g i.e".split()


@cache
def is_sentence_terminal(char: str) -> bool:
    return regex.match(r"\p{Sentence_Terminal}", char) is not None


@cache
def is_clause_mark(char: str) -> bool:
    if char in "—–":
        return True
    if is_sentence_terminal(char) or regex.match(r"\p{Terminal_Punctuation}", char) is None:
        return False
    return re.search(r"\b(COMMA|COLON|SEMICOLON)\b", unicodedata.name(char, "")) is not None


def is_punct(char: str) -> bool:
    """A character of a punctuation run: terminals, clause marks, closers, '-', '…'."""
    return is_closer(char) or char in "-…" or is_sentence_terminal(char) or is_clause_mark(char)


def script_kind(char: str) -> int:
    """Script marks (non-ASCII punctuation from Unicode, not the dashes) need no space after them."""
    if char.isascii() or char in "—–":
        return NONE
    if is_sentence_terminal(char):
        return SENTENCE
    return CLAUSE if is_clause_mark(char) else NONE


def word_kind(word: str, newline: bool, nxt: str, line_start: bool) -> int:
    """The boundary after ``word`` (whitespace follows it, then ``nxt``), per the spec's list."""
    if newline:
        return SENTENCE
    core = word
    while core and is_closer(core[-1]):
        core = core[:-1]
    if not core:
        return NONE
    last = core[-1]
    if last != "." and is_sentence_terminal(last):
        return SENTENCE
    if last == "…" or core[-3:] == "...":
        return CLAUSE
    if last == ".":
        bare = core
        while bare and is_opener(bare[0]):
            bare = bare[1:]
        lowered = bare.lower()
        if lowered[:-1] in ABBREVIATIONS:
            return NONE
        if lowered == "no." and nxt.isdigit():
            return NONE
        if re.fullmatch(r"([A-Za-z]\.)([A-Za-z]\.)+", bare) or re.fullmatch(r"[A-Z]\.", bare):
            if lowered in ("a.m.", "p.m.") and nxt.isupper():
                return SENTENCE
            return NONE
        if line_start and bare[:-1].isdigit():
            return NONE
        return SENTENCE
    if is_clause_mark(last) or core == "-":
        return CLAUSE
    return NONE


def reference_chunks(text: str, max_chars: int, min_first_chars: int) -> list[str]:
    """The chunks of one text (pushed, then flushed), one character at a time."""
    return [chunk for _, chunk in reference_timeline(text, max_chars, min_first_chars)]


def reference_timeline(text: str, max_chars: int, min_first_chars: int) -> list[tuple[int, str]]:
    """The chunks of one text with when each is out: the index of the character whose arrival cuts
    it, or ``len(text)`` for the flush at the end."""
    chunks: list[str] = []
    times: list[int] = []
    now = 0
    held = ""  # not yet emitted
    decided: list[tuple[int, int]] = []  # (index into held, kind) of boundaries decided, not yet cut
    first = True

    def cut(at: int) -> None:
        nonlocal held, decided, first
        chunks.append(held[:at])
        times.append(now)
        held = held[at:]
        decided = [(pos - at, kind) for pos, kind in decided if pos > at]
        first = False

    def content_length() -> int:  # the held text up to its last non-whitespace character
        return len(held.rstrip())

    for i, char in enumerate(text):
        now = i
        held += char
        here = len(held) - 1
        kind = NONE
        if not char.isspace() and i > 0:
            if text[i - 1].isspace():
                # A word start: the word before the whitespace, its part still held.
                stripped = held[:here].rstrip()
                if stripped:
                    begin = len(stripped)
                    while begin > 0 and not stripped[begin - 1].isspace():
                        begin -= 1
                    word = stripped[begin:]
                    newline = any(c in LINE_BREAKS for c in held[len(stripped) : here])
                    # The word's real start in the text (a part of it may have been emitted already).
                    w = i - (here - len(stripped)) - len(word)
                    while w > 0 and not text[w - 1].isspace():
                        w -= 1
                    before = text[:w]
                    rest = before.rstrip()
                    line_start = not rest or any(c in LINE_BREAKS for c in before[len(rest) :])
                    kind = word_kind(word, newline, char, line_start)
            elif not is_punct(char) and not char.isdigit():
                # Right after a run of punctuation holding a script mark: no space needed.
                j, best = i - 1, NONE
                while j >= 0 and not text[j].isspace() and is_punct(text[j]):
                    best = max(best, script_kind(text[j]))
                    j -= 1
                kind = best
        if kind != NONE:
            decided.append((here, kind))
        if first:
            if decided and len(held) >= min_first_chars:
                cut(decided[0][0])
                # Sentence ends decided while the first chunk waited are cut too.
                while sentences := [pos for pos, k in decided if k == SENTENCE]:
                    cut(sentences[0])
        elif kind == SENTENCE:
            cut(here)
        if char.isspace():
            continue
        while content_length() > max_chars:
            here = len(held) - 1
            at: int | None = decided[-1][0] if decided else None
            if at is None:
                starts = [
                    k
                    for k in range(1, len(held))
                    if held[k - 1].isspace() and not held[k].isspace() and held[: k - 1].strip()
                ]
                at = starts[-1] if starts else None
            if at is None:
                if not held[:here].strip():
                    break  # only leading whitespace before this character
                at = here
            cut(at)
    if held.strip():
        chunks.append(held)
        times.append(len(text))
    return list(zip(times, chunks, strict=True))
