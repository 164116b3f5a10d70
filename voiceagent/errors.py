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


class LLMDeadlineError(LLMError):
    """A round's stream missed a deadline (``TurnConfig.first_token_timeout`` or ``round_timeout``): a server
    that sends headers and then nothing, or drips bytes, ends in the fallback line instead of dead air."""


class SpeechLimitError(LLMError):
    """A round's answer reached ``TurnConfig.max_round_chars``: the stream was closed, the rest unspoken."""


class TurnInProgressError(VoiceAgentError):
    """``Agent.respond()`` was called while another turn of the same agent was still running: two turns on
    one conversation would interleave into one garbled history, so the second is refused, not queued."""


class LimiterUnavailableError(LLMError):
    """A shared limiter's store (Redis) could not be reached: refused, timed out, auth failed.

    An ``LLMError``, so a turn that cannot get a slot speaks its fallback line instead of going silent.
    ``url`` is the store's address with any password masked."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class SlotTimeoutError(LLMError):
    """No concurrency slot came free within the limiter's deadline; the request was never sent."""


class ToolDefinitionError(VoiceAgentError):
    """A function cannot be turned into a tool (unsupported parameter type, missing name...)."""


class TTSError(VoiceAgentError):
    """A TTS engine failed: it answered with an error, or could not be run or reached.

    ``code`` is the engine's error code when it sent one; ``status_code`` the HTTP status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [f"HTTP {self.status_code}: " if self.status_code else "", self.message]
        if self.code:
            parts.append(f" (code={self.code})")
        if self.request_id:
            parts.append(f" (request_id={self.request_id})")
        return "".join(parts)


class TTSInterruptedError(TTSError):
    """The connection broke after some audio of the text had been delivered, so it was not resent
    (that would repeat audio the listener already heard)."""
