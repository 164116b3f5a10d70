"""The suite runs on asyncio (anyio's plugin would also run every anyio test on trio if it is installed)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
