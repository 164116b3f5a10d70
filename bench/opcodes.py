"""A ``sys.settrace`` tracer that counts Python opcode events: a deterministic stand-in for CPU time on a
noisy machine (C code, ``json``'s scanner or the selector, is not counted)."""

from __future__ import annotations

from types import FrameType
from typing import Any


class OpcodeCounter:
    """``sys.settrace(counter)``; ``counter.count`` is the opcodes run since, in every frame or, with
    ``only``, in frames of that source file alone."""

    def __init__(self, only: str | None = None) -> None:
        self.count = 0
        self.only = only

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            self.count += 1
        elif event == "call":
            if self.only is not None and frame.f_code.co_filename != self.only:
                return None
            frame.f_trace_opcodes = True
        return self
