"""Moved to ``voiceagent.replay.cassette`` (record and replay are one package now).

This module re-exports it so older imports keep working; import from the new place.
"""

from voiceagent.replay.cassette import (
    CASSETTE_VERSION,
    END_HOWS,
    RECORD_TYPES,
    Cassette,
    CassetteError,
    CassetteWriter,
    ChunkRecord,
    EndHow,
    EndRecord,
    Exchange,
    Header,
    Record,
    RequestRecord,
    ResponseRecord,
    SinkRecord,
    SpeechRecord,
    STTRecord,
    ToolRecord,
    TurnRecord,
    decode,
    encode,
    redact,
)

__all__ = [
    "CASSETTE_VERSION",
    "END_HOWS",
    "RECORD_TYPES",
    "Cassette",
    "CassetteError",
    "CassetteWriter",
    "ChunkRecord",
    "EndHow",
    "EndRecord",
    "Exchange",
    "Header",
    "Record",
    "RequestRecord",
    "ResponseRecord",
    "STTRecord",
    "SinkRecord",
    "SpeechRecord",
    "ToolRecord",
    "TurnRecord",
    "decode",
    "encode",
    "redact",
]
