"""Turn streamed LLM text into speakable chunks for a TTS sink (pure: no IO, no async).

``SpeechChunker.push(delta)`` takes one content delta and returns the chunks that are now complete;
``flush()`` (end of stream, or a tool call started) returns everything held. Two stages, each a
per-character state machine, so the result never depends on how the text was split into deltas:

1. Markdown filter (``strip_markdown=True``). Only the markup characters are removed; all other
   characters, whitespace included, pass through unchanged:

   - ``*``/``_`` runs (``*``, ``**``, ``_``, ``__``, ...) are dropped, except: a run with whitespace
     (or start/end of text) on both sides is kept (``2 * 3``); a ``*`` run between two digits is kept
     (``2*3``); a ``_`` run between two letters/digits is kept (``snake_case``).
   - ``~~`` (2+ tildes) is dropped; a single ``~`` is kept.
   - Backticks are dropped everywhere. A run of 3+ backticks at line start (after optional
     indentation) is a code fence: it is dropped together with the rest of its line (the info string,
     not the newline). Inside a fenced block only backticks are dropped; ``*``, ``_``, ``#``... stay.
   - At line start (after optional spaces/tabs, which are kept): ``>`` quote markers are dropped
     (repeatable: ``> > x``); a run of 1-6 ``#`` followed by whitespace or end is dropped (``#tag``
     stays); a single ``-``, ``+`` or ``*`` followed by a space or tab is a bullet and is dropped
     (``-5`` stays); a line of 3+ ``-``, ``*`` or ``_`` and nothing else is a rule and is dropped.
     ``1.`` list numbers are kept (they are words).
   - ``[text](url)`` becomes ``text``; ``![alt](url)`` becomes ``alt``. Parentheses inside the url
     nest. Not a link (no ``(`` right after ``]``, a newline in the text, whitespace in the url, a new
     ``[`` in the text, or end of text) and the characters are kept as they came (the text part still
     filtered).

   The filter holds back only what is undecided: a marker run until the next character, ``!`` until
   the next character, link text until ``](``...``)`` resolves, a fence's info line until its newline.

2. Chunker, on the filtered text. A *word start* is a non-whitespace character after whitespace; it
   decides the boundary before it (a boundary is never decided on the character that ends the text so
   far: ``3.`` may become ``3.14``). A chunk always ends just before a word start, so it carries its
   trailing whitespace and never starts with whitespace (except the leading whitespace of the text).
   The word before the whitespace, with trailing ``"')]}»”’`` ignored, is a

   - *sentence end* if the whitespace holds a line break, or the word ends in ``!`` or ``?``, or in
     ``.`` unless it is an abbreviation (Dr. Mr. Mrs. Ms. St. Prof. Jr. Sr. vs. etc. e.g. i.e.,
     ``No.`` before a digit, dotted initials ``J.`` / ``U.S.`` / ``a.m.``, except ``a.m.``/``p.m.``
     before a capital) or a bare number at line start (``1.`` of a numbered list);
   - *clause boundary* if it is a sentence end, or ends in ``,`` ``;`` ``:`` ``—`` ``–``, or an
     ellipsis (``...`` / ``…``), or is a lone ``-``.

   ``3.14``, ``$29.99``, ``1,000``, ``10:30``, urls and emails contain no whitespace after their
   punctuation, so they are never boundaries.

   Rules, checked after every character:

   - First chunk (and again after each ``flush()``): once at least ``min_first_chars`` characters are
     held and a clause boundary has been decided, cut at the earliest clause boundary (time to first
     audio matters most). Sentence ends already decided behind it are cut too.
   - Later chunks: cut at every sentence end.
   - Whenever the held text, up to its last non-whitespace character, exceeds ``max_chars``: cut at
     the last clause boundary, else at the last word start, else (one word longer than
     ``max_chars``) inside the word after exactly ``max_chars`` characters. Hence every chunk
     satisfies ``len(chunk.strip()) <= max_chars``.

   ``flush()`` emits the held text unless it is whitespace only; whitespace-only text stays held and
   leads the next chunk, so nothing is ever lost and no chunk is empty or whitespace only.

Invariant: for any text and any split into deltas, ``"".join(chunks of all push() calls + flush())
== strip_markdown(text)`` (``== text`` with ``strip_markdown=False``), where a whitespace-only result
is ``""`` (nothing speakable is emitted). The chunk sequence itself is also independent of the split.
"""

from __future__ import annotations

import copy
import re
from typing import Final

__all__ = ["SpeechChunker", "strip_markdown"]

# Markdown filter modes.
_LINE_START: Final = 0
_INLINE: Final = 1
_DROP_LINE: Final = 2  # rest of a code-fence line (info string)

# Boundary kinds of a word start.
_NONE: Final = 0
_CLAUSE: Final = 1
_SENTENCE: Final = 2

_LINE_BREAKS: Final = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_CLOSERS: Final = "\"')]}»”’"
_OPENERS: Final = "\"'([{«“‘"
_ABBREVIATIONS: Final = frozenset(
    {"dr.", "mr.", "mrs.", "ms.", "st.", "prof.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e."}
)
_INITIALS: Final = re.compile(r"(?:[A-Za-z]\.){2,}|[A-Z]\.")
_CLAUSE_ENDS: Final = frozenset(",;:—–")
# Every character _MarkdownFilter._step treats specially in inline mode (outside code and links).
_MARKUP: Final = re.compile(r"[*_`~!\[\]\n]")
# Runs of whitespace and of non-whitespace, as str.isspace() sees them (so does \s for str patterns).
_RUNS: Final = re.compile(r"\s+|\S+")
_WORD_START: Final = re.compile(r"\s\S")
# In a delta: a character that can end a clause or a sentence with a word start after it (which decides
# that boundary), or a line break. A delta without a match (in a plain state) decides nothing: "Paris. "
# only ends a word, whose boundary the next word start decides.
_DECIDING: Final = re.compile(
    "[!?.\u2026,;:\u2014\u2013\\-].*?\\s\\S|[" + "".join(sorted(_LINE_BREAKS)) + "]", re.DOTALL
)


class _MarkdownFilter:
    """Incremental markdown remover; see the module docstring for the exact rules."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._out: list[str] = []
        self._mode = _LINE_START
        self._in_code = False
        self._prev: str | None = None  # previous raw character; None at start of text
        self._run_char: str | None = None  # pending run of one marker character
        self._run_len = 0
        self._run_line_start = False
        self._run_prev: str | None = None
        self._bang = False  # a "!" waiting to see whether "[" follows
        self._link: list[str] | None = None  # link text being collected
        self._link_image = False
        self._link_closed = False  # saw "]": waiting for "("
        self._url: list[str] | None = None
        self._url_depth = 0

    def feed(self, text: str) -> str:
        if text and self._plain(text):
            # Fast path (most deltas): inline, nothing pending, no character the filter acts on, so
            # every character would be emitted as is. Same output as the loop below, a fraction of the CPU.
            # (_out is always empty between calls.)
            self._prev = text[-1]
            return text
        for char in text:
            self._char(char)
        out = "".join(self._out)
        self._out.clear()
        return out

    def _plain(self, text: str) -> bool:
        return (
            self._mode == _INLINE
            and not self._in_code
            and self._run_char is None
            and not self._bang
            and self._link is None
            and _MARKUP.search(text) is None
        )

    def finish(self) -> str:
        """Resolve everything held as end of text; the filter is then fresh for a new text."""
        if self._run_char is not None:
            self._resolve_run(None)
        if self._bang:
            self._bang = False
            self._emit("!")
        if self._link is not None:
            self._abort_link()
        out = "".join(self._out)
        self._reset()
        return out

    def preview(self) -> str:
        """What ``finish()`` would return now, without changing anything."""
        clone = copy.copy(self)
        clone._out = list(self._out)
        clone._link = None if self._link is None else list(self._link)
        clone._url = None if self._url is None else list(self._url)
        return clone.finish()

    def _emit(self, text: str) -> None:
        if self._link is not None and not self._link_closed:
            self._link.append(text)
        else:
            self._out.append(text)

    def _abort_link(self) -> None:
        """Not a link after all: give back its characters as they came (text part filtered)."""
        assert self._link is not None
        text = ("![" if self._link_image else "[") + "".join(self._link)
        if self._link_closed:
            text += "]"
            if self._url is not None:
                text += "(" + "".join(self._url)
        self._link = None
        self._link_closed = False
        self._url = None
        self._out.append(text)

    def _start_run(self, char: str, line_start: bool) -> None:
        self._run_char = char
        self._run_len = 1
        self._run_line_start = line_start
        self._run_prev = self._prev

    def _char(self, char: str) -> None:
        self._step(char)
        self._prev = char

    def _step(self, char: str) -> None:
        if self._run_char is not None:
            if char == self._run_char:
                self._run_len += 1
                return
            self._resolve_run(char)
        if self._bang:
            self._bang = False
            if char == "[":
                if self._link is not None:
                    self._abort_link()
                self._link, self._link_image = [], True
                return
            self._emit("!")
        if self._link is not None and self._link_closed:
            if self._url is None:
                if char == "(":
                    self._url, self._url_depth = [], 0
                    return
                self._abort_link()
            elif char.isspace():
                self._abort_link()
            else:
                if char == ")" and self._url_depth == 0:
                    text = "".join(self._link)
                    self._link, self._link_closed, self._url = None, False, None
                    self._out.append(text)
                    return
                self._url_depth += (char == "(") - (char == ")")
                self._url.append(char)
                return
        if self._mode == _DROP_LINE:
            if char == "\n":
                self._mode = _LINE_START
                self._emit(char)
            return
        if self._mode == _LINE_START:
            if char in " \t":
                self._emit(char)
                return
            if self._in_code:
                if char == "`":
                    self._start_run(char, True)
                    return
            elif char == ">":
                return
            elif char in "#-+*_`~":
                self._start_run(char, True)
                return
            self._mode = _INLINE
        if char == "\n":
            if self._link is not None:
                self._abort_link()
            self._mode = _LINE_START
            self._emit(char)
        elif self._in_code:
            if char == "`":
                self._start_run(char, False)
            else:
                self._emit(char)
        elif char in "*_`~":
            self._start_run(char, False)
        elif char == "!":
            self._bang = True
        elif char == "[":
            if self._link is not None:
                self._abort_link()
            self._link, self._link_image = [], False
        elif char == "]" and self._link is not None:
            self._link_closed = True
        else:
            self._emit(char)

    def _resolve_run(self, nxt: str | None) -> None:
        """Decide the pending marker run now that the character after it (None: end) is known."""
        char, count, line_start, prev = self._run_char, self._run_len, self._run_line_start, self._run_prev
        assert char is not None
        self._run_char = None
        if line_start:
            self._mode = _INLINE
        if char == "`":
            if line_start and count >= 3:
                self._in_code = not self._in_code
                self._mode = _DROP_LINE
            return
        next_ws = nxt is None or nxt.isspace()
        prev_ws = prev is None or prev.isspace()
        line_end = nxt is None or nxt == "\n"
        if char == "#":
            drop = count <= 6 and next_ws
        elif char in "-+":
            drop = (count == 1 and nxt in (" ", "\t")) or (char == "-" and count >= 3 and line_end)
        elif char == "~":
            drop = count >= 2
        elif line_start and char == "*" and count == 1 and nxt in (" ", "\t"):
            drop = True  # bullet
        elif line_start and count >= 3 and line_end:
            drop = True  # horizontal rule
        elif prev_ws and next_ws:
            drop = False  # "2 * 3", a lone "_"
        elif char == "*" and prev is not None and nxt is not None and prev.isdigit() and nxt.isdigit():
            drop = False
        elif char == "_" and prev is not None and nxt is not None and prev.isalnum() and nxt.isalnum():
            drop = False
        else:
            drop = True
        if not drop:
            self._emit(char * count)


def strip_markdown(text: str) -> str:
    """The text a ``SpeechChunker`` emits, in total, for ``text`` given at once (the reference).

    Markdown removed per the module docstring; ``""`` when nothing but whitespace remains.
    """
    md = _MarkdownFilter()
    out = md.feed(text) + md.finish()
    return out if out.strip() else ""


def _classify(word: str, newline: bool, nxt: str, line_start: bool) -> int:
    """The boundary kind after ``word``, which is followed by whitespace and then ``nxt``."""
    if newline:
        return _SENTENCE
    core = word.rstrip(_CLOSERS)
    if not core:
        return _NONE
    last = core[-1]
    if last in "!?":
        return _SENTENCE
    if core.endswith("...") or last == "…":
        return _CLAUSE
    if last == ".":
        bare = core.lstrip(_OPENERS)
        lower = bare.lower()
        if lower in _ABBREVIATIONS or (lower == "no." and nxt.isdigit()):
            return _NONE
        if _INITIALS.fullmatch(bare):
            return _SENTENCE if lower in ("a.m.", "p.m.") and nxt.isupper() else _NONE
        if line_start and bare[:-1].isdigit():
            return _NONE  # "1." of a numbered list
        return _SENTENCE
    if last in _CLAUSE_ENDS or core == "-":
        return _CLAUSE
    return _NONE


class SpeechChunker:
    """Incremental text -> speakable chunks; rules and invariant in the module docstring."""

    def __init__(
        self, *, max_chars: int = 140, min_first_chars: int = 8, strip_markdown: bool = True
    ) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        if min_first_chars < 0:
            raise ValueError(f"min_first_chars must be >= 0, got {min_first_chars}")
        self.max_chars = max_chars
        self.min_first_chars = min_first_chars
        self._markdown = _MarkdownFilter() if strip_markdown else None
        self._held: list[str] = []  # characters of filtered text not yet emitted
        self._start = 0  # absolute index (in the filtered text) of _held[0]
        self._pos = 0  # absolute index of the next character
        self._content_end = 0  # absolute index just after the last non-whitespace character
        self._word_at_line_start = True  # the last word began a line
        self._prev_ws = True
        self._ws_newline = False  # the current whitespace run holds a line break
        self._at_line_start = True
        # Held boundaries: (absolute word-start index, _CLAUSE or _SENTENCE). Plain word starts are not
        # kept: only a chunk over max_chars needs one, and it finds the last one in the held text.
        self._cands: list[tuple[int, int]] = []
        self._first_boundary: int | None = None  # earliest held clause boundary (first-chunk rule)
        self._first = True
        self._out: list[str] = []

    @property
    def pending(self) -> str:
        """Text held back, not yet emitted (as it would be emitted)."""
        tail = self._markdown.preview() if self._markdown is not None else ""
        return "".join(self._held) + tail

    def push(self, delta: str) -> list[str]:
        """Feed one content delta; return the chunks now complete (often [])."""
        if not isinstance(delta, str):
            raise TypeError(f"delta must be str, got {type(delta).__name__}")
        text = self._markdown.feed(delta) if self._markdown is not None else delta
        self._feed(text)
        if not self._out:
            return []
        out, self._out = self._out, []
        return out

    def _feed(self, text: str) -> None:
        """``_feed_chars``, with two shortcuts that give the same result (a property test holds them to it).

        1. A whole delta that cannot decide or force a cut is appended as is: the first-chunk rule is not
           armed, it stays within ``max_chars``, it holds no line break and no character that can end a
           clause or a sentence before one of its word starts, the word before it ends in a letter or
           digit, and the text is not at a line start (where ``1.`` is a list number). Any word starts
           in it are plain ones; a boundary its last word may end is decided by the next word start.
        2. Otherwise a run at a time: only a word start (the first character of a run of non-whitespace
           after whitespace) decides a boundary, so
           - a whitespace run only extends the held text; the first-chunk rule, checked after each of
             its characters, fires at most once and cuts at the same place whenever it fires, so it is
             checked once after the run;
           - the rest of a word run extends the held text unless the first-chunk rule is armed or the
             run would pass ``max_chars``; then it goes through ``_char``.
        """
        if not text:
            return
        start = self._start
        if (
            _DECIDING.search(text) is None
            and not (self._first and self._first_boundary is not None)
            and not self._at_line_start
            and not self._ws_newline
            and self._pos + len(text) - start <= self.max_chars
            and (self._content_end <= start or self._held[self._content_end - start - 1].isalnum())
        ):
            at = self._pos
            self._held.extend(text)
            self._pos += len(text)
            content = len(text.rstrip())
            if content:
                if self._word_at_line_start and (
                    (self._prev_ws and not text[0].isspace()) or _WORD_START.search(text, 0, content)
                ):
                    self._word_at_line_start = False  # a new word, not at a line start
                self._content_end = at + content
            self._prev_ws = text[-1].isspace()
            return
        for run in _RUNS.findall(text):
            if run[0].isspace():
                self._held.extend(run)
                self._pos += len(run)
                if not _LINE_BREAKS.isdisjoint(run):
                    self._ws_newline = self._at_line_start = True
                self._prev_ws = True
                if self._first:
                    self._first_rule()
                continue
            if self._prev_ws:
                self._char(run[0])
                run = run[1:]
                if not run:
                    continue
            if (self._first and self._first_boundary is not None) or (
                self._pos + len(run) - self._start > self.max_chars
            ):
                for char in run:
                    self._char(char)
            else:
                self._held.extend(run)
                self._pos += len(run)
                self._content_end = self._pos

    def _feed_chars(self, text: str) -> None:
        """The reference: one character at a time."""
        for char in text:
            self._char(char)

    def flush(self) -> list[str]:
        """End of stream or a tool call started: emit everything held (whitespace only stays held).

        The next push starts a new text: markdown state and the first-chunk rule are reset.
        """
        if self._markdown is not None:
            self._feed(self._markdown.finish())
        if self._content_end > self._start:
            self._cut(self._pos)
        self._first = True
        self._cands.clear()
        self._first_boundary = None
        self._prev_ws = True
        self._ws_newline = False
        self._at_line_start = True
        out, self._out = self._out, []
        return out

    def _cut(self, at: int) -> None:
        """Emit held text before absolute index ``at``."""
        count = at - self._start
        self._out.append("".join(self._held[:count]))
        del self._held[:count]
        self._start = at
        self._first = False
        if self._cands:
            self._cands = [cand for cand in self._cands if cand[0] > at]

    def _last_word_start(self) -> int | None:
        """The absolute index of the last held word start with text before it, if any."""
        held = self._held
        for i in range(len(held) - 1, 0, -1):
            if held[i - 1].isspace() and not held[i].isspace():
                if any(not char.isspace() for char in held[: i - 1]):
                    return self._start + i
                return None
        return None

    def _char(self, char: str) -> None:
        index = self._pos
        self._pos += 1
        held = self._held
        held.append(char)
        if char.isspace():
            if char in _LINE_BREAKS:
                self._ws_newline = self._at_line_start = True
            self._prev_ws = True
            if self._first:
                self._first_rule()
            return
        kind = _NONE
        if self._prev_ws:
            end = self._content_end - self._start
            # (A word ending in a letter or digit ends nothing: it is not even built.)
            if end > 0 and (self._ws_newline or not held[end - 1].isalnum()):
                begin = end - 1
                while begin > 0 and not held[begin - 1].isspace():
                    begin -= 1
                kind = _classify("".join(held[begin:end]), self._ws_newline, char, self._word_at_line_start)
                if kind != _NONE:
                    self._cands.append((index, kind))
                    if self._first_boundary is None:
                        self._first_boundary = index
            self._word_at_line_start = self._at_line_start
            self._at_line_start = self._ws_newline = self._prev_ws = False
        content_before = self._content_end > self._start
        self._content_end = index + 1
        if self._first:
            self._first_rule()
        elif kind == _SENTENCE:
            self._cut(index)
        while self._content_end - self._start > self.max_chars:
            at = self._cands[-1][0] if self._cands else self._last_word_start()
            if at is None:
                if not content_before:
                    break  # only leading whitespace before this character: nothing to emit yet
                at = index  # one word longer than max_chars
            self._cut(at)
            content_before = self._content_end - 1 > self._start

    def _first_rule(self) -> None:
        if self._first_boundary is None or len(self._held) < self.min_first_chars:
            return
        self._cut(self._first_boundary)
        self._first_boundary = None
        # Sentence ends decided while the first chunk waited are cut as usual.
        for pos, kind in list(self._cands):
            if kind == _SENTENCE:
                self._cut(pos)
