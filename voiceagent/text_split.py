"""Split text for TTS engines with a per-request character limit."""

from __future__ import annotations

import re

__all__ = ["split_text"]

_SENTENCE_END = re.compile(r"[.!?;:。！？]\s")


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters that join back to it exactly,
    cutting after a sentence end if possible, else after a space, else mid-word."""
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max((m.end() for m in _SENTENCE_END.finditer(window)), default=0)
        if cut == 0:
            cut = window.rfind(" ") + 1  # keep the space with the piece before it
        if cut == 0:
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces
