"""Offline TTS through the local ``espeak-ng`` binary (Debian/Ubuntu: ``apt-get install espeak-ng``).

One process per text: the text goes in on stdin (so text starting with ``-`` is never taken as
an option), a WAV stream comes out on stdout and is delivered as it arrives, so the first audio
reaches the output before the whole text is synthesized. ``cancel()`` kills the process.
``EspeakEngine`` is the ``TTSEngine``; ``EspeakSink`` the ``Speaker`` over it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import anyio

from voiceagent.audio import WavStreamDecoder
from voiceagent.errors import TTSError
from voiceagent.logs import get_logger
from voiceagent.speaker import Speaker
from voiceagent.tts import AudioOutput

__all__ = ["EspeakEngine", "EspeakSink", "available_voices"]

logger = get_logger(__name__)

_READ_SIZE = 4096
_STDERR_LIMIT = 4000
# The whole text is written to stdin before stdout is read: this many characters (at most 16 KB of
# UTF-8) always fit the pipe's buffer, so espeak-ng can never block on a full stdout meanwhile.
MAX_CHARS = 4000
ESPEAK_RATE = 22050


class EspeakEngine:
    """``TTSEngine`` on espeak-ng.

    ``voice``: an espeak-ng voice (``espeak-ng --voices``), e.g. ``en-us``, ``en-gb``, ``de``, ``en-us+f3``.
    ``words_per_minute``: speaking rate (espeak ``-s``, 80..450). ``pitch`` 0..99, ``amplitude`` 0..200,
    ``word_gap`` in 10 ms units. Audio is espeak's 22050 Hz (the WAV header says so).
    """

    def __init__(
        self,
        *,
        voice: str = "en-us",
        words_per_minute: int = 175,
        pitch: int | None = None,
        amplitude: int | None = None,
        word_gap: int | None = None,
        binary: str = "espeak-ng",
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise TTSError(
                f"{binary!r} was not found on PATH; install it (Debian/Ubuntu: apt-get install espeak-ng)"
            )
        if not 80 <= words_per_minute <= 450:
            raise ValueError(f"words_per_minute must be 80..450, got {words_per_minute}")
        if pitch is not None and not 0 <= pitch <= 99:
            raise ValueError(f"pitch must be 0..99, got {pitch}")
        if amplitude is not None and not 0 <= amplitude <= 200:
            raise ValueError(f"amplitude must be 0..200, got {amplitude}")
        if word_gap is not None and word_gap < 0:
            raise ValueError(f"word_gap must not be negative, got {word_gap}")
        self.binary = path
        self.voice = _check_voice(path, voice)
        self.words_per_minute = words_per_minute
        self.pitch = pitch
        self.amplitude = amplitude
        self.word_gap = word_gap
        self.sample_rate = ESPEAK_RATE

    @property
    def command(self) -> list[str]:
        cmd = [
            self.binary,
            "--stdout",
            "--stdin",
            "-b",
            "1",
            "-v",
            self.voice,
            "-s",
            str(self.words_per_minute),
        ]
        for flag, value in (("-p", self.pitch), ("-a", self.amplitude), ("-g", self.word_gap)):
            if value is not None:
                cmd += [flag, str(value)]
        return cmd

    async def interrupt(self) -> None:
        return None  # stopping the synthesis kills the process

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        # stderr goes to a file, not a pipe, so no reader task must outlive a yield.
        with tempfile.TemporaryFile() as stderr_file:
            process = await anyio.open_process(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file
            )
            assert process.stdin is not None and process.stdout is not None
            decoder = WavStreamDecoder()
            try:
                try:
                    await process.stdin.send(text.encode("utf-8"))
                    await process.stdin.aclose()
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass  # espeak-ng exited without reading its input; its exit status says why
                async for data in process.stdout:
                    try:
                        pcm16 = decoder.feed(data)
                    except ValueError as exc:
                        raise TTSError(f"espeak-ng wrote something other than WAV: {exc}") from exc
                    if pcm16 and decoder.header is not None:
                        self.sample_rate = decoder.header.sample_rate
                        yield pcm16
                returncode = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                with anyio.CancelScope(shield=True):
                    await process.aclose()
            stderr_file.seek(0)
            message = stderr_file.read(_STDERR_LIMIT).decode("utf-8", "replace").strip()
        if returncode != 0:
            raise TTSError(f"espeak-ng exited with status {returncode}: {message or 'no message'}")
        if decoder.header is None:
            raise TTSError(f"espeak-ng produced no audio: {message or 'no message'}")
        if message:
            logger.warning("espeak-ng: %s", message)


class EspeakSink(Speaker):
    """The ``TTSSink`` on espeak-ng: a ``Speaker`` over an ``EspeakEngine`` built from the same keyword
    arguments, resampling to ``output.sample_rate``."""

    engine: EspeakEngine

    def __init__(self, output: AudioOutput, **options: Any) -> None:
        super().__init__(EspeakEngine(**options), output, max_chars=MAX_CHARS)


def available_voices(binary: str = "espeak-ng") -> set[str]:
    """Every name ``-v`` accepts: languages, voice names and voice files (lowercased)."""
    path = shutil.which(binary) or binary
    listing = subprocess.run(
        [path, "--voices"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            # Pty Language Age/Gender VoiceName File [Other Languages]
            names.update(f.lower() for f in (fields[1], fields[3], fields[4]))
            names.add(fields[4].rsplit("/", 1)[-1].lower())
    return names


def _check_voice(binary: str, voice: str) -> str:
    # espeak-ng silently falls back to its default voice for an unknown name when writing to a pipe,
    # so a typo would go unnoticed: check it here. "+f3" style variants ride on a base voice.
    base = voice.split("+", 1)[0].lower()
    if base not in available_voices(binary):
        raise TTSError(f"espeak-ng voice {voice!r} does not exist; list them with `espeak-ng --voices`")
    return voice
