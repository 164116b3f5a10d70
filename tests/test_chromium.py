"""The headless-Chromium driver the web tests and the web bot's self-test use: a browser that goes away
without a close frame (as it may after Browser.close, or when killed) ends the session cleanly."""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from voiceagent.adapters.web.chromium import Chromium, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")


@pytest.mark.anyio
async def test_a_browser_that_dies_without_a_close_frame_is_not_an_error() -> None:
    with anyio.fail_after(60):
        async with Chromium() as browser:
            assert browser._process is not None
            os.killpg(browser._process.pid, signal.SIGKILL)  # no close frame on the DevTools socket
            await browser._process.wait()
