"""``shelby serve``'s HTTP server: what the fleet relies on at the connection level."""

from __future__ import annotations

import json
import signal
import socket
import time
from typing import Any

from api._flow import register

HEALTH = b"GET /api/frontend/system/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole answer read from ``sock``: its head and its body."""
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
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {body!r}")
        body += chunk
    return head, body


def test_an_idle_connection_stays_open_across_a_heartbeat_interval(shelby_server: Any) -> None:
    """An agent's connection survives the gap between two heartbeats: the server does
    not close it after uvicorn's default 5 s, so a fleet does not reconnect each time."""
    with socket.create_connection(("127.0.0.1", shelby_server.port), timeout=10) as sock:
        sock.sendall(HEALTH)
        assert _response(sock)[0].startswith(b"HTTP/1.1 200")
        time.sleep(5.5)
        sock.sendall(HEALTH)
        assert _response(sock)[0].startswith(b"HTTP/1.1 200")


def test_stopping_answers_a_long_poll_instead_of_holding_the_shutdown(
    shelby_server: Any,
) -> None:
    """A node long-polling when the server is told to stop gets its answer (no job)
    at once, and the server stops cleanly: uvicorn does not wait out its grace period
    for the poll and then cancel it unanswered."""
    node = register(shelby_server, "waiting")

    def poll(wait: int) -> bytes:
        return (
            f"GET /api/jobs/poll?nodeId={node.node_id}&wait={wait} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {node.token}\r\n\r\n"
        ).encode()

    with socket.create_connection(("127.0.0.1", shelby_server.port), timeout=30) as sock:
        sock.sendall(poll(0))  # the connection is up and served
        assert _response(sock)[0].startswith(b"HTTP/1.1 200")
        sock.sendall(poll(30))
        # For the server to read it (an idle server takes milliseconds); had it not, the
        # test would fail for want of an answer, not pass.
        time.sleep(1)
        started = time.monotonic()
        shelby_server.proc.send_signal(signal.SIGTERM)
        head, body = _response(sock)
        answered_after = time.monotonic() - started
    shelby_server.stop()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body) == {"job": None}
    # Answered because the server is stopping: before uvicorn's 5 s grace ran out,
    # and long before the poll's own 30 s.
    assert answered_after < 4
    log = shelby_server.log_text()
    assert "Finished server process" in log  # uvicorn's clean end
    assert "timeout graceful shutdown exceeded" not in log
    assert "Exception in ASGI application" not in log
