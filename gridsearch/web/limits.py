"""Request bodies over the size limit: 413 whether or not they declare their length, then the connection
closed.

Flask refuses a body whose ``Content-Length`` is over ``MAX_CONTENT_LENGTH``, but cuts a chunked one (no
``Content-Length``) silently at the limit: the app would see a truncated body and answer 400. And after
an answer that leaves part of the body unread, werkzeug's server reads on until the client closes, so a
client waiting for the end of the answer waits forever. :class:`BodyLimit` reads a chunked body itself,
up to one byte over the limit, so that Flask refuses it like any other; after a 413 it ends the answer
and drops what the client still sends, for a moment at most, before letting go of the connection.
"""

from __future__ import annotations

import contextlib
import io
import socket
import time
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

LINGER_SECONDS = 2.0
"""After a 413, how long the rest of the body is read and dropped before the connection is cut."""
READ_SIZE = 64 * 1024


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


def linger(connection: socket.socket) -> None:
    """End the answer (the client sees the connection close after it), read and drop what the client is
    still sending for up to ``LINGER_SECONDS``, then stop reading. Closing at once instead would reset the
    connection and could destroy the answer before the client reads it."""
    deadline = time.monotonic() + LINGER_SECONDS
    try:
        connection.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            if not connection.recv(READ_SIZE):
                break
    except OSError:  # the time is up, or the client is gone
        pass
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RD)  # werkzeug's own draining then ends at once
