"""Turn streamed LLM text into speakable chunks for a TTS sink (pure: no IO, no async).

``SpeechChunker.push(delta)`` takes one content delta and returns the chunks that are now complete;
``flush()`` (end of stream, or a tool call started) returns everything held. Two stages, each
specified as a per-character state machine, so the result never depends on how the text was split
into deltas. Both run in time linear in the text, however it is split and whatever its shape: the
scanning is done by the regex engine, and Python-level steps happen only at markup characters and at
the few characters that can decide a boundary (``tests/chunker_reference.py`` is the per-character
machine, written independently, that property tests hold the chunker to). The usual token, a word with
its space, costs one regex match and an append; a word's last token (``w7. ``, `` today.``, ``,``) and the
word start after it cost a few dozen Python steps more (``push``'s fast, tail and pending paths).

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

2. Chunker, on the filtered text. Punctuation comes from Unicode (``voiceagent/_punctuation.py``,
   generated from Unicode 18.0.0 by ``tools/gen_punctuation.py``): *sentence terminals* are the
   Sentence_Terminal characters (``. ! ?``; the danda ``।`` and double danda ``॥`` of Devanagari,
   Bengali, Gurmukhi, Odia...; the dandas of Brahmi, Sharada, Modi...; CJK ``。！？｡``; Arabic ``؟``;
   Urdu ``۔``; Armenian ``։``; Ethiopic ``።``; Myanmar ``။``; Khmer ``។``...). *Clause marks* are
   ``—`` ``–`` and the Terminal_Punctuation commas, colons and semicolons (``, ; :``, Arabic ``، ؛``,
   CJK ``，、；：``...). *Closers* are ``"`` ``'`` and the closing brackets and final quotes (``) ] »
   ” 」 』 ）``...). *Script marks* are the sentence terminals and clause marks outside ASCII, except
   the dashes. *Punctuation* here means any of these, ``-`` or ``…``.

   A boundary is decided on a character and is *before* it; it is never decided on the character that
   ends the text so far (``3.`` may become ``3.14``, ``。`` may be followed by ``」``). Two kinds of
   character decide:

   - A *word start*, a non-whitespace character after whitespace. Its chunk carries the whitespace.
     The word before the whitespace (the part of it not yet emitted), with trailing closers ignored, is

     - a *sentence end* if the whitespace holds a line break, or the word ends in a sentence terminal
       other than ``.``, or in ``.`` unless it is an abbreviation (Dr. Mr. Mrs. Ms. St. Prof. Jr. Sr.
       vs. etc. e.g. i.e., ``No.`` before a digit, dotted initials ``J.`` / ``U.S.`` / ``a.m.``, except
       ``a.m.``/``p.m.`` before a capital) or a bare number at line start (``1.`` of a numbered list);
     - a *clause boundary* if it is a sentence end, or ends in a clause mark, or an ellipsis (``...`` /
       ``…``), or is a lone ``-``.

   - *No space needed after a script mark*: Chinese and Japanese put no space after ``。``, and LLMs
     often write Hindi ``है।वह`` or Urdu ``ہے۔وہ``. A character right after a run of punctuation
     (no whitespace in between) that holds a script mark decides a boundary before it, unless it is
     punctuation itself (the run goes on: ``？！」``) or a digit (``３．１４``, the verse number of
     ``॥१॥``): a sentence end if the run holds a script sentence terminal, else a clause boundary.

   ASCII ``. ! ? , ; :`` and the dashes still need whitespace after them: ``3.14``, ``$29.99``,
   ``1,000``, ``10:30``, ``well—yes``, urls and emails are never boundaries. So a chunk ends just
   before a word start (carrying its trailing whitespace) or right after a script mark and its closers;
   it never starts with whitespace (except the leading whitespace of the text).

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
from collections.abc import Iterable
from typing import Final

from voiceagent._punctuation import CLAUSE_MARKS, CLOSERS, OPENERS, SENTENCE_TERMINALS

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
_CLOSERS: Final = CLOSERS
_OPENERS: Final = OPENERS
_ABBREVIATIONS: Final = frozenset(
    {"dr.", "mr.", "mrs.", "ms.", "st.", "prof.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e."}
)
_INITIALS: Final = re.compile(r"(?:[A-Za-z]\.){2,}|[A-Z]\.")
# Every word ending in "." that an abbreviation, "No." or initials rule of _classify can take (more with
# it: re's IGNORECASE matches whatever lower() maps to these letters, and then some).
_DOT_RULES: Final = re.compile(
    "(?i:" + "|".join(re.escape(a) for a in sorted(_ABBREVIATIONS | {"no."})) + ")|" + _INITIALS.pattern
).fullmatch
_SENTENCE_ENDS: Final = frozenset(SENTENCE_TERMINALS) - {"."}  # "." has rules of its own
_CLAUSE_ENDS: Final = frozenset(CLAUSE_MARKS) | {"—", "–"}
# Script marks end a sentence or clause with no whitespace after them (see the module docstring).
_SCRIPT_KIND: Final = {c: _CLAUSE for c in CLAUSE_MARKS if not c.isascii()} | {
    c: _SENTENCE for c in SENTENCE_TERMINALS if not c.isascii()
}
# Every character that can matter at the end of a word: punctuation of both kinds, closers, "-", "…".
_ENDERS: Final = frozenset(_CLOSERS) | frozenset(SENTENCE_TERMINALS) | _CLAUSE_ENDS | {"-", "…"}


def _class(chars: Iterable[str]) -> str:
    """A regex matching exactly one of ``chars`` (ranges of code points: a long class is slow in re)."""
    codes = sorted({ord(c) for c in chars})
    spans: list[list[int]] = []
    for code in codes:
        if spans and code == spans[-1][1] + 1:
            spans[-1][1] = code
        else:
            spans.append([code, code])
    parts = [re.escape(chr(a)) + ("" if a == b else "-" + re.escape(chr(b))) for a, b in spans]
    bmp = [part for part, (a, _) in zip(parts, spans, strict=True) if a < 0x10000]
    astral = [part for part, (a, _) in zip(parts, spans, strict=True) if a >= 0x10000]
    return "|".join(f"[{''.join(group)}]" for group in (bmp, astral) if group)


def _screen(chars: Iterable[str]) -> re.Pattern[str]:
    """A fast, conservative search for ``chars``: it also matches every character past U+FFFF."""
    bmp = sorted({c for c in chars if ord(c) < 0x10000})
    return re.compile("[" + "".join(re.escape(c) for c in bmp) + "\U00010000-\U0010ffff]")


# The fast path's screens (conservative), then exact searches for _scan.
_ENDER_OR_BREAK_SCREEN: Final = _screen(_ENDERS | _LINE_BREAKS)
_SCRIPT_OR_BREAK_SCREEN: Final = _screen(set(_SCRIPT_KIND) | _LINE_BREAKS)
_ENDERS_RUN: Final = re.compile(f"(?:{_class(_ENDERS)})+")


def _event_pattern(enders: str, breaks: str, plain_enders: str, marks: str) -> re.Pattern[str]:
    """Where the next event can be (see SpeechChunker._next_event): a run of _ENDERS followed by
    whitespace, a line break, or a run holding a script mark. Each run is tried once, from its start
    (the lookbehind), so a search is linear; the lookahead skips letters and spaces fast."""
    return re.compile(
        f"(?=[^\\w \\t])(?:(?<!{enders})(?:{enders})++(?=\\s)|{breaks}"
        f"|(?<!{enders})(?:{plain_enders})*+(?:{marks}))"
    )


def _bmp_class(chars: Iterable[str]) -> str:
    return "[" + "".join(re.escape(c) for c in sorted(c for c in chars if ord(c) < 0x10000)) + "]"


_PLAIN_ENDERS: Final = _ENDERS - set(_SCRIPT_KIND)
# Exact for any text; and a faster one, exact for text without characters past U+FFFF.
_EVENT_ANY: Final = _event_pattern(
    _class(_ENDERS), _class(_LINE_BREAKS), _class(_PLAIN_ENDERS), _class(_SCRIPT_KIND)
)
_EVENT_BMP: Final = _event_pattern(
    _bmp_class(_ENDERS), _class(_LINE_BREAKS), _bmp_class(_PLAIN_ENDERS), _bmp_class(_SCRIPT_KIND)
)
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")
_SCRIPT_SENTENCE: Final = re.compile(_class(c for c, kind in _SCRIPT_KIND.items() if kind == _SENTENCE))
_SCRIPT_CLAUSE: Final = re.compile(_class(c for c, kind in _SCRIPT_KIND.items() if kind == _CLAUSE))
_LINE_BREAK: Final = re.compile(_class(_LINE_BREAKS))
# Every character _MarkdownFilter._step treats specially in inline mode (outside code and links), and
# inside inline code.
_MARKUP: Final = re.compile(r"[*_`~!\[\]\n]")
_CODE_MARKUP: Final = re.compile(r"[`\n]")


def _escaped(chars: Iterable[str]) -> str:
    return "".join(re.escape(c) for c in sorted(chars))


# push()'s fast path and tail path (see SpeechChunker.push). A plain character: none the markdown filter
# acts on inline, no _ENDERS character, no line break, nothing past U+FFFF. A tail: plain characters, then
# a run of _ENDERS (without "]", markup; a "!" only before another character, since the filter holds a
# last "!"; script marks only before whitespace, where their own rule does not apply), then whitespace
# without line breaks.
_INLINE_MARKUP: Final = frozenset("*_`~![]\n")  # what _MARKUP matches
# (Only characters up to U+FFFF listed: one past it would make re test the class range by range.)
_PLAIN_CHAR: Final = (
    f"[^{_escaped(c for c in _ENDERS | _LINE_BREAKS | _INLINE_MARKUP if ord(c) < 0x10000)}"
    "\U00010000-\U0010ffff]"
)
# Not a plain character (a search for one is faster in re than a match of plain ones).
_SPECIAL: Final = re.compile(_PLAIN_CHAR.replace("[^", "[", 1)).search
_TAIL_ENDERS: Final = _escaped(c for c in _ENDERS - set(_SCRIPT_KIND) - set("!]") if ord(c) < 0x10000)
_BLANK: Final = f"[^\\S{_escaped(_LINE_BREAKS)}]"
_SCRIPT_MARKS: Final = _escaped(c for c in _SCRIPT_KIND if ord(c) < 0x10000)
_TAIL: Final = re.compile(
    f"{_PLAIN_CHAR}*(?:[{_TAIL_ENDERS}!]*[{_TAIL_ENDERS}]{_BLANK}*|[{_TAIL_ENDERS}!{_SCRIPT_MARKS}]+{_BLANK}+)"
).fullmatch
# A tail ending in a run with a script mark: the next character may decide by the script-mark rule.
_MARK_TAIL: Final = re.compile(
    f"{_PLAIN_CHAR}*[{_TAIL_ENDERS}!{_SCRIPT_MARKS}]*[{_TAIL_ENDERS}{_SCRIPT_MARKS}]"
).fullmatch
# Taken off the fast path's room (and _room0) to close it while keeping what it appended for _sync to
# derive (the pending path).
_SHUT: Final = 1 << 62
_NOT_INDENT: Final = re.compile(r"[^ \t]")
_URL_SPECIAL: Final = re.compile(r"[()\s]")
# Whitespace as str.isspace() sees it (so does \s for str patterns).
_NONWS: Final = re.compile(r"\S")
_LAST_NONWS: Final = re.compile(r"\S\s*\Z")
_WORD_START: Final = re.compile(r"\s\S")
_WORD_START_BACKWARDS: Final = re.compile(r"\S\s")  # a word start, in reversed text


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
        i, end = 0, len(text)
        blocks: list[str] = []  # the output so far, joined now and then (a list of pieces is 60 bytes each)
        while i < end:
            if len(self._out) >= 1024:
                blocks.append("".join(self._out))
                self._out.clear()
            # Plain stretches in bulk (inline text, inline code, a fence's info line): only the
            # characters the filter acts on go through _char, so any text costs time linear in its size.
            if self._url is not None and self._run_char is None and not self._bang:
                # Inside a link's url: only parentheses and whitespace matter.
                found = _URL_SPECIAL.search(text, i)
                j = end if found is None else found.start()
                if j > i:
                    self._url.append(text[i:j])
                    self._prev = text[j - 1]
                    i = j
                    continue
            elif self._run_char is None and not self._bang and (self._link is None or not self._link_closed):
                if self._mode == _INLINE:
                    found = (_CODE_MARKUP if self._in_code else _MARKUP).search(text, i)
                    j = end if found is None else found.start()
                    if j > i:
                        self._emit(text[i:j])
                        self._prev = text[j - 1]
                        i = j
                        continue
                elif self._mode == _LINE_START and text[i] in " \t":
                    found = _NOT_INDENT.search(text, i)
                    j = end if found is None else found.start()
                    self._emit(text[i:j])
                    self._prev = text[j - 1]
                    i = j
                    continue
                elif self._mode == _DROP_LINE:
                    j = text.find("\n", i)
                    j = end if j < 0 else j
                    if j > i:
                        self._prev = text[j - 1]
                        i = j
                        continue
            self._char(text[i])
            i += 1
        blocks.extend(self._out)
        self._out.clear()
        return "".join(blocks)

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


def _classify(word: str, newline: bool, nxt: str | None, line_start: bool) -> int:
    """The boundary kind after ``word``, which is followed by whitespace and then ``nxt``; with ``nxt``
    None (not known yet), -1 where the kind depends on it."""
    if newline:
        return _SENTENCE
    core = word.rstrip(_CLOSERS)
    if not core:
        return _NONE
    last = core[-1]
    if last == ".":  # ("." is not in _SENTENCE_ENDS)
        if core.endswith("..."):
            return _CLAUSE
        bare = core.lstrip(_OPENERS)
        if not _DOT_RULES(bare):  # the usual word: a sentence end, or a list number
            return _NONE if line_start and bare[:-1].isdigit() else _SENTENCE
        lower = bare.lower()
        if lower in _ABBREVIATIONS:
            return _NONE
        if lower == "no.":
            if nxt is None:
                return -1
            if nxt.isdigit():
                return _NONE
        if _INITIALS.fullmatch(bare):
            if lower not in ("a.m.", "p.m."):
                return _NONE
            if nxt is None:
                return -1
            return _SENTENCE if nxt.isupper() else _NONE
        if line_start and bare[:-1].isdigit():
            return _NONE  # "1." of a numbered list
        return _SENTENCE
    if last in _SENTENCE_ENDS:
        return _SENTENCE
    if last in _CLAUSE_ENDS or last == "…" or core == "-":
        return _CLAUSE
    return _NONE


def _run_kind(text: str, pos: int, endpos: int, kind: int) -> int:
    """``kind`` raised by the script marks in ``text[pos:endpos]`` (a run of _ENDERS characters)."""
    if kind != _SENTENCE and _SCRIPT_SENTENCE.search(text, pos, endpos) is not None:
        return _SENTENCE
    if kind == _NONE and _SCRIPT_CLAUSE.search(text, pos, endpos) is not None:
        return _CLAUSE
    return kind


class SpeechChunker:
    """Incremental text -> speakable chunks; rules and invariant in the module docstring."""

    def __init__(
        self, *, max_chars: int = 140, min_first_chars: int = 8, strip_markdown: bool = True
    ) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        if min_first_chars < 0:
            raise ValueError(f"min_first_chars must be >= 0, got {min_first_chars}")
        # Read-only (the properties below): the fast path keeps a room count computed from them.
        self._max_chars = max_chars
        self._min_first_chars = min_first_chars
        self._markdown = _MarkdownFilter() if strip_markdown else None
        # Filtered text not yet emitted: _held, then the deltas the fast path appended since (joined
        # only when a delta needs the text itself, so a stream of small deltas never copies it).
        self._held = ""
        self._parts: list[str] = []
        self._start = 0  # absolute index (in the filtered text) of the first held character
        self._pos = 0  # absolute index of the next character
        self._content_start = -1  # absolute index of the first held non-whitespace character, or -1
        self._content_end = 0  # absolute index just after the last non-whitespace character
        self._last_content = ""  # the last non-whitespace character
        self._word_at_line_start = True  # the last word began a line
        self._prev_ws = True
        self._ws_newline = False  # the current whitespace run holds a line break
        self._at_line_start = True
        self._mark = _NONE  # kind of the script marks in the run of _ENDERS just before _pos
        # Held boundaries: (absolute index, _CLAUSE or _SENTENCE). Plain word starts are not kept: only a
        # chunk over max_chars needs one, and it finds the last one in the held text.
        self._cands: list[tuple[int, int]] = []
        self._first_boundary: int | None = None  # earliest held clause boundary (first-chunk rule)
        self._first = True
        self._out: list[str] = []
        self._events = _EVENT_BMP  # the event search for the text being scanned
        # push()'s fast path (see push): open while _room >= 0, the characters it may still take as is.
        # _room0 is _room when the fields below _pos were last exact; _sync() brings them up to date.
        self._room = self._room0 = -1
        self._append = self._parts.append
        # The pending path: the next word start ends a sentence (see push); with _pending_mark, so does
        # the next character if it is no digit (the held text ends in a run with a script mark).
        self._pending_end = False
        self._pending_mark = False
        # A clause boundary at the next word start at or after this absolute index, not yet in _cands
        # (-1: none); _sync records it.
        self._clause_at = -1

    @property
    def max_chars(self) -> int:
        """The most characters a chunk holds (whitespace around it aside)."""
        return self._max_chars

    @property
    def min_first_chars(self) -> int:
        """The characters held before the first chunk may be cut at a clause boundary."""
        return self._min_first_chars

    @property
    def pending(self) -> str:
        """Text held back, not yet emitted (as it would be emitted)."""
        self._sync()
        tail = self._markdown.preview() if self._markdown is not None else ""
        return self._held + "".join(self._parts) + tail

    @property
    def held(self) -> str:
        """Filtered text held back, not yet emitted (without what the markdown filter still holds):
        the next chunk starts with it. A sink that takes text as it is written gets it early."""
        return self._joined()

    def push(self, delta: str) -> list[str]:
        """Feed one content delta; return the chunks now complete (often [])."""
        # The fast path (most tokens). It is open (_room >= 0) only in a state where a plain delta (no
        # _SPECIAL character) emits nothing and changes nothing but the held text and the fields _sync()
        # derives from it: inline markdown with nothing pending (the filter passes such a delta as is),
        # the first-chunk rule not armed, not at a line start or in a whitespace run with a line break,
        # held text with content, room for the delta within max_chars, and a last word that is no
        # boundary: its last character is not in _ENDERS, or its kind is known to be _NONE, or _CLAUSE
        # (not in the first chunk: only recorded, lazily, see _clause_at), no script mark after it. A
        # word start in the delta then decides that, any later one ends a word without punctuation, and
        # the held text stays within max_chars. The next word start after a sentence end cuts: the
        # pending path (_resolve).
        try:
            if not _SPECIAL(delta):
                room = self._room - len(delta)
                if room >= 0:
                    self._room = room
                    self._append(delta)
                    return []
                plain = True
            else:
                plain = False
        except TypeError:
            raise TypeError(f"delta must be str, got {type(delta).__name__}") from None
        if not delta:
            return []
        if self._pending_end:
            if plain and len(delta) <= self._room + _SHUT:
                return self._resolve(delta)
            self._pending_end = self._pending_mark = False
        elif self._room >= len(delta) and not self._first:
            if _TAIL(delta):
                # The tail path (a word's last token: "w7. ", " today.", ","): in the fast path's state
                # such a delta decides nothing either (its punctuation is followed by nothing, or by
                # whitespace and nothing; a word start in it ends a plain word), and the fields it
                # changes are those _sync derives.
                self._tail(delta)
                return []
            if _MARK_TAIL(delta) and self._mark_tail(delta):
                return []
        # The general path: the markdown filter and _feed, then the fast or the pending path opened if
        # the state allows.
        if self._room0 != self._room:
            self._sync()
        self._room = self._room0 = self._clause_at = -1  # (the exact fields hold a lazy clause)
        text = self._markdown.feed(delta) if self._markdown is not None else delta
        self._feed(text)
        self._reopen()
        if not self._out:
            return []
        out, self._out = self._out, []
        return out

    def _sync(self) -> None:
        """Bring the fields the fast path left behind up to date. Exact: the text appended since _room0
        was set (all of it counted) is deltas of the fast, tail and pending paths, in states where they
        decide nothing but a lazy clause (and the pending path's cut, where the count starts again)."""
        grown = self._room0 - self._room
        if not grown:
            return
        self._room0 = self._room
        held = self._joined()
        at = self._pos - self._start  # where that text starts in held
        self._pos += grown
        content = len(held.rstrip())  # (a regex search for the last one would try every position)
        if content > at:  # that text has a non-whitespace character, so the last one is in it
            self._content_end = self._start + content
            self._last_content = held[content - 1]
            if self._word_at_line_start and _WORD_START.search(held, max(at - 1, 0)) is not None:
                self._word_at_line_start = False  # a new word, not at a line start (as _event does)
            if self._clause_at >= 0:
                self._lazy_clause(held)
        self._prev_ws = held[-1].isspace()
        if self._markdown is not None:
            self._markdown._prev = held[-1]  # the filter passed those deltas as is

    def _lazy_clause(self, held: str) -> None:
        """Record the clause boundary _clause_at stands for, once ``held`` has a non-whitespace character
        at or after it: there if that is a word start; none if the word went on ("1," "000")."""
        at = self._clause_at - self._start
        found = _NONWS.search(held, at)
        if found is None:
            return
        self._clause_at = -1
        start = found.start()
        if start > at or held[at - 1].isspace():
            start += self._start
            self._cands.append((start, _CLAUSE))
            if self._first_boundary is None:
                self._first_boundary = start

    def _tail(self, delta: str) -> None:
        """The tail path (see push): ``delta`` appended as on the fast path, then the kind of the last
        word decides the state: the fast path goes on (_NONE, _CLAUSE), or the pending one (_SENTENCE),
        or neither (a kind that depends on the next character)."""
        self._room -= len(delta)
        if self._word_at_line_start:
            self._append(delta)
            self._sync()  # _classify needs it exact (a numbered list's "1.")
            held = self._held
        else:
            parts = self._parts
            held = self._held + "".join(parts) + delta if parts else self._held + delta
            self._held = held
            parts.clear()
        # The word _event would classify at the next word start (as in _last_word_kind).
        kind = _classify(held.rsplit(None, 1)[-1], False, None, self._word_at_line_start)
        if kind == _SENTENCE:
            self._room -= _SHUT  # the fast path closes; what it appended is still for _sync to derive
            self._room0 -= _SHUT
            self._pending_end = True
        elif kind == _CLAUSE:
            if self._clause_at >= 0:
                self._sync()  # records the one before: there is one lazy clause at a time
            self._clause_at = self._start + len(held)
        elif kind < 0:
            self._sync()
            self._room = self._room0 = -1

    def _mark_tail(self, delta: str) -> bool:
        """The tail path for a run with a script mark at the end of ``delta`` (" है।", "好。"), taken if
        both rules give a sentence end: the script-mark rule for the character right after it, and
        _classify for a word start after whitespace (the pending path then tells which applies)."""
        if self._word_at_line_start or _run_kind(delta, 0, len(delta), _NONE) != _SENTENCE:
            return False  # (only the run has script marks; _classify needs the line start exact)
        held = self._joined() + delta
        if _classify(held.rsplit(None, 1)[-1], False, None, False) != _SENTENCE:
            return False
        self._held = held
        self._room -= len(delta) + _SHUT
        self._room0 -= _SHUT
        self._pending_end = self._pending_mark = True
        self._mark = _SENTENCE  # (exact: the run before it has no script mark in the fast path's state)
        return True

    def _reopen(self) -> None:
        """After the general path: open the fast path, or the pending one, if the state allows it."""
        if (
            self._content_start < 0
            or self._at_line_start
            or self._ws_newline
            or (self._first and self._first_boundary is not None)
        ):
            return
        md = self._markdown
        if md is not None and not (
            md._mode == _INLINE
            and not md._in_code
            and md._run_char is None
            and not md._bang
            and md._link is None
        ):
            return
        room = self._start + self._max_chars - self._pos
        if room < 0:
            return
        if self._last_content not in _ENDERS:
            self._room = self._room0 = room
        elif not self._first and self._mark == _NONE:
            # The pending path, or the fast path with a lazy clause (see push); a script mark before the
            # next character would decide there.
            kind = self._last_word_kind()
            if kind == _SENTENCE:
                self._room = self._room0 = room - _SHUT
                self._pending_end = True
            elif kind >= 0:
                if kind == _CLAUSE:
                    self._clause_at = self._pos
                self._room = self._room0 = room

    def _last_word_kind(self) -> int:
        """The kind the next word start decides after the last held word (it ends in _ENDERS; no line
        break follows it); -1 if that depends on the character there."""
        # str.split's whitespace is str.isspace(), as _event's; the word starts at the held text's start
        # at the earliest, as _event's does (the held text is within max_chars here).
        return _classify(self._joined().rsplit(None, 1)[-1], False, None, self._word_at_line_start)

    def _resolve(self, delta: str) -> list[str]:
        """The pending path: a plain delta after a word that ends a sentence at the next word start (not
        in the first chunk), in the state the tail path or _reopen left (the fast path's, closed by
        _SHUT, but for the last word), with room for the delta. The delta's first word start (if any)
        cuts; the rest of the delta decides nothing, as on the fast path, and the fields it changes are
        those _sync derives."""
        if not delta[0].isspace():
            rel = 0
            if not (self._parts[-1] if self._parts else self._held)[-1].isspace() and not (
                self._pending_mark and not delta[0].isdigit()
            ):
                # The word goes on ("3." then "14", "॥" then "१": its next character decides nothing);
                # the held text then ends outside _ENDERS: the fast path's state.
                self._room += _SHUT - len(delta)
                self._room0 += _SHUT
                self._pending_end = False
                if self._pending_mark:
                    self._pending_mark = False
                    self._mark = _NONE
                self._append(delta)
                return []
        else:
            found = _NONWS.search(delta)
            if self._pending_mark:  # (after whitespace, only a word start decides)
                self._pending_mark = False
                self._mark = _NONE
            if found is None:  # whitespace only: the word start is still to come
                self._room -= len(delta)
                self._append(delta)
                return []
            rel = found.start()
        # Cut before the word start (or the character after a script mark); the rest of the delta is
        # then fast-path text at the start of the new held text.
        self._pending_end = False
        if self._pending_mark:
            self._pending_mark = False
            self._mark = _NONE
        chunk = self._held if not self._parts else self._joined()
        if rel:
            chunk += delta[:rel]
            self._held = delta[rel:]
        else:
            self._held = delta
        self._start = self._content_start = self._pos = self._start + len(chunk)
        self._cands.clear()  # every held boundary is before the cut,
        self._clause_at = -1  # and so is a lazy one
        self._word_at_line_start = False  # the word start was not at a line start (nor, for a script
        # mark's cut, the word: _mark_tail takes none that does)
        self._room0 = room = self._max_chars
        self._room = room - len(delta) + rel
        return [chunk]

    def flush(self) -> list[str]:
        """End of stream or a tool call started: emit everything held (whitespace only stays held).

        The next push starts a new text: markdown state and the first-chunk rule are reset.
        """
        self._sync()
        self._room = self._room0 = self._clause_at = -1
        self._pending_end = self._pending_mark = False
        if self._markdown is not None:
            self._feed(self._markdown.finish())
        if self._content_start >= 0:
            held = self._joined()
            self._out.append(held)
            self._held = ""
            self._start = self._pos
            self._content_start = -1
        self._first = True
        self._cands.clear()
        self._first_boundary = None
        self._prev_ws = True
        self._ws_newline = False
        self._at_line_start = True
        self._mark = _NONE
        out, self._out = self._out, []
        return out

    def _joined(self) -> str:
        if self._parts:
            self._held += "".join(self._parts)
            self._parts.clear()
        return self._held

    def _feed(self, text: str) -> None:
        """Process ``text``: a shortcut for a delta that cannot decide anything, else ``_scan``.

        The shortcut appends a whole delta as is when the first-chunk rule is not armed, the held text
        stays within ``max_chars``, the text is not at a line start (where ``1.`` is a list number) or in
        a whitespace run with a line break, the last held character cannot end a word that is a boundary,
        and the delta holds no line break, no script mark, and no other character of _ENDERS with a word
        start after it. Any word starts in it are plain ones; a boundary its last word may end is decided
        by the next word start.
        """
        if not text:
            return
        if (
            not (self._first and self._first_boundary is not None)
            and not self._at_line_start
            and not self._ws_newline
            and self._pos + len(text) - self._start <= self._max_chars
            and (self._content_start < 0 or self._last_content not in _ENDERS)
        ):
            found = _ENDER_OR_BREAK_SCREEN.search(text)
            if found is None or (
                _WORD_START.search(text, found.end()) is None
                and _SCRIPT_OR_BREAK_SCREEN.search(text, found.start()) is None
            ):
                at = self._pos
                self._parts.append(text)
                self._pos += len(text)
                content = len(text.rstrip())
                if content:
                    if self._word_at_line_start and (
                        (self._prev_ws and not text[0].isspace()) or _WORD_START.search(text, 0, content)
                    ):
                        self._word_at_line_start = False  # a new word, not at a line start
                    if self._content_start < 0:
                        self._content_start = at + len(text) - len(text.lstrip())
                    self._content_end = at + content
                    self._last_content = text[content - 1]
                self._prev_ws = text[-1].isspace()
                return
        self._scan(text)

    def _scan(self, text: str) -> None:
        """The general case, in time linear in ``len(text)`` whatever its shape.

        Only a few characters can decide a boundary (*events*): the first non-whitespace character of the
        delta, the first one after whitespace that follows punctuation or holds a line break, and the one
        right after a run of punctuation with a script mark (``_next_event`` finds them with one regex
        search each). Each event goes through the per-character rules (``_event``). The stretches of
        text between events are taken in bulk (``_stretch``): there a character can only make the
        first-chunk rule fire or the held text pass ``max_chars``, and both places are found by
        arithmetic and a regex search. The held text is one string, sliced only to emit a chunk.
        """
        base = self._start  # full[k] is the character at absolute index base + k
        full = self._joined() + text
        self._events = _EVENT_ANY if _ASTRAL.search(full) is not None else _EVENT_BMP
        end = self._pos + len(text)
        i = self._pos
        self._pos = end
        first = _NONWS.search(full, i - base)
        event = first.start() + base if first is not None else end
        mark_after = _NONE  # used only when whitespace comes first, and whitespace ends a run of marks
        while True:
            if i < event:
                self._stretch(full, base, i, event)
                self._mark = mark_after
            if event == end:
                break
            self._event(full, base, event)
            i = event + 1
            event, mark_after = self._next_event(full, base, event, end)
        self._held = full[self._start - base :]

    def _next_event(self, full: str, base: int, event: int, end: int) -> tuple[int, int]:
        """The event after ``event`` (or ``end``) and the script-mark state just before it.

        It is the first non-whitespace character after whitespace that follows a run of _ENDERS or holds
        a line break, or the character right after a run with a script mark. A run inside a word
        (``3.14``, ``a-b``) decides nothing and is skipped (in the regex engine, mostly).
        """
        at = event - base
        if full[at] in _ENDERS:  # a run that starts at the event's own character continues its state
            run = _ENDERS_RUN.match(full, at)
            assert run is not None
            after = self._after_run(full, base, run, self._mark, end)
            if after is not None:
                return after
            at = run.end()
        while (found := self._events.search(full, at)) is not None:
            start = found.start()
            if full[start] in _LINE_BREAKS:
                nxt = _NONWS.search(full, found.end())
                return (end if nxt is None else nxt.start() + base), _NONE
            run = _ENDERS_RUN.match(full, start)
            assert run is not None
            after = self._after_run(full, base, run, _NONE, end)
            if after is not None:
                return after
            at = run.end()
        return end, _NONE

    @staticmethod
    def _after_run(full: str, base: int, run: re.Match[str], before: int, end: int) -> tuple[int, int] | None:
        """The event after a run of _ENDERS and the state before it; None if the run decides nothing."""
        nxt = _NONWS.search(full, run.end())
        if nxt is None:
            at_end = run.end() + base == end
            return end, (_run_kind(full, run.start(), run.end(), before) if at_end else _NONE)
        if nxt.start() > run.end():
            return nxt.start() + base, _NONE  # whitespace, then a word start
        mark = _run_kind(full, run.start(), run.end(), before)
        return (nxt.start() + base, mark) if mark != _NONE else None

    def _stretch(self, full: str, base: int, a: int, b: int) -> None:
        """Characters ``a``..``b`` (absolute) that decide no boundary: append them in bulk."""
        ra, rb = a - base, b - base
        if self._content_start < 0:
            first = _NONWS.search(full, ra, rb)
            if first is not None:
                self._content_start = first.start() + base
        cur = a
        # The first-chunk rule fires at the first character where enough text is held; the held text
        # passes max_chars at the first non-whitespace character max_chars past its start.
        while (
            armed := self._first and self._first_boundary is not None
        ) or b > self._start + self._max_chars:
            fire = max(cur, self._start + self._min_first_chars - 1) if armed else b
            over = b
            lo = max(cur, self._start + self._max_chars)
            if lo < min(fire + 1, b):
                nonws = _NONWS.search(full, lo - base, min(fire + 1, b) - base)
                if nonws is not None:
                    over = nonws.start() + base
            if fire < b and fire <= over:
                self._first_rule(full, base, fire)
                cur = fire
                continue
            if over >= b:
                break
            self._overflow(full, base, over)
            cur = over + 1
        last = _LAST_NONWS.search(full, ra, rb)
        if last is not None:
            if self._word_at_line_start and _WORD_START.search(full, ra, rb) is not None:
                self._word_at_line_start = False
            self._content_end = last.start() + 1 + base
            self._last_content = full[last.start()]
            tail = last.start() + 1
        else:
            tail = ra
        if tail < rb and _LINE_BREAK.search(full, tail, rb) is not None:
            self._ws_newline = self._at_line_start = True
        self._prev_ws = full[rb - 1].isspace()

    def _event(self, full: str, base: int, index: int) -> None:
        """One non-whitespace character that may decide a boundary (the per-character rules)."""
        char = full[index - base]
        kind = _NONE
        if self._prev_ws:
            end = self._content_end
            if end > self._start and (self._ws_newline or self._last_content in _ENDERS):
                begin = end - 1
                floor = self._start
                while begin > floor and not full[begin - 1 - base].isspace():
                    begin -= 1
                word = full[begin - base : end - base]
                kind = _classify(word, self._ws_newline, char, self._word_at_line_start)
            self._word_at_line_start = self._at_line_start
            self._at_line_start = self._ws_newline = self._prev_ws = False
            mark = _NONE
        else:
            mark = self._mark
            if mark != _NONE and char not in _ENDERS and not char.isdigit():
                kind = mark
        self._mark = max(mark, _SCRIPT_KIND.get(char, _NONE)) if char in _ENDERS else _NONE
        content_before = self._content_start >= 0
        if not content_before:
            self._content_start = index
        self._content_end = index + 1
        self._last_content = char
        if kind != _NONE:
            self._cands.append((index, kind))
            if self._first_boundary is None:
                self._first_boundary = index
        if self._first:
            self._first_rule(full, base, index)
        elif kind == _SENTENCE:
            self._cut(full, base, index)
        if index + 1 - self._start > self._max_chars:
            self._overflow(full, base, index, content_before)

    def _overflow(self, full: str, base: int, index: int, content_before: bool | None = None) -> None:
        """The non-whitespace character at ``index`` took the held text past ``max_chars``: cut."""
        if content_before is None:
            content_before = 0 <= self._content_start < index
        while index + 1 - self._start > self._max_chars:
            at = self._cands[-1][0] if self._cands else self._last_word_start(full, base, index)
            if at is None:
                if not content_before:
                    break  # only leading whitespace before this character: nothing to emit yet
                at = index  # one word longer than max_chars
            self._cut(full, base, at)
            content_before = index > self._start

    def _last_word_start(self, full: str, base: int, index: int) -> int | None:
        """The last word start at or before ``index`` with held text (not only whitespace) before it."""
        if self._content_start < 0:
            return None
        lo, hi = self._content_start - base, index + 1 - base
        found = _WORD_START_BACKWARDS.search(full[lo:hi][::-1])
        return None if found is None else index - found.start()

    def _cut(self, full: str, base: int, at: int) -> None:
        """Emit held text before absolute index ``at`` (a non-whitespace character)."""
        self._out.append(full[self._start - base : at - base])
        self._start = at
        self._content_start = at
        self._first = False
        if self._cands:
            self._cands = [cand for cand in self._cands if cand[0] > at]

    def _first_rule(self, full: str, base: int, index: int) -> None:
        if self._first_boundary is None or index + 1 - self._start < self._min_first_chars:
            return
        self._cut(full, base, self._first_boundary)
        self._first_boundary = None
        # Sentence ends decided while the first chunk waited are cut as usual.
        for pos, kind in list(self._cands):
            if kind == _SENTENCE:
                self._cut(full, base, pos)
