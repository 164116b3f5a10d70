"""Finding and opening cassettes for the command line: a path, or the name of one shipped with voiceagent."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voiceagent.replay.cassette import Cassette

SHIPPED_PACKAGE = "voiceagent.examples"  # examples/cassettes/*.jsonl is package data


def shipped_names() -> list[str]:
    folder = files(SHIPPED_PACKAGE).joinpath("cassettes")
    return sorted(p.name.removesuffix(".jsonl") for p in folder.iterdir() if p.name.endswith(".jsonl"))


def shipped(name: str) -> Path:
    # The package is installed as plain files (a wheel or an editable checkout), never zipped.
    return Path(str(files(SHIPPED_PACKAGE).joinpath("cassettes", f"{name}.jsonl")))


def resolve(spec: str | Path) -> Path:
    """``spec`` as a path if it is a file (or looks like a path), else the shipped cassette of that name."""
    path = Path(spec)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    candidate = shipped(str(spec))
    return candidate if candidate.is_file() else path


def _not_a_cassette(path: Path, first: bytes) -> str | None:
    """Why ``path`` is not a cassette at all, judged by its first line (None: it may be one)."""
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not text (a cassette is JSON lines, e.g. from voiceagent demo --record)"
    if not text.strip():
        return "it is empty" if not first else "its first line is empty"
    try:
        record = json.loads(text)
    except ValueError:
        return "its first line is not JSON (a cassette is JSON lines, the first one its header)"
    if not isinstance(record, dict) or record.get("type") != "header":
        return 'its first line is not a cassette header ({"type": "header", "version": 1, ...})'
    return None


def load(spec: str | Path) -> Cassette:
    """The cassette at ``spec`` (see ``resolve``); a file that is no cassette raises a CassetteError."""
    from voiceagent.replay.cassette import Cassette, CassetteError

    path = resolve(spec)
    try:
        with path.open("rb") as file:
            first = file.readline(1 << 20)
    except OSError as exc:
        names = ", ".join(shipped_names())
        raise CassetteError(
            f"cannot read cassette {path}: {exc.strerror or exc} (shipped cassettes: {names})"
        ) from exc
    why = _not_a_cassette(path, first)
    if why is not None:
        raise CassetteError(f"{path} is not a voiceagent cassette: {why}")
    try:
        return Cassette.load(path)
    except UnicodeDecodeError as exc:
        raise CassetteError(f"{path}: not UTF-8 text at byte {exc.start}") from exc
