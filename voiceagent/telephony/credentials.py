"""Credentials a provider's server or client takes as an argument or, by default, from the environment.

``FROM_ENV`` is the default of every such argument: the variable is read when the object is built (an
empty variable counts as unset), so a server fails at start-up, not on its first call.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["FROM_ENV", "credential", "upgrade_secret"]

FROM_ENV: Final = "from-env"


def credential(value: str | None, env: str) -> str | None:
    """``value`` as given (None: none), or ``$env`` when it is ``FROM_ENV`` (unset or empty: None)."""
    if value == FROM_ENV:
        return os.environ.get(env) or None
    return value


def upgrade_secret(value: str | None, env: str, *, allow_unsigned: bool, refusal: str) -> str | None:
    """The secret a media-stream server checks each WebSocket upgrade with (see ``credential``).

    Without one the server would take calls from anyone who learns its URL, on the owner's STT, LLM and
    TTS bills: that raises ``ValueError(refusal)`` unless ``allow_unsigned`` says so (then None).
    """
    secret = credential(value, env)
    if secret is None and not allow_unsigned:
        raise ValueError(refusal)
    return secret
