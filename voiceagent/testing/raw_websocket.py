"""A WebSocket client written by hand over a blocking socket (run it in a thread): it sends what a
real client library never would (invalid UTF-8 text, a 10 MB length with no payload behind it) and
can stop reading entirely (a small receive buffer, then no ``recv``), for adversarial tests and benches.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

CONNECT_TIMEOUT = 20.0


@dataclass
class RawSocket:
    sock: socket.socket
    status: int

    def send_frame(self, opcode: int, payload: bytes, *, claimed_length: int | None = None) -> None:
        """One masked client frame; ``claimed_length`` announces more bytes than are sent."""
        length = len(payload) if claimed_length is None else claimed_length
        head = bytes([0x80 | opcode])
        if length < 126:
            head += bytes([0x80 | length])
        elif length < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(0x1, text.encode() if isinstance(text, str) else text)

    def read_close(self) -> tuple[int | None, bytes]:
        """Read until the server's close frame (code, raw reason) or EOF (None)."""
        data = b""
        while True:
            while len(data) >= 2:
                opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
                if length == 126:
                    length, start = struct.unpack("!H", data[2:4])[0], 4
                elif length == 127:
                    length, start = struct.unpack("!Q", data[2:10])[0], 10
                if len(data) < start + length:
                    break
                payload, data = data[start : start + length], data[start + length :]
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return code, payload[2:]
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None, b""
            if not chunk:
                return None, b""
            data += chunk

    def close(self) -> None:
        self.sock.close()


def raw_upgrade(
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    rcvbuf: int | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> RawSocket:
    """A blocking upgrade (run it in a thread): the status line is read, nothing after it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the advertised window is small too
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        byte = sock.recv(1)
        if not byte:
            break
        response += byte
    return RawSocket(sock, int(response.split(b" ", 2)[1]) if response else 0)
