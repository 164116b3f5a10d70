"""SpeechChunker: example behaviour plus property tests of the split-independence invariant."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceagent.chunker import SpeechChunker, strip_markdown


def run(deltas: list[str], **kwargs: object) -> list[list[str]]:
    """Per-push results, then the flush result last."""
    chunker = SpeechChunker(**kwargs)  # type: ignore[arg-type]
    results = [chunker.push(delta) for delta in deltas]
    results.append(chunker.flush())
    return results


def chunks_of(deltas: list[str], **kwargs: object) -> list[str]:
    return [chunk for result in run(deltas, **kwargs) for chunk in result]


def tokens(text: str) -> list[str]:
    """Rough LLM-like tokens: each word with its leading space, other characters one by one."""
    return re.findall(r" ?\w+|\W", text)


# --- examples -------------------------------------------------------------------------------------


def test_first_chunk_cut_at_first_comma_as_soon_as_decided() -> None:
    deltas = tokens("Sure, let me check the weather in Paris for you.")
    assert deltas[:4] == ["Sure", ",", " let", " me"]
    results = run(deltas)
    assert results[0] == [] and results[1] == []
    assert results[2] == ["Sure, "]  # out on " let": no waiting for the sentence end
    assert results[-1] == ["let me check the weather in Paris for you."]


def test_later_chunks_cut_at_sentence_ends_only() -> None:
    text = "Sure, let me check. It is sunny, warm and dry in Paris today! Anything else? Bye."
    assert chunks_of(list(text)) == [
        "Sure, ",
        "let me check. ",
        "It is sunny, warm and dry in Paris today! ",
        "Anything else? ",
        "Bye.",
    ]


def test_min_first_chars_waits_for_enough_text() -> None:
    assert chunks_of(list("Hi, how are you, friend. Ok"), min_first_chars=0)[0] == "Hi, "
    # "Hi, " is decided at "h" but only 5 characters are held then; the cut happens at the 8th.
    results = run(list("Hi, how are you"))
    assert [i for i, r in enumerate(results) if r] == [7, len(results) - 1]
    assert results[7] == ["Hi, "]


def test_abbreviations_prices_decimals_not_split() -> None:
    text = "Dr. Smith paid $29.99 at 3.14 pm. Then Mr. J. R. R. Tolkien came at 10:30 with 1,000 books."
    assert chunks_of(tokens(text)) == [
        "Dr. Smith paid $29.99 at 3.14 pm. ",
        "Then Mr. J. R. R. Tolkien came at 10:30 with 1,000 books.",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "We need vs. them etc. and e.g. this i.e. that, Prof. X and St. Louis Jr. Sr. Mrs. Ms. ok.",
        "Gate No. 5 opens at 3 p.m. sharp.",
        "Visit https://example.com/a.b?c=d or docs.smallest.ai or mail a.b@c.io now.",
    ],
)
def test_no_split_inside_tokens_after_first_chunk(sentence: str) -> None:
    text = "Okay, one thing. " + sentence + " Next."
    assert chunks_of(list(text)) == ["Okay, ", "one thing. ", sentence + " ", "Next."]


def test_no_before_word_and_pm_before_capital_are_sentence_ends() -> None:
    text = "Okay, hm. No. I close at 9 p.m. Anything else?"
    assert chunks_of(list(text)) == ["Okay, ", "hm. ", "No. ", "I close at 9 p.m. ", "Anything else?"]


def test_boundary_waits_for_the_next_character() -> None:
    chunker = SpeechChunker()
    assert chunker.push("Okay, the value is 3.") == ["Okay, "]
    assert chunker.push(" ") == []  # still undecided: "3. " could be followed by anything
    assert chunker.pending == "the value is 3. "
    assert chunker.push("Done") == ["the value is 3. "]
    assert chunker.flush() == ["Done"]


def test_ellipsis_is_a_clause_boundary_not_a_sentence_end() -> None:
    assert chunks_of(list("Well... let me think. Hmm... maybe later.")) == [
        "Well... ",
        "let me think. ",
        "Hmm... maybe later.",
    ]


def test_newline_and_numbered_list() -> None:
    text = "Here are the steps:\n1. Preheat the oven.\n2. Bake it.\n\nDone"
    assert chunks_of(tokens(text)) == [
        "Here are the steps:\n",
        "1. Preheat the oven.\n",
        "2. Bake it.\n\n",
        "Done",
    ]


def test_max_chars_respected_without_punctuation() -> None:
    words = ["word", "speech", "agent", "paris", "weather"]
    text = " ".join(words[i % 5] for i in range(110))
    assert len(text) > 600
    chunks = chunks_of(tokens(text))
    assert "".join(chunks) == text
    assert len(chunks) >= 5
    assert all(len(chunk.strip()) <= 140 for chunk in chunks)
    assert all(not chunk.startswith(" ") and chunk.endswith(" ") for chunk in chunks[:-1])  # cut at spaces


def test_overflow_prefers_last_clause_boundary() -> None:
    first = "Okay. "
    clause = "a" * 10 + " " + "b c d e, " + "f " * 40
    chunks = chunks_of(list(first + clause + "end."), max_chars=60)
    assert chunks[0] == first
    assert chunks[1] == "a" * 10 + " b c d e, "
    assert "".join(chunks) == first + clause + "end."


def test_single_long_word_is_cut_hard() -> None:
    word = "x" * 300
    chunks = chunks_of(["Okay. ", word[:150], word[150:], " done"])
    assert chunks == ["Okay. ", "x" * 140, "x" * 140, "x" * 20 + " done"]


def test_markdown_stripped_across_deltas() -> None:
    deltas = ["Sure", ", here", " is *", "*bo", "ld*", "* and `co", "de` and [the ", "docs](https://x"]
    deltas.append(".io/a_(b)) ok.")
    assert "".join(chunks_of(deltas)) == "Sure, here is bold and code and the docs ok."
    assert chunks_of(deltas) == chunks_of(["".join(deltas)])


def test_markdown_rules() -> None:
    text = (
        "# Title\n"
        "- **bold**, *it*, __u__, ~~del~~, `code` and snake_case and 2 * 3 and 2*3\n"
        "  * nested and + plus\n"
        "> quoted [link](http://x.com/a_(b)) and ![alt](u) and [not a link] and #tag\n"
        "```python\n"
        "x = a*b_c\n"
        "```\n"
        "1. one\n"
        "---\n"
        "-5 degrees"
    )
    assert strip_markdown(text) == (
        " Title\n"
        " bold, it, u, del, code and snake_case and 2 * 3 and 2*3\n"
        "   nested and + plus\n"
        " quoted link and alt and [not a link] and #tag\n"
        "\n"
        "x = a*b_c\n"
        "\n"
        "1. one\n"
        "\n"
        "-5 degrees"
    )


def test_strip_markdown_false_keeps_markup() -> None:
    text = "Sure, **bold** text. Done"
    assert "".join(chunks_of(list(text), strip_markdown=False)) == text


def test_flush_emits_the_rest_and_resets() -> None:
    chunker = SpeechChunker()
    assert chunker.push("Okay, checking the **wea") == ["Okay, "]
    assert chunker.pending == "checking the wea"
    assert chunker.flush() == ["checking the wea"]
    assert chunker.pending == ""
    assert chunker.flush() == []
    # After a flush (tool call) the first-chunk rule applies again.
    assert chunker.push("It is sunny, and warm") == ["It is sunny, "]


def test_whitespace_only_is_never_emitted_and_never_lost() -> None:
    chunker = SpeechChunker()
    assert chunker.push("  \n ") == []
    assert chunker.flush() == []
    assert chunker.pending == "  \n "
    assert chunker.push("Hi") == []
    assert chunker.flush() == ["  \n Hi"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        SpeechChunker(max_chars=0)
    with pytest.raises(ValueError, match="min_first_chars"):
        SpeechChunker(min_first_chars=-1)
    with pytest.raises(TypeError, match="delta must be str"):
        SpeechChunker().push(b"bytes")  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------------------

MARKDOWNISH = "ab Z9.,;:!?*_`~#->+[]()!\n\t $—…'\"" + "é"
PUNCTUATION_HEAVY = "aB1 .,;:!?-—…\n" + "Dr.e.g.No 3.14"
# Words and separators that sit on the rules' edges (list numbers, initials, line breaks of every kind).
WORDS = ["hello", "1.", "2", "3.14", "Dr.", "U.S.", "a.m.", "No.", "é2", "w7.", "foo,", "(yes)", '"ok"']
WORDS += ["-", "—", "…", "...", "wow!", "why?", "snake_case", "**b**", "`c`", "[l](u)", "#", "*"]
SEPARATORS = [" ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u2028", ""]
prose = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=60).map(
    lambda pairs: "".join(word + separator for word, separator in pairs)
)
texts = st.one_of(
    st.text(alphabet=MARKDOWNISH, max_size=300),
    st.text(alphabet=PUNCTUATION_HEAVY, max_size=300),
    st.text(max_size=200),
    prose,
)


@st.composite
def split_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(texts)
    if draw(st.booleans()):  # word-sized tokens, as LLMs stream them (" word" or "word ")
        pattern = r"\s*\S+|\s+" if draw(st.booleans()) else r"\S+\s*|\s+"
        return text, re.findall(pattern, text)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=40)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


def check(text: str, deltas: list[str], **kwargs: object) -> list[str]:
    chunks = chunks_of(deltas, **kwargs)
    max_chars = int(kwargs.get("max_chars", 140))  # type: ignore[call-overload]
    for chunk in chunks:
        assert chunk.strip(), chunks  # never empty, never whitespace only
        assert len(chunk.strip()) <= max_chars, chunk
    # Same chunk sequence as pushing one character at a time (the design guarantees it).
    assert chunks == chunks_of(list(text), **kwargs)
    return chunks


@settings(max_examples=400, deadline=None)
@given(split_text(), st.integers(1, 40), st.integers(0, 12))
def test_concatenation_invariant_with_markdown(
    split: tuple[str, list[str]], max_chars: int, min_first: int
) -> None:
    text, deltas = split
    chunks = check(text, deltas, max_chars=max_chars, min_first_chars=min_first)
    assert "".join(chunks) == strip_markdown(text)


@settings(max_examples=400, deadline=None)
@given(split_text(), st.integers(1, 40))
def test_concatenation_invariant_without_markdown(split: tuple[str, list[str]], max_chars: int) -> None:
    text, deltas = split
    chunks = check(text, deltas, max_chars=max_chars, strip_markdown=False)
    assert "".join(chunks) == (text if text.strip() else "")


@settings(max_examples=200, deadline=None)
@given(split_text())
def test_default_settings_invariant(split: tuple[str, list[str]]) -> None:
    text, deltas = split
    assert "".join(check(text, deltas)) == strip_markdown(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), max_size=20), st.booleans())
def test_push_never_raises_on_arbitrary_unicode(deltas: list[str], markdown: bool) -> None:
    chunker = SpeechChunker(strip_markdown=markdown, max_chars=30)
    emitted = [chunk for delta in deltas for chunk in chunker.push(delta)]
    emitted += chunker.flush()
    joined = "".join(deltas)
    expected = strip_markdown(joined) if markdown else (joined if joined.strip() else "")
    if emitted:
        assert "".join(emitted) == expected
        assert chunker.pending == ""
    else:
        assert expected == ""
        assert not chunker.pending.strip()


@settings(max_examples=400, deadline=None)
@given(split_text())
def test_markdown_filter_fast_path_matches_the_character_machine(split: tuple[str, list[str]]) -> None:
    from voiceagent.chunker import _MarkdownFilter

    _, deltas = split
    fast, slow = _MarkdownFilter(), _MarkdownFilter()
    slow._plain = lambda text: False  # type: ignore[method-assign]  # every character through _step
    for delta in ["plain start\n", *deltas]:
        assert fast.feed(delta) == slow.feed(delta)
        assert fast.preview() == slow.preview()
    assert fast.finish() == slow.finish()


def test_markdown_filter_fast_path_is_taken_for_plain_inline_text() -> None:
    from voiceagent.chunker import _MarkdownFilter

    md = _MarkdownFilter()
    md.feed("x")  # leaves line start
    assert md._plain(" sunny today, 21 degrees.")
    assert not md._plain(" **bold**") and not md._plain("line\nbreak") and not md._plain("[link")


@settings(max_examples=400, deadline=None)
@given(split_text(), st.integers(1, 40), st.integers(0, 12), st.booleans())
def test_chunker_word_run_fast_path_matches_the_character_machine(
    split: tuple[str, list[str]], max_chars: int, min_first: int, markdown: bool
) -> None:
    _, deltas = split
    kwargs = {"max_chars": max_chars, "min_first_chars": min_first, "strip_markdown": markdown}
    fast, slow = SpeechChunker(**kwargs), SpeechChunker(**kwargs)  # type: ignore[arg-type]
    slow._feed = slow._feed_chars  # type: ignore[method-assign]  # every character through _char
    for delta in [*deltas, *deltas]:  # twice: the second text starts after a flush-free run
        assert fast.push(delta) == slow.push(delta)
        assert fast.pending == slow.pending
    assert fast.flush() == slow.flush()
    for delta in deltas:  # after a flush (first-chunk rule again)
        assert fast.push(delta) == slow.push(delta)
    assert fast.flush() == slow.flush()


def test_chunker_delta_fast_path_is_taken_for_plain_words() -> None:
    chunker = SpeechChunker(strip_markdown=False)
    chunker.push("Hello there, how")  # the first chunk is cut; the text is past its line start
    chunker._char = None  # type: ignore[assignment,method-assign]  # any per-character step would fail
    for token in [" are", " you", " today"]:
        assert chunker.push(token) == []
    assert chunker.pending == "how are you today"


def test_chunker_fast_path_is_taken_inside_words() -> None:
    chunker = SpeechChunker(strip_markdown=False)
    chunker.push("Hello there, x")
    chunker._char = None  # type: ignore[assignment,method-assign]  # any per-character step would fail
    chunker.push("ylophone")
    assert chunker.pending.endswith("xylophone")
