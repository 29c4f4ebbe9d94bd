"""``shelby serve``'s HTTP server: what the fleet relies on at the connection level."""

from __future__ import annotations

import socket
import time
from typing import Any

HEALTH = b"GET /api/frontend/system/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_an_idle_connection_stays_open_across_a_heartbeat_interval(shelby_server: Any) -> None:
    """An agent's connection survives the gap between two heartbeats: the server does
    not close it after uvicorn's default 5 s, so a fleet does not reconnect each time."""
    with socket.create_connection(("127.0.0.1", shelby_server.port), timeout=10) as sock:
        sock.sendall(HEALTH)
        assert _response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(5.5)
        sock.sendall(HEALTH)
        assert _response(sock).startswith(b"HTTP/1.1 200")
