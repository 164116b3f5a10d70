"""pytest plugin shipped with voiceagent (``-p voiceagent.testing.pytest_plugin``).

Tests are anyio tests (``@pytest.mark.anyio``) on the asyncio backend.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
