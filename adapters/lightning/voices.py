"""The Lightning voice catalog (``GET /waves/v1/lightning-v3.1/get_voices``) and the start-up voice check.

The catalog is the union of the standard and Pro voices, with no per-voice "is Pro" flag (the
get-voices API reference says so), so the check can confirm that a voice exists and speaks the
requested language, but not that it belongs to the requested model's pool: that pairing stays the
caller's (see ``DEFAULT_VOICES`` and the model cards). Cloned voices (``voice_...``) are not in the
shared catalog and are not checked. A catalog that cannot be fetched is logged, never fatal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2

from voiceagent.errors import TTSError
from voiceagent.logs import get_logger

__all__ = ["Voice", "check_voice", "fetch_voices", "voices_url_for_http", "voices_url_for_ws"]

logger = get_logger(__name__)

VOICES_PATH = "/lightning-v3.1/get_voices"  # the voices route spells the model with hyphens
CACHE_SECONDS = 600.0
MAX_CATALOG_BYTES = 8 * 1024 * 1024
# Request language codes -> the names the catalog's tags.language uses.
LANGUAGE_NAMES = {
    "en": "english",
    "hi": "hindi",
    "ta": "tamil",
    "es": "spanish",
    "kn": "kannada",
    "mr": "marathi",
    "te": "telugu",
    "or": "odia",
    "pa": "punjabi",
    "ml": "malayalam",
    "gu": "gujarati",
    "bn": "bengali",
    "fr": "french",
    "de": "german",
    "it": "italian",
    "nl": "dutch",
    "sv": "swedish",
    "pt": "portuguese",
    "pl": "polish",
    "ru": "russian",
}


@dataclass(frozen=True, slots=True)
class Voice:
    voice_id: str
    display_name: str
    languages: tuple[str, ...]


# (voices URL, key digest) -> (fetched at, catalog); sinks of one process share one lookup.
_CACHE: dict[tuple[str, str], tuple[float, dict[str, Voice]]] = {}


def voices_url_for_http(base_url: str) -> str:
    return base_url.rstrip("/") + VOICES_PATH


def voices_url_for_ws(ws_url: str) -> str | None:
    """The catalog URL next to a ``.../tts/live`` WebSocket URL, or None when it cannot be derived."""
    parts = urlsplit(ws_url)
    if not parts.path.endswith("/tts/live") or parts.scheme not in ("ws", "wss"):
        return None
    scheme = "https" if parts.scheme == "wss" else "http"
    path = parts.path.removesuffix("/tts/live") + VOICES_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


async def fetch_voices(url: str, api_key: str, *, request_timeout: float = 10.0) -> dict[str, Voice]:
    """The catalog by voice id. Raises ``TTSError`` on any failure (HTTP status, transport, bad JSON)."""
    try:
        async with httpx2.AsyncClient(timeout=request_timeout) as client:
            response = await client.get(url, headers={"Authorization": f"Bearer {api_key}"})
    except httpx2.HTTPError as exc:
        raise TTSError(f"cannot fetch the Lightning voice catalog at {url}: {exc!r}") from exc
    if response.status_code != 200:
        raise TTSError(
            f"Lightning voice catalog: HTTP {response.status_code}: {response.text[:200]}",
            status_code=response.status_code,
        )
    if len(response.content) > MAX_CATALOG_BYTES:
        raise TTSError("Lightning voice catalog is larger than expected")
    try:
        doc = json.loads(response.content)
    except (ValueError, RecursionError) as exc:
        raise TTSError("Lightning voice catalog is not JSON") from exc
    voices = doc.get("voices") if isinstance(doc, dict) else None
    if not isinstance(voices, list):
        raise TTSError("Lightning voice catalog has no `voices` list")
    catalog: dict[str, Voice] = {}
    for item in voices:
        if not isinstance(item, dict) or not isinstance(item.get("voiceId"), str):
            continue
        tags = item.get("tags") if isinstance(item.get("tags"), dict) else {}
        languages = tags.get("language") if isinstance(tags, dict) else None
        catalog[item["voiceId"]] = Voice(
            item["voiceId"],
            str(item.get("displayName") or item["voiceId"]),
            tuple(str(x).lower() for x in languages) if isinstance(languages, list) else (),
        )
    return catalog


async def check_voice(
    voice_id: str, language: str, *, url: str, api_key: str, request_timeout: float = 10.0
) -> None:
    """Raise ``TTSError`` (code ``UNKNOWN_VOICE``) when the catalog does not list ``voice_id``; log a
    warning when the voice is not tagged with ``language``."""
    if voice_id.startswith("voice_"):
        return  # a cloned voice: not in the shared catalog
    key = (url, hashlib.sha256(api_key.encode()).hexdigest())
    cached = _CACHE.get(key)
    if cached is not None and anyio.current_time() - cached[0] < CACHE_SECONDS:
        catalog = cached[1]
    else:
        try:
            catalog = await fetch_voices(url, api_key, request_timeout=request_timeout)
        except TTSError as exc:
            logger.warning("voice %r not checked: %s", voice_id, exc)
            return
        _CACHE[key] = (anyio.current_time(), catalog)
    voice = catalog.get(voice_id)
    if voice is None:
        raise TTSError(
            f"Lightning has no voice {voice_id!r} (the catalog lists {len(catalog)}); pick one from "
            "GET /waves/v1/lightning-v3.1/get_voices, or pass check_voice=False",
            code="UNKNOWN_VOICE",
        )
    wanted = LANGUAGE_NAMES.get(language)
    if wanted is not None and voice.languages and wanted not in voice.languages:
        logger.warning(
            "Lightning voice %r is tagged %s, not %s: the service accepts it but speaks English-pronounced "
            "output (use language='auto' or a voice of that language)",
            voice_id,
            "/".join(voice.languages),
            wanted,
        )
