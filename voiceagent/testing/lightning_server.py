"""Moved: the Lightning TTS fake lives beside its adapter, in ``voiceagent.adapters.lightning.fake``.

This module re-exports it so older imports keep working; import from the new place.
"""

from voiceagent.adapters.lightning.fake import (
    DEFAULT_CATALOG,
    MAX_CHARS,
    MODELS,
    OUTPUT_FORMATS,
    RETIRED_MODELS,
    SAMPLE_RATES,
    VOICES_PATH,
    FakeLightningServer,
    Upgrade,
    Utterance,
    catalog_voice,
    flat_error,
    spec_error,
)

__all__ = [
    "DEFAULT_CATALOG",
    "MAX_CHARS",
    "MODELS",
    "OUTPUT_FORMATS",
    "RETIRED_MODELS",
    "SAMPLE_RATES",
    "VOICES_PATH",
    "FakeLightningServer",
    "Upgrade",
    "Utterance",
    "catalog_voice",
    "flat_error",
    "spec_error",
]
