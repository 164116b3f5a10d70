"""Prompt-cache guard: notices when a request changes anything an earlier request already sent.

Within one conversation each request should extend the previous one: same tools, same messages, new
ones only at the end. Any other change makes the server re-read (and re-bill) the prompt from that
point on. The guard reports the first changed index so the bug is easy to find.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voiceagent.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CacheBust:
    index: int  # first message index that differs; -1 when the tools changed
    reason: str


class CacheGuard:
    def __init__(self) -> None:
        self._messages: list[str] = []
        self._tools: str | None = None
        self.busts = 0

    def state(self) -> tuple[list[str], str | None]:
        """What the guard remembers, to ``restore`` when a request is taken back (a discarded
        speculative reply): the next request is then compared with the one before it."""
        return list(self._messages), self._tools

    def restore(self, state: tuple[list[str], str | None]) -> None:
        self._messages, self._tools = list(state[0]), state[1]

    def check(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
    ) -> CacheBust | None:
        """Compare with the previous request and remember this one."""
        encoded = [json.dumps(m, sort_keys=True) for m in messages]
        tools_encoded = json.dumps(list(tools or ()), sort_keys=True)
        bust: CacheBust | None = None
        if self._tools is not None and tools_encoded != self._tools:
            bust = CacheBust(-1, "the tools list changed")
        else:
            for index, (old, new) in enumerate(zip(self._messages, encoded, strict=False)):
                if old != new:
                    bust = CacheBust(index, f"message {index} changed after it was sent")
                    break
            else:
                if len(encoded) < len(self._messages):
                    bust = CacheBust(len(encoded), "messages were removed after they were sent")
        self._messages, self._tools = encoded, tools_encoded
        if bust is not None:
            self.busts += 1
            log.warning("prompt cache busted: %s", bust.reason)
        return bust
