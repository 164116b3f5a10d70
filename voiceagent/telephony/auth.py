"""``UpgradeAuth``: how a provider proves a media-stream WebSocket upgrade is really from it.

Servers validate by default (Twilio's ``X-Twilio-Signature``, Plivo's ``X-Plivo-Signature-V3``, or a
provider-agnostic secret in the stream URL where the provider signs nothing); running unchecked takes
an explicit ``allow_unsigned=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """The parts of an HTTP upgrade request that authentication reads, independent of the server."""

    path: str  # with the query string, as sent
    headers: tuple[tuple[str, str], ...]  # in order, names as sent; a name may repeat
    public_url: str | None = None  # the wss:// URL the provider was told to dial, when configured

    def get_all(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    @property
    def url(self) -> str:
        """The URL the provider dialed: ``public_url`` when set, else ``wss://`` + Host + path."""
        if self.public_url is not None:
            return self.public_url
        hosts = self.get_all("Host")
        return f"wss://{hosts[0] if len(hosts) == 1 else ''}{self.path}"


class UpgradeAuth(Protocol):
    def check(self, request: UpgradeRequest) -> str | None:
        """``None`` accepts the upgrade; otherwise the reason it is refused (the server answers 403 and
        logs the reason, never the secret)."""
        ...
