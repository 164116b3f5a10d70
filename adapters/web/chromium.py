"""Drive a real headless Chromium over the DevTools protocol (CDP) with the ``websockets`` library.

No browser download and no extra dependency: it launches the system Chromium (Debian's
``/usr/bin/chromium``) with ``--remote-debugging-port=0``, reads the port from the profile's
``DevToolsActivePort`` file, and speaks CDP over one WebSocket (flat sessions per page).
A WAV file can stand in for the microphone (``fake_microphone``).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voiceagent.logs import get_logger

log = get_logger(__name__)

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
)


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


class CDPError(Exception):
    pass


class Chromium:
    """``async with Chromium(fake_microphone=wav) as browser: page = await browser.new_page(url)``."""

    def __init__(
        self,
        executable: str | None = None,
        *,
        fake_microphone: Path | None = None,
        extra_flags: Sequence[str] = (),
        startup_timeout: float = 60.0,
    ) -> None:
        found = executable or find_chromium()
        if found is None:
            raise FileNotFoundError("chromium is not installed (apt-get install -y chromium)")
        self.executable = found
        self.fake_microphone = fake_microphone
        self.extra_flags = tuple(extra_flags)
        self.startup_timeout = startup_timeout
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._process: Process | None = None
        self._log: Any = None
        self._ws: ClientConnection | None = None
        self._tg: TaskGroup | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, anyio.abc.ObjectSendStream[dict[str, Any]]] = {}
        self.log_path: Path | None = None

    def _flags(self, profile: str) -> list[str]:
        flags = [*BASE_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0"]
        if self.fake_microphone is not None:
            flags += [
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={self.fake_microphone}",
            ]
        return [*flags, *self.extra_flags, "about:blank"]

    async def __aenter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="voiceagent-chromium-")
        profile = self._profile.name
        self.log_path = Path(profile) / "chromium.log"
        self._log = self.log_path.open("wb")
        self._process = await anyio.open_process(
            [self.executable, *self._flags(profile)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,  # its own process group, so cleanup reaches its helpers
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            with anyio.fail_after(self.startup_timeout):
                while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                    if self._process.returncode is not None:
                        raise RuntimeError(f"chromium exited at startup; log:\n{self.log_tail()}")
                    await anyio.sleep(0.05)
            port, path = port_file.read_text().splitlines()[:2]
            self._ws = await connect(f"ws://127.0.0.1:{port}{path}", max_size=64 * 2**20)
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            self._tg.start_soon(self._read_loop)
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._ws is not None:
                with anyio.move_on_after(5):
                    await self.send("Browser.close")
        except Exception:  # the browser may already be gone
            pass
        finally:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                await self._tg.__aexit__(None, None, None)
            await self._shutdown()

    async def _shutdown(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._ws is not None:
                await self._ws.close()
            if self._process is not None:
                with anyio.move_on_after(10):
                    await self._process.wait()
                if self._process.returncode is None:
                    os.killpg(self._process.pid, signal.SIGKILL)
                    await self._process.wait()
            if self._log is not None:
                self._log.close()
            if self._profile is not None:
                self._profile.cleanup()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            await self._read_messages(self._ws)
        except ConnectionClosed:  # the browser went away (after Browser.close it may not send a close frame)
            log.info("chromium: the DevTools connection closed")

    async def _read_messages(self, ws: ClientConnection) -> None:
        async for raw in ws:
            message = json.loads(raw)
            waiter = self._pending.pop(message.get("id", -1), None)
            if waiter is not None:
                await waiter.send(message)
            elif message.get("method") == "Runtime.consoleAPICalled":
                args = [a.get("value", a.get("description", "")) for a in message["params"]["args"]]
                log.info("page console.%s: %s", message["params"]["type"], " ".join(map(str, args)))
            elif message.get("method") == "Runtime.exceptionThrown":
                log.warning("page exception: %s", message["params"]["exceptionDetails"])

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        assert self._ws is not None
        call_id = next(self._ids)
        tx, rx = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._pending[call_id] = tx
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self._ws.send(json.dumps(message))
        async with rx:
            reply = await rx.receive()
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def new_page(self, url: str, *, width: int = 900, height: int = 700) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        await page.goto(url)
        return page


class Page:
    def __init__(self, browser: Chromium, session: str) -> None:
        self._browser = browser
        self._session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self._browser.send(method, params, self._session)

    async def goto(self, url: str) -> None:
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str, *, wait_seconds: float = 30.0) -> Any:
        """Wait until the JS ``condition`` is truthy (checked in the page every 20 ms); return its value."""
        script = (
            "new Promise((resolve, reject) => { const check = () => { try { const v = (CONDITION);"
            " if (v) resolve(v); else setTimeout(check, 20); } catch (e) { reject(e); } }; check(); })"
        ).replace("CONDITION", condition)
        with anyio.fail_after(wait_seconds):
            return await self.evaluate(script)

    async def click(self, selector: str) -> None:
        """A real mouse click (a user gesture, so audio may start) at the element's centre."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", {"format": "png"})
        await anyio.Path(path).write_bytes(base64.b64decode(data["data"]))
        return path
