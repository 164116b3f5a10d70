"""Typed errors. Every LLM error carries the request id the server assigned, when there was one."""

from __future__ import annotations


class VoiceAgentError(Exception):
    """Base class of every error voiceagent raises."""


class LLMError(VoiceAgentError):
    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.message} (request_id={self.request_id})" if self.request_id else self.message


class LLMStatusError(LLMError):
    """The server answered with a non-2xx status."""

    def __init__(
        self, message: str, *, status_code: int, request_id: str | None = None, error_type: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.status_code = status_code
        self.error_type = error_type

    def __str__(self) -> str:
        return f"HTTP {self.status_code}: {super().__str__()}"


class RateLimitError(LLMStatusError):
    """HTTP 429: the account's RPM or concurrency limit was hit. Not retried automatically."""

    @property
    def is_concurrency_limit(self) -> bool:
        return "concurrency limit" in self.message.lower()


class LLMConnectionError(LLMError):
    """No HTTP response could be had (refused, reset, timed out) after every allowed attempt."""


class StreamInterruptedError(LLMError):
    """The stream broke after it started; what had arrived was already delivered, so it is not retried."""


class StreamProtocolError(LLMError):
    """The server sent an error event inside a 200 stream."""


class ToolDefinitionError(VoiceAgentError):
    """A function cannot be turned into a tool (unsupported parameter type, missing name...)."""
