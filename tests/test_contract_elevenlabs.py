"""The official ``elevenlabs`` SDK against our fake, and our engine's messages against the SDK's own types.

The SDK's realtime client (``client.text_to_speech.convert_realtime``) always connects with ``wss://``
(it rewrites the base URL's scheme), so the fake serves TLS here with a throwaway self-signed
certificate for 127.0.0.1 that the SDK trusts through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.types import CloseConnection, InitializeConnection, SendText

from tests.audio_helpers import tone_power
from voiceagent.adapters.elevenlabs import ElevenLabsSink
from voiceagent.adapters.elevenlabs_fake import FakeElevenLabsServer
from voiceagent.audio_output import CollectingOutput

pytestmark = pytest.mark.anyio


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the fake's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the SDK's default SSL context trusts it
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
async def tls_server(certificate: ssl.SSLContext) -> AsyncIterator[FakeElevenLabsServer]:
    async with FakeElevenLabsServer(ssl=certificate) as server:
        yield server


def sdk_convert(server: FakeElevenLabsServer, texts: list[str]) -> bytes:
    client = ElevenLabs(api_key="test-key", base_url=server.base_url.replace("wss://", "https://"))
    audio = client.text_to_speech.convert_realtime(
        "JBFqnCBsd6RMkjVDRZzb", text=iter(texts), model_id="eleven_flash_v2_5", output_format="pcm_16000"
    )
    return b"".join(audio)


async def test_the_sdk_realtime_client_speaks_with_the_fake(tls_server: FakeElevenLabsServer) -> None:
    with anyio.fail_after(20):
        pcm = await anyio.to_thread.run_sync(sdk_convert, tls_server, ["Hello from ", "the SDK."])
    [upgrade] = tls_server.upgrades
    assert upgrade.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream-input"
    assert upgrade.query == {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000"}
    assert upgrade.headers["xi-api-key"] == "test-key"
    [utterance] = tls_server.utterances
    assert pcm == utterance.pcm16 and pcm
    assert tone_power(pcm, 16000, 440) > 100 * tone_power(pcm, 16000, 1500)
    assert utterance.text.strip() == "Hello from the SDK."


def _conforms(model: Any, message: dict[str, Any]) -> None:
    # The SDK's models allow extra keys, so check the keys first: every one is a field of the type.
    assert set(message) <= set(model.model_fields), (model.__name__, message)
    assert model.model_validate(message).model_dump(exclude_none=True) == message


async def test_our_messages_are_the_sdks_request_types(tls_server: FakeElevenLabsServer) -> None:
    # Our engine against the same TLS fake: the SDK's wss:// base URL and ours are the same address.
    sink = ElevenLabsSink(
        CollectingOutput(16000),
        api_key="test-key",
        voice_id="JBFqnCBsd6RMkjVDRZzb",
        base_url=tls_server.base_url,
        voice_settings={"stability": 0.5, "similarity_boost": 0.75, "speed": 1.1},
        generation_config={"chunk_length_schedule": [50, 120]},
    )
    with anyio.fail_after(20):
        await sink.speak("Checked against the SDK.")
        await sink.flush()
        await anyio.to_thread.run_sync(sdk_convert, tls_server, ["And the SDK itself."])
    ours, theirs = (u.messages for u in tls_server.utterances)
    bos, text, eos = ours
    _conforms(InitializeConnection, bos)
    _conforms(SendText, text)
    _conforms(CloseConnection, eos)
    # Same shape as the SDK's own: a " " BOS first, text ending in a space, "" last.
    assert theirs[0]["text"] == bos["text"] == " "
    assert all(m["text"].endswith(" ") for m in theirs[1:-1]) and text["text"].endswith(" ")
    assert theirs[-1] == eos == {"text": ""}
    # And the upgrade is the SDK's: same path, query keys and auth header.
    assert tls_server.upgrades[0].path == tls_server.upgrades[1].path
    assert tls_server.upgrades[0].query.keys() == tls_server.upgrades[1].query.keys()
    assert tls_server.upgrades[0].headers["xi-api-key"] == tls_server.upgrades[1].headers["xi-api-key"]
