"""The HTTP/1.1 protocol ``shelby serve`` runs: uvicorn's httptools protocol with bounds
on the request head, which httptools itself does not have.

Unbounded, a client could send megabytes of headers (all kept in memory until the
blank line), or open connections and send their heads a byte at a time, each held
open for ever. Here the request line and headers together may be ``max_head_bytes``
long (else 431) and must arrive within ``head_timeout`` seconds of the connection
opening or the request beginning (else 408, or a quiet close when nothing at all came);
either answer closes the connection.
The wait between requests on a kept-alive connection is uvicorn's own keep-alive
timeout. A request uvicorn cannot parse gets its 400 as ``{"detail": …}`` too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shelby.api.errors import error_body

__all__ = ["bounded_protocol"]

log = structlog.get_logger("shelby.http")

LINGER = 2.0  # seconds a refused connection is drained before it is closed
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 64 << 10
    head_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # a connection opens waiting for a request's head
        self._head_bytes = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    # --- the head's clock --------------------------------------------------------------

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._head_open:
            return
        if self._head_bytes == 0:
            # Nothing was sent (a browser's connection opened ahead of need): closed
            # quietly, as an idle keep-alive connection is, and a client retries on it.
            self.transport.close()
            return
        self._refuse(408, f"the request head did not arrive within {self.head_timeout:g} s")

    # --- uvicorn's protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # what follows a refusal is read and dropped until the close
        super().data_received(data)
        if not self._head_open or self.transport.is_closing():
            return
        # The head is not complete after these bytes: they were all head.
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._refuse(
                431, f"the request line and headers are larger than {self.max_head_bytes} bytes"
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._head_open:
            self._head_open, self._head_bytes = True, 0
            self._start_head_clock()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._stop_head_clock()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "malformed HTTP request")

    # --- refusing ---------------------------------------------------------------------

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``{"detail": …}`` and close: the rest of this connection's bytes
        cannot be read as requests any more.

        Closing a socket with unread bytes in it resets the connection, and a client
        still sending (the rest of a huge head) would lose the answer with it; so the
        answer is followed by an end of file, what still arrives is dropped, and the
        connection is closed after ``LINGER`` seconds (or when the client closes).
        """
        self._head_open = False
        self._refused = True
        self._stop_head_clock()
        log.warning("request refused", status=status, detail=detail)
        body = error_body(detail)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()


def bounded_protocol(*, max_head_bytes: int, head_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=…)``, with these bounds."""
    return type(
        "BoundedHttpToolsProtocol",
        (_BoundedHttpToolsProtocol,),
        {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout},
    )
