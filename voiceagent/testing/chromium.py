"""Moved: the Chromium DevTools driver lives beside its adapter, in ``voiceagent.adapters.web.chromium``.

This module re-exports it so older imports keep working; import from the new place.
"""

from voiceagent.adapters.web.chromium import (
    BASE_FLAGS,
    CHROMIUM_CANDIDATES,
    CDPError,
    Chromium,
    Page,
    find_chromium,
)

__all__ = ["BASE_FLAGS", "CHROMIUM_CANDIDATES", "CDPError", "Chromium", "Page", "find_chromium"]
