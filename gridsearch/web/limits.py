"""Request bodies over the size limit: 413 whether or not they declare their length, then the connection
closed.

Flask refuses a body whose ``Content-Length`` is over ``MAX_CONTENT_LENGTH``, but cuts a chunked one (no
``Content-Length``) silently at the limit: the app would see a truncated body and answer 400. And after
an answer that leaves part of the body unread, werkzeug's server reads on until the client closes, so a
client waiting for the end of the answer waits forever. :class:`BodyLimit` reads a chunked body itself,
up to one byte over the limit, so that Flask refuses it like any other; after a 413 it ends the answer
and drops what the client still sends, for a moment at most, before letting go of the connection.

:class:`RequestHandler` is the server's side of each connection: what is refused before the app sees a
request (a request line or header over 64 kB, a malformed request line, a body length declared twice) is
answered as the app answers, ``{"error": ...}`` with a 4xx, and a connection that sends nothing for
``IDLE_SECONDS`` (garbage without a line end, a body shorter than it said) is closed, and a request whose client
has left before its turn came is not answered. :class:`PooledServer` answers on a fixed pool of threads.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

READ_SIZE = 64 * 1024
REQUEST_THREADS = 32
"""Requests answered at once; the others wait their turn."""
IDLE_SECONDS = 10.0
"""How long a connection may send nothing, mid-request or between requests, before it is closed."""
LINGER_SECONDS = 60.0
"""After a 413, the longest the rest of the body is read and dropped before the connection is cut (a
client that pauses for ``IDLE_SECONDS`` is cut sooner)."""


class BodyLimit:
    """WSGI middleware around ``app``: chunked bodies are read here and measured against ``limit`` bytes,
    and a 413 answer closes its connection (on werkzeug's server, which passes the socket along)."""

    def __init__(self, app: WSGIApplication, limit: int):
        self.app = app
        self.limit = limit

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.pop("wsgi.input_terminated", False) and not environ.get("CONTENT_LENGTH"):
            body = read_at_most(environ["wsgi.input"], self.limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)  # the app now sees a body of declared length:
            environ["CONTENT_LENGTH"] = str(len(body))  # over the limit, refused as any such
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        statuses: list[str] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> object:
            statuses.append(status)
            return start_response(status, headers, exc_info)  # type: ignore[arg-type]

        answer = self.app(environ, start)  # type: ignore[arg-type]
        connection = environ.get("werkzeug.socket")
        return self._closing(answer, statuses, connection)

    @staticmethod
    def _closing(answer: Iterable[bytes], statuses: list[str], connection: socket.socket | None) -> Iterator[bytes]:
        """``answer``, then, once the server has sent it all, the connection closed if it was a 413."""
        try:
            yield from answer
        finally:
            close = getattr(answer, "close", None)
            if close is not None:
                close()
        if connection is not None and statuses and statuses[-1].startswith("413"):
            linger(connection)


def read_at_most(stream: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes of ``stream``: fewer only if it ends first (or breaks off)."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        try:
            part = stream.read(min(left, READ_SIZE))
        except OSError:  # a malformed chunk, or the client gone: the body ends here
            break
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def client_left(connection: socket.socket) -> bool:
    """Whether the client has closed its connection after sending its request: no HTTP client closes its side
    while it waits for the answer, so it gave up (its timeout) and nobody will read what the app would make."""
    try:
        if not select.select([connection], [], [], 0)[0]:  # nothing more sent: the client waits for its answer
            return False
        return connection.recv(1, socket.MSG_PEEK) == b""  # readable: more requests, or the end of the stream
    except OSError:  # reset
        return True


def linger(connection: socket.socket) -> None:
    """End the answer (the client sees the connection close after it), read and drop what the client is
    still sending until it closes, pauses for ``IDLE_SECONDS`` or ``LINGER_SECONDS`` are up, then stop
    reading. Closing at once instead would reset the connection and could destroy the answer before the
    client reads it; a slow client (a busy machine) still sending its body must not be cut either."""
    deadline = time.monotonic() + LINGER_SECONDS
    try:
        connection.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            connection.settimeout(min(left, IDLE_SECONDS))
            if not connection.recv(READ_SIZE):
                break
    except OSError:  # the time is up, or the client is gone
        pass
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RD)  # werkzeug's own draining then ends at once


class PooledServer(BaseWSGIServer):
    """werkzeug's server, answering on a fixed pool of ``threads`` threads rather than a thread per connection: a
    burst of clients waits its turn (its connections queued), and the server's threads and memory stay those of the
    pool however many arrive."""

    multithread = True

    def __init__(self, *args: Any, threads: int = REQUEST_THREADS, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pool = ThreadPoolExecutor(threads, "request")

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._answer, request, client_address)

    def _answer(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class RequestHandler(WSGIRequestHandler):
    """werkzeug's handler of one connection, with JSON errors, one declared body length and an idle limit; a
    request whose client has left (it closed its connection while the request waited its turn) is not answered."""

    timeout = IDLE_SECONDS  # socketserver sets it on the connection: a read that waits longer ends it

    def run_wsgi(self) -> None:
        if client_left(self.connection):
            self.close_connection = True
            return
        super().run_wsgi()

    def parse_request(self) -> bool:
        """The request line and headers; a body length declared twice (two ``Content-Length`` headers, or
        one beside ``Transfer-Encoding``) is refused, as two parsers could read different bodies."""
        if not super().parse_request():
            return False
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1 or (lengths and "Transfer-Encoding" in self.headers):
            self.send_error(400, "Bad Request", "the body's length is declared twice; send one Content-Length")
            return False
        if lengths and not (lengths[0].strip().isascii() and lengths[0].strip().isdigit()):
            self.send_error(400, "Bad Request", f"Content-Length is not a number of bytes: {lengths[0][:40]!r}")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The error answer of the server itself, as ``{"error": "one line"}``; the connection then closes."""
        if self.request_version == "HTTP/0.9":  # a request line that did not parse: answer with a status line
            self.request_version = self.protocol_version
        short, long = self.responses.get(code, ("Error", ""))
        text = f"{message or short}: {explain or long}".rstrip(": ")
        body = json.dumps({"error": " ".join(text.split())}).encode()
        self.log_error("code %d, message %s", code, message or short)
        self.send_response(code)  # the standard reason phrase: never the client's bytes
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True
