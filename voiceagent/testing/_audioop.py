"""``audioop`` for the test fakes, without its 3.11/3.12 deprecation warning (audioop-lts on 3.13+)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["audioop"]
