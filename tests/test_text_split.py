from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voiceagent.playback import heard_chars
from voiceagent.text_split import split_text


@given(st.text(alphabet=st.sampled_from("ab .!?\n日"), max_size=900), st.integers(min_value=1, max_value=300))
def test_split_text_pieces_fit_and_join_back(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    assert "".join(pieces) == text
    assert all(0 < len(p) <= limit for p in pieces)


def test_split_prefers_sentence_ends_then_spaces() -> None:
    assert split_text("One two. Three four five.", 20) == ["One two. ", "Three four five."]
    assert split_text("alpha beta gamma", 12) == ["alpha beta ", "gamma"]
    with pytest.raises(ValueError):
        split_text("x", 0)


@given(st.text(max_size=200), st.floats(min_value=-1, max_value=2))
def test_heard_chars_is_a_prefix_length_on_a_word_boundary(text: str, fraction: float) -> None:
    n = heard_chars(text, fraction)
    assert 0 <= n <= len(text)
    assert n in (0, len(text)) or text[n] == " "
