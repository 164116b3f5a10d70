"""SpeechChunker.push's fast, tail and pending paths: what each push returns (the chunks and the push they
come out of) against the independent per-character reference, on token streams built to sit on those
paths' edges, plus checks that the usual tokens do take them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chunker_reference import reference_timeline
from voiceagent.chunker import SpeechChunker, _MarkdownFilter

FLUSH = None  # a flush() in a stream of deltas


def oracle(deltas: list[str | None], max_chars: int, min_first: int, markdown: bool) -> list[list[str]]:
    """What each push (and flush, and the final flush) returns, per the reference: the markdown filter fed
    one character at a time gives the text the chunker sees so far; a chunk comes out of the push that
    brought the character whose arrival cuts it."""
    results: list[list[str]] = []
    md = _MarkdownFilter() if markdown else None
    text = ""  # the current text (after a flush: what stayed held, then the new text)
    out = 0  # chunks of the current text returned so far

    def through(end: int, final: bool) -> list[str]:
        nonlocal out
        timeline = reference_timeline(text, max_chars, min_first)
        if not final:
            timeline = [(t, chunk) for t, chunk in timeline if t < end]
        new = [chunk for _, chunk in timeline[out:]]
        out = len(timeline)
        return new

    for delta in [*deltas, FLUSH]:
        if delta is FLUSH:
            if md is not None:
                text += md.finish()
            emitted = through(len(text), final=False)
            said = "".join(chunk for _, chunk in reference_timeline(text, max_chars, min_first)[:out])
            held = text[len(said) :]
            if held.strip():
                emitted.append(held)
                held = ""
            results.append(emitted)
            text, out = held, 0
            continue
        text += "".join(md.feed(char) for char in delta) if md is not None else delta
        results.append(through(len(text), final=False))
    return results


def actual(deltas: list[str | None], **kwargs: Any) -> list[list[str]]:
    chunker = SpeechChunker(**kwargs)
    results = [chunker.flush() if delta is FLUSH else chunker.push(delta) for delta in deltas]
    results.append(chunker.flush())
    return results


# Tokens on the paths' edges: plain words in both shapes ("w ", " w"), whitespace-only deltas, a word's
# last token ("w. ", " w.", ","), words whose kind depends on what follows (No., a.m.), list numbers and
# initials, a word going on after its punctuation ("3." "14"), then what closes the fast path: line
# breaks, markup, script marks, characters past U+FFFF, and long words for max_chars.
PLAIN = ["w", "w ", " w", "  w", "w  ", "ab cd", " ab cd ", "x y ", "Next", " Next", "14", " 5", "M", " é"]
PLAIN += ["2"]
BLANK = [" ", "  ", "\t", "\u00a0", " \t ", ""]
TAILS = [".", ",", "w.", " w.", "w. ", " w, ", "...", "?", " -", "- ", "w!", "w! ", ")", "w.)", '"', "—"]
TAILS += ["है। ", " 好。 ", "x， ", 'ok।" ', "؟ ", " ،\t", "।, "]
TAILS += [" है।", "。", "好。", ' ok।"', "॥", "x，", "।,", " ؟", "?।"]
PLAIN += ["वह", " वह", "१", "１", "好的"]
TAILS += ["No.", " No.", "a.m.", " p.m. ", "Dr.", " U.S.", " 1.", "1. ", "3.", "e.g.", "…", " J.", "!x"]
CLOSERS = ["\n", "\n\n", "w\n", "。", "है।", "好", "𑁇", "😀", "*", "**b**", "[l](u)", "`c`", "#", "!", "]"]
CLOSERS += ["_", " [a", "](u)", "~~", " ~", "*3", "_b", ". Next", ", and", "? Ok", "Hello."]
LONG = ["x" * 30, " " + "y" * 45, "z" * 12 + ". "]
TOKENS = PLAIN + BLANK + TAILS + CLOSERS + LONG

# Half the tokens are the usual ones (the paths' own), the rest anything, a flush now and then; most
# streams start by cutting their first chunk (the tail and pending paths wait for that).
streams = st.tuples(
    st.sampled_from(["", "Sure, it ", "Hi, ", "\n"]),
    st.lists(
        st.one_of(st.sampled_from(PLAIN + BLANK + TAILS), st.sampled_from([*TOKENS, FLUSH])), max_size=60
    ),
).map(lambda pair: [pair[0], *pair[1]] if pair[0] else pair[1])


@settings(max_examples=800, deadline=None)
@given(streams, st.integers(1, 60), st.integers(0, 12), st.booleans())
def test_every_push_returns_what_the_reference_cuts_then(
    deltas: list[str | None], max_chars: int, min_first: int, markdown: bool
) -> None:
    kwargs = {"max_chars": max_chars, "min_first_chars": min_first, "strip_markdown": markdown}
    assert actual(deltas, **kwargs) == oracle(deltas, max_chars, min_first, markdown)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PLAIN + BLANK + TAILS), max_size=80), st.integers(0, 12))
def test_usual_tokens_at_default_max_chars(deltas: list[str | None], min_first: int) -> None:
    """Streams of only the tokens the three paths take (long enough to pass max_chars now and then)."""
    for markdown in (True, False):
        kwargs = {"min_first_chars": min_first, "strip_markdown": markdown}
        assert actual(deltas, **kwargs) == oracle(deltas, 140, min_first, markdown)


# --- edges, each pinned down as an example ------------------------------------------------------------


@pytest.mark.parametrize(
    "deltas",
    [
        ["Sure, it", " is", " sunny", " today.", "  ", " It", " is", "."],  # whitespace-only while pending
        ["Sure, it", " is", " sunny", " today.", "  It", " is"],  # leading whitespace, then the word start
        ["Sure, it", " is", " No.", " 5", " and", " a.m.", " Then"],  # kinds that depend on what follows
        ["Sure, it", " costs", " 3.", "14", " dollars.", " Ok"],  # the word goes on after its "."
        ["Sure, it is", " x" * 70, " y."],  # a delta right at max_chars, then over it
        ["Sure, it", " was", " w.", "\n", "1.", " Next", " 2.", " And"],  # line breaks and list numbers
        ["Sure, it", " is", " done.", " **Next**", " up."],  # markdown after a pending word
        ["Sure, it", " is", " *", "x", " y.", " Z"],  # markdown that leaves a run pending
        ["Sure, it", " is", " 😀", " ok", ".", " 𑁇", " 好。", "x"],  # past U+FFFF; script marks
        ["Sure, it", " is", " ok", FLUSH, " next", " one.", " Two"],  # a delta after a flush
        ["Sure, it", " is", " ok.", FLUSH, "  ", FLUSH, "x", " y.", " Z"],  # whitespace kept over a flush
        ["Sure, it", " a,", " b.", " c", " dddd", " eeee", " ffff", " gggg"],  # a cut, then max_chars
        ["Sure, it", " a", ",", " b", " cccc", " dddd", " eeee", " ffff"],  # max_chars: the last comma
        ["Sure, it", " 1", ",", "000", " cccc", " dddd", " eeee", " ffff"],  # a comma inside a word
        ["Sure, it", " **a**,", " b", " cccc", " dddd", " eeee", " ffff"],  # a comma the general path saw
        ["Sure, it", " a,", "  ", "\n", "b", " cccc", " dddd", " eeee", " ffff"],  # then a line break
        ["Sure, it", " is", " w!", "[a](u)", " ok", " x!", " y"],  # the filter holds a last "!"
        ["Sure, it", " is", " [a", " b", "](u)", " ok", " [c", " d."],  # the filter holds a link's text
        ["Sure, it", " is", " ~~no", "~~", " ok", " ~", "x", " `c", "`", " d"],  # strikes, tildes, code
        ["जी, यह", " है।", " वह", " है।", "वह", " ॥", "१", "॥", " 好。", "好的", "x，", " z"],  # script marks
        ["जी, यह", " है।", "वह", "x\ny", " है।,", " वह", " ॥", "१", "x\ny", " cccc", " dddd"],  # after a mark
        ["Sure, it", "\n", "1", " 2", ". Next", " x"],  # a word start in fast text ends a line's first word
        ["Sure, it", "\n", "Hello.", " 3", ".", " x"],  # a cut at a word start not at a line start
        ["Sure, it ", " snake", "_case", " ok", " 2", "*3", " a", " * ", "b"],  # the filter's last character
    ],
)
@pytest.mark.parametrize("markdown", [True, False])
@pytest.mark.parametrize("max_chars", [20, 140])
def test_edges_match_the_reference(deltas: list[str | None], markdown: bool, max_chars: int) -> None:
    kwargs = {"max_chars": max_chars, "strip_markdown": markdown}
    assert actual(deltas, **kwargs) == oracle(deltas, max_chars, 8, markdown)


def test_a_delta_exactly_filling_max_chars_stays_on_the_fast_path() -> None:
    chunker = SpeechChunker(max_chars=20, strip_markdown=False)
    assert chunker.push("Sure, you") == ["Sure, "]  # held: "you"
    room = chunker._room
    assert room == 17
    chunker._feed = None  # type: ignore[assignment,method-assign]  # the general path would fail
    assert chunker.push(" " + "x" * (room - 1)) == []
    assert chunker._room == 0
    assert chunker.pending == "you " + "x" * 16


# --- the paths are taken ----------------------------------------------------------------------------


class Counting(SpeechChunker):
    """Counts the calls of the general path (the markdown filter and _feed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.general = 0

    def _feed(self, text: str) -> None:
        self.general += 1
        super()._feed(text)


@pytest.mark.parametrize("markdown", [True, False])
@pytest.mark.parametrize(
    "shape",
    [
        lambda i: f"w{i}. " if i % 8 == 7 else f"w{i} ",  # the bench's stream
        lambda i: f" w{i}." if i % 8 == 7 else f" w{i}," if i % 8 == 3 else f" w{i}",  # the usual shape
        lambda i: f" w{i}." if i % 8 == 7 else f" w{i}" + ("," if i % 8 == 3 else ""),
    ],
)
def test_usual_tokens_never_take_the_general_path(markdown: bool, shape: Any) -> None:
    chunker = Counting(strip_markdown=markdown)
    deltas = ["Sure, it"] + [shape(i) for i in range(400)]
    results = [chunker.push(delta) for delta in deltas]
    assert chunker.general == 1  # the first delta (it cuts the first chunk)
    assert sum(len(result) for result in results) == 50  # a sentence every 8 words
    assert results == oracle(deltas, 140, 8, markdown)[:-1]


def test_the_bytecode_bench_counts_the_chunkers_own_steps(capsys: pytest.CaptureFixture[str]) -> None:
    """bench.chunker bytecodes: deterministic, and it counts the chunker's Python steps only."""
    import voiceagent.chunker
    from bench import chunker as bench

    tokens = bench.bench_words(120)
    counts = [bench.push_bytecodes(voiceagent.chunker, tokens, markdown) for markdown in (True, False)]
    assert counts == [
        bench.push_bytecodes(voiceagent.chunker, tokens, markdown) for markdown in (True, False)
    ]
    assert all(count > 0 for count in counts)
    bench.bytecodes(None, 60)
    assert capsys.readouterr().out.count("\n") == 2 + len(bench.TOKEN_SHAPES)


def test_the_sizes_are_read_only() -> None:
    """The fast path keeps a room count computed from max_chars: changing it mid-stream is refused."""
    chunker = SpeechChunker(max_chars=20, min_first_chars=4)
    assert (chunker.max_chars, chunker.min_first_chars) == (20, 4)
    with pytest.raises(AttributeError):
        chunker.max_chars = 10  # type: ignore[misc]
    with pytest.raises(AttributeError):
        chunker.min_first_chars = 1  # type: ignore[misc]
