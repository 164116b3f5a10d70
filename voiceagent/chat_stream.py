"""What a turn needs of an LLM client: ``ChatStreamer`` opens a ``ChatStream`` of raw chunks.

``voiceagent.llm.LLMClient`` is one; the recorder and the replay player are others. The protocols live in
their own module, beside the client and imported by both sides, so neither ``turn`` nor ``llm`` imports
the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from voiceagent.conversation import Message


class ChatStream(Protocol):
    request_id: str | None
    attempts: int
    malformed_chunks: int

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...


class ChatStreamer(Protocol):
    """What a turn needs of an LLM client (``voiceagent.LLMClient`` is one)."""

    def stream(
        self, messages: Sequence[Message], *, tools: Sequence[dict[str, Any]] | None = None, **params: Any
    ) -> AbstractAsyncContextManager[ChatStream]: ...
