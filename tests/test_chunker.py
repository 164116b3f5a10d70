"""SpeechChunker: example behaviour plus property tests of the split-independence invariant."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chunker_reference import reference_chunks
from voiceagent.chunker import SpeechChunker, _MarkdownFilter, strip_markdown


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


# --- every script's sentence ends ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Hindi, Marathi, Nepali: danda and double danda, with or without a space after them.
        ("नमस्ते। आप कैसे हैं। ठीक", ["नमस्ते। ", "आप कैसे हैं। ", "ठीक"]),
        ("नमस्ते।आप कैसे हैं॥ठीक", ["नमस्ते।", "आप कैसे हैं॥", "ठीक"]),
        # Bengali (the same danda), Gurmukhi, Odia and Tamil write it too.
        ("আজ রোদ। আর কিছু?", ["আজ রোদ। ", "আর কিছু?"]),
        ("ਸਤ ਸ੍ਰੀ ਅਕਾਲ। ਕੀ ਹਾਲ ਹੈ?", ["ਸਤ ਸ੍ਰੀ ਅਕਾਲ। ", "ਕੀ ਹਾਲ ਹੈ?"]),
        # CJK: no spaces at all; a closing quote stays with its sentence; half-width ｡ too.
        (
            "今天天气晴朗。气温二十一度！要带伞吗？不用。",
            ["今天天气晴朗。", "气温二十一度！", "要带伞吗？", "不用。"],
        ),
        ("「はい。」と言った｡ありがとう", ["「はい。」", "と言った｡", "ありがとう"]),
        # Arabic question mark, Urdu full stop; Armenian and Ethiopic full stops, Myanmar, Khmer.
        ("كيف حالك؟ أنا بخير", ["كيف حالك؟ ", "أنا بخير"]),
        ("آپ کیسے ہیں۔ٹھیک ہوں", ["آپ کیسے ہیں۔", "ٹھیک ہوں"]),
        ("Բարեւ։ Ինչպես ես", ["Բարեւ։ ", "Ինչպես ես"]),
        ("ሰላም። እንዴት ነህ", ["ሰላም። ", "እንዴት ነህ"]),
        ("မင်္ဂလာပါ။ နေကောင်းလား", ["မင်္ဂလာပါ။ ", "နေကောင်းလား"]),
        ("សួស្តី។ សុខសប្បាយទេ", ["សួស្តី។ ", "សុខសប្បាយទេ"]),
    ],
)
def test_sentence_ends_of_other_scripts(text: str, expected: list[str]) -> None:
    results = run(list(text), min_first_chars=0)
    assert [chunk for result in results for chunk in result] == expected
    assert results[-1] == [expected[-1]]  # every earlier chunk came out before the end of the text


def test_first_chunk_of_a_hindi_answer_is_out_at_its_first_danda() -> None:
    deltas = re.findall(r" ?\S+", "आज पेरिस में धूप खिली है। तापमान इक्कीस डिग्री है।")  # words, as LLMs stream them
    results = run(deltas)
    at = next(i for i, result in enumerate(results) if result)
    assert results[at] == ["आज पेरिस में धूप खिली है। "]
    assert deltas[at] == " तापमान"  # the word after the danda decides it, as a full stop's would


def test_cjk_commas_cut_the_first_chunk_without_a_space() -> None:
    chunker = SpeechChunker(min_first_chars=3)
    assert chunker.push("好的，") == []  # the character after the comma decides
    assert chunker.push("我") == ["好的，"]
    assert chunker.push("来查一下。明天") == ["我来查一下。"]


def test_no_boundary_inside_numbers_or_before_more_punctuation() -> None:
    # A digit after a mark (full-width decimals, verse numbers) and a run of marks and closers.
    assert chunks_of(list("圆周率是３．１４。好"), min_first_chars=0) == ["圆周率是３．１４。", "好"]
    assert chunks_of(list("श्लोक ॥१॥ अगला"), min_first_chars=0) == ["श्लोक ॥१॥ ", "अगला"]
    assert chunks_of(list("真的吗？！」他说"), min_first_chars=0) == ["真的吗？！」", "他说"]
    # ASCII punctuation still needs whitespace after it.
    assert chunks_of(list("Pi is 3.14,ok.Fine"), min_first_chars=0) == ["Pi is 3.14,ok.Fine"]


def test_a_script_mark_split_across_deltas() -> None:
    chunker = SpeechChunker(min_first_chars=0)
    assert chunker.push("你好。") == []
    assert chunker.push("”") == []
    assert chunker.push("他") == ["你好。”"]


def test_punctuation_table_is_generated_from_unicode() -> None:
    """The committed table is what tools/gen_punctuation.py derives from the installed Unicode data."""
    import subprocess
    import sys
    from pathlib import Path

    from voiceagent._punctuation import CLAUSE_MARKS, SENTENCE_TERMINALS, UNICODE_VERSION

    root = Path(__file__).resolve().parent.parent
    check = subprocess.run(
        [sys.executable, "tools/gen_punctuation.py", "--check"], cwd=root, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert UNICODE_VERSION.split(".")[0].isdigit()
    for char in ".!?।॥。！？｡؟۔։።":
        assert char in SENTENCE_TERMINALS, char
    for char in ",;:،؛，、；：":
        assert char in CLAUSE_MARKS, char


# --- mutants the suite used to let through (docs/testing.md) -------------------------------------


def test_sentence_ends_decided_while_the_first_chunk_waited_are_cut() -> None:
    # "Ok. " is decided at "Y" but only 5 characters are held: the first chunk waits for 12. By then
    # "Yes, " (a clause) and, in the second text, "Yes. " (a sentence) are decided behind it.
    assert chunks_of(list("Ok. Yes, sure thing."), min_first_chars=12) == ["Ok. ", "Yes, sure thing."]
    assert chunks_of(list("Ok. Yes. Sure thing."), min_first_chars=12) == ["Ok. ", "Yes. ", "Sure thing."]
    assert chunks_of(["Ok. Yes. Sure thing."], min_first_chars=12) == ["Ok. ", "Yes. ", "Sure thing."]


@pytest.mark.parametrize("min_first", [0, 1, 5, 6, 7, 12])
def test_min_first_chars_boundary_is_exact(min_first: int) -> None:
    """The first chunk comes out at the first character where min_first_chars are held, not before."""
    text = "Hi, how are you"  # ", " is decided at "h" (index 4), when 5 characters are held
    results = run(list(text), min_first_chars=min_first)
    expected_at = max(4, min_first - 1)
    assert [i for i, result in enumerate(results) if result] == [expected_at, len(results) - 1]
    assert results[expected_at] == ["Hi, "]


def test_min_first_chars_counts_whitespace_and_fires_on_it() -> None:
    results = run(list("Hi, a    b"), min_first_chars=8)
    assert results[7] == ["Hi, "]  # the 8th held character is a space
    assert [i for i, result in enumerate(results[:7]) if result] == []


def test_min_first_chars_longer_than_the_text_waits_for_flush() -> None:
    assert run(list("Hi, you."), min_first_chars=9)[-1] == ["Hi, you."]  # 8 characters: never enough
    results = run(list("Hi, you."), min_first_chars=8)
    assert results[7] == ["Hi, "] and results[-1] == ["you."]  # the 8th character is the last one


# --- any delta in bounded time and memory (issue 11) ---------------------------------------------


class CountingChunker(SpeechChunker):
    """Counts the chunker's Python-level steps: per event and per stretch of text between events."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = 0
        self.stretches = 0

    def _event(self, full: str, base: int, index: int) -> None:
        self.events += 1
        super()._event(full, base, index)

    def _stretch(self, full: str, base: int, a: int, b: int) -> None:
        self.stretches += 1
        super()._stretch(full, base, a, b)


HUGE = 100_000


@pytest.mark.parametrize(
    ("unit", "events_per_unit"),
    [
        ("x", 0),  # one word, no spaces: cut by max_chars only
        ("a.", 0),  # punctuation inside one word decides nothing
        ("ab ", 0),  # plain words
        ("ab, ", 1),  # every word is a clause boundary
        ("Sure, it is sunny today. ", 2),
        ("जी हाँ, आज धूप है। ", 2),
        ("今天天气晴朗。气温二十一度，", 2),
        (" ", 0),
        ("a\n", 1),
        ("**b** [l](u) ", 0),
    ],
)
def test_a_huge_delta_is_one_pass_with_bounded_work(unit: str, events_per_unit: int) -> None:
    """A 100k-character delta: Python-level steps (events) happen only where a boundary can be decided,
    not per character or per word (the scanning is in the regex engine); every chunk is within
    max_chars, nothing is lost, and memory stays a small multiple of the input."""
    import sys
    import tracemalloc

    text = (unit * (HUGE // len(unit) + 1))[:HUGE]
    chunker = CountingChunker()
    tracemalloc.start()
    try:
        chunks = chunker.push(text) + chunker.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "".join(chunks) == strip_markdown(text)
    assert all(0 < len(chunk.strip()) <= 140 for chunk in chunks)
    assert chunker.events <= events_per_unit * (HUGE // len(unit) + 1) + 2
    assert chunker.stretches <= chunker.events + 2
    # A copy or two of the input and the chunks' own objects; the old chunker held a one-character string
    # per character (8-80 bytes each) and a list of every word and space.
    assert peak < 4 * sys.getsizeof(text) + 120 * len(chunks)


def test_a_huge_delta_finishes_in_bounded_time() -> None:
    """Shapes that were quadratic (a regex rescanned the rest of the delta from every full stop) take
    linear time: 1 MB of each, in a subprocess that is stopped after a generous 60 s."""
    import subprocess
    import sys

    code = (
        "from voiceagent.chunker import SpeechChunker\n"
        "for unit in ('a.', '3.14,', 'a-b '):\n"
        "    c = SpeechChunker()\n"
        "    out = c.push(unit * (1_000_000 // len(unit))) + c.flush()\n"
        "    assert all(len(x.strip()) <= 140 for x in out)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


# --- properties -----------------------------------------------------------------------------------

MARKDOWNISH = "ab Z9.,;:!?*_`~#->+[]()!\n\t $—…'\"" + "é"
PUNCTUATION_HEAVY = "aB1 .,;:!?-—…\n" + "Dr.e.g.No 3.14"
# Words and separators that sit on the rules' edges (list numbers, initials, line breaks of every kind).
WORDS = ["hello", "1.", "2", "3.14", "Dr.", "U.S.", "a.m.", "No.", "é2", "w7.", "foo,", "(yes)", '"ok"']
WORDS += ["-", "—", "…", "...", "wow!", "why?", "snake_case", "**b**", "`c`", "[l](u)", "#", "*"]
# Other scripts: dandas, CJK and Arabic marks with and without a space after them, full-width digits,
# closers after a mark, a mark past U+FFFF (Brahmi danda) and an emoji (past U+FFFF, not a mark).
WORDS += ["है।", "नमस्ते", "॥१॥", "好。", "你好", "。」", "？！", "，", "、", "١٢", "؟", "،", "۔", "३", "１"]
WORDS += ["３．１４", "”", "𑁇", "😀", "x。", "ok.", '।"', "ঃ"]
SEPARATORS = [" ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u2028", ""]
SCRIPTS = "है। नमस्ते॥१२ 好。你，好！？」、 ؟،۔ ১২ ３．１４ 𑁇😀𝐀.,!?a\n"
prose = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=60).map(
    lambda pairs: "".join(word + separator for word, separator in pairs)
)
texts = st.one_of(
    st.text(alphabet=MARKDOWNISH, max_size=300),
    st.text(alphabet=PUNCTUATION_HEAVY, max_size=300),
    st.text(alphabet=SCRIPTS, max_size=300),
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


def feed_per_char(md: _MarkdownFilter, text: str) -> str:
    """The markdown filter's reference: every character through its per-character machine (_step)."""
    for char in text:
        md._char(char)
    out = "".join(md._out)
    md._out.clear()
    return out


@settings(max_examples=400, deadline=None)
@given(split_text())
def test_markdown_filter_bulk_paths_match_the_character_machine(split: tuple[str, list[str]]) -> None:
    _, deltas = split
    fast, slow = _MarkdownFilter(), _MarkdownFilter()
    slow.feed = lambda text: feed_per_char(slow, text)  # type: ignore[method-assign]
    for delta in ["plain start\n", *deltas]:
        assert fast.feed(delta) == slow.feed(delta)
        assert fast.preview() == slow.preview()
    assert fast.finish() == slow.finish()


def test_markdown_filter_fast_path_is_taken_for_plain_inline_text() -> None:
    md = _MarkdownFilter()
    md.feed("x")  # leaves line start
    assert md._plain(" sunny today, 21 degrees.")
    assert not md._plain(" **bold**") and not md._plain("line\nbreak") and not md._plain("[link")


# --- the independent reference (tests/chunker_reference.py) --------------------------------------


@settings(max_examples=500, deadline=None)
@given(split_text(), st.integers(1, 40), st.integers(0, 12))
def test_chunks_match_the_independent_reference(
    split: tuple[str, list[str]], max_chars: int, min_first: int
) -> None:
    text, deltas = split
    chunks = chunks_of(deltas, max_chars=max_chars, min_first_chars=min_first, strip_markdown=False)
    assert chunks == reference_chunks(text, max_chars, min_first)


@settings(max_examples=200, deadline=None)
@given(split_text(), st.integers(1, 40), st.integers(0, 12))
def test_chunks_after_markdown_match_the_independent_reference(
    split: tuple[str, list[str]], max_chars: int, min_first: int
) -> None:
    text, deltas = split
    chunks = chunks_of(deltas, max_chars=max_chars, min_first_chars=min_first)
    assert chunks == reference_chunks(strip_markdown(text), max_chars, min_first)


@settings(max_examples=200, deadline=None)
@given(split_text(), st.integers(1, 40), st.integers(0, 12))
def test_a_second_text_without_flush_matches_the_reference(
    split: tuple[str, list[str]], max_chars: int, min_first: int
) -> None:
    text, deltas = split
    chunks = chunks_of(
        [*deltas, *deltas], max_chars=max_chars, min_first_chars=min_first, strip_markdown=False
    )
    assert chunks == reference_chunks(text + text, max_chars, min_first)


def test_reference_agrees_with_the_examples() -> None:
    """The reference is itself held to the hand-written examples above (it could be wrong too)."""
    text = "Sure, let me check. It is sunny, warm and dry in Paris today! Anything else? Bye."
    assert reference_chunks(text, 140, 8) == chunks_of(list(text))
    assert reference_chunks("Ok. Yes. Sure thing.", 140, 12) == ["Ok. ", "Yes. ", "Sure thing."]
    assert reference_chunks("好的，今天天气晴朗。气温二十一度！", 140, 0) == [
        "好的，",
        "今天天气晴朗。",
        "气温二十一度！",
    ]
    assert reference_chunks("x" * 300, 140, 8) == ["x" * 140, "x" * 140, "x" * 20]


# --- fast paths are taken -----------------------------------------------------------------------


def test_chunker_delta_fast_path_is_taken_for_plain_words() -> None:
    chunker = SpeechChunker(strip_markdown=False)
    chunker.push("Hello there, how")  # the first chunk is cut; the text is past its line start
    chunker._scan = None  # type: ignore[assignment,method-assign]  # the general path would fail
    for token in [" are", " you", " today", " Paris."]:
        assert chunker.push(token) == []
    assert chunker.pending == "how are you today Paris."


def test_chunker_fast_path_is_taken_inside_words() -> None:
    chunker = SpeechChunker(strip_markdown=False)
    chunker.push("Hello there, x")
    chunker._scan = None  # type: ignore[assignment,method-assign]  # the general path would fail
    chunker.push("ylophone")
    assert chunker.pending.endswith("xylophone")
