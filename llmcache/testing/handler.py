"""The HTTP side: a threading HTTP/1.1 server with keep-alive, and its request handler.

Kept lean because benchmarks measure through it: no logging per request (request lines and
headers, which carry the caller's ``Authorization``, are never printed), ``TCP_NODELAY``, one
``send`` per non-streamed response, and no reverse DNS lookup at bind time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from llmcache.testing.endpoints import Route, models, route
from llmcache.testing.faults import Fault, FaultQueue, PendingFault
from llmcache.testing.sse import DONE, LAST_CHUNK, Event, chunk, dumps
from llmcache.testing.wire import BadRequest, Reply, error_body

__all__ = ["HTTPServer", "State"]

logger = logging.getLogger(__name__)

_JSON = "application/json"
_SSE = "text/event-stream; charset=utf-8"
# Faults are marked in their messages so nobody mistakes them for a real provider's.
_INJECTED = "(injected by llmcache.testing)"
# A JSON document cut off in the middle: what MALFORMED_JSON sends as a non-streamed body.
_BROKEN = b'{"id": "chatcmpl-broken", "object": '


class State(Protocol):
    """What the handler reads from the server it belongs to (a :class:`LocalServer`'s)."""

    faults: FaultQueue
    stopping: threading.Event

    @property
    def ttft(self) -> float:
        """Seconds before the first byte of a response (the first event of a stream)."""
        ...

    @property
    def tokens_per_second(self) -> float | None:
        """Pace of streamed deltas; ``None`` for as fast as possible."""
        ...

    @property
    def models(self) -> Sequence[str]:
        """The models ``GET /v1/models`` lists."""
        ...

    def record(self, endpoint: str) -> None:
        """Count one request to ``endpoint``."""
        ...


class _Dropped(Exception):
    """The connection is gone (or was dropped on purpose): stop writing to it."""


class HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its open connections when it stops.

    Args:
        address: (host, port) to bind; port 0 picks a free one.
        state: counters, faults and latency knobs shared with the owner.
    """

    daemon_threads = True
    # Benchmarks open many connections at once; the default backlog of 5 would refuse some.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: State) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self._lock = threading.Lock()
        self._open: dict[socket.socket, threading.Thread] = {}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s ``getfqdn`` (a reverse DNS lookup that can stall)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection on its own daemon thread, remembered until it ends."""
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="llmcache-testing-connection",
            daemon=True,
        )
        with self._lock:
            self._open[request] = thread
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve the connection, then forget it."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a handler's bug; a client hanging up mid-answer is normal and stays quiet."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            # Only the exception: the request line and headers may carry secrets.
            logger.warning("llmcache.testing: a request handler failed", exc_info=error)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut down every open connection and wait (up to ``timeout``) for their threads."""
        with self._lock:
            open_now = list(self._open.items())
        for sock, _ in open_now:
            with contextlib.suppress(OSError):  # already closed by its own thread
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmcache-testing"
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        # Small writes (SSE events, headers) must not wait for Nagle's algorithm.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: per-request lines cost time and could carry secrets."""

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve("GET")

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve("POST")

    # -- one request ------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        try:
            self._dispatch(method)
        except (_Dropped, OSError, ValueError):
            # The peer left, a fault dropped the connection, or the framing was unreadable
            # (a bad Content-Length): nothing more can be said on this connection.
            self.close_connection = True

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        self._request_id = f"req_{uuid.uuid4().hex}"
        self._ttft = state.ttft
        self._pace = state.tokens_per_second
        raw = self._read_body()
        found = route(method, urlsplit(self.path).path)
        if found is None:
            message = f"Unknown request URL: {method} {urlsplit(self.path).path}"
            error = error_body(message, type="invalid_request_error", code="unknown_url")
            self._send(Reply(status=404, body=error))
            return
        state.record(found.endpoint)
        body: Any = None
        problem = None
        if found.build is not None:
            try:
                body = json.loads(raw)
            except ValueError:
                problem = "We could not parse the JSON body of your request."
            if problem is None and not isinstance(body, dict):
                problem = "The request body must be a JSON object."
        fault = state.faults.take(found.endpoint)
        if fault is not None:
            self._fault(fault, found, body if problem is None else None)
            return
        if problem is not None:
            self._send(Reply(status=400, body=error_body(problem, type="invalid_request_error")))
            return
        self._send(self._build(found, body))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, then the blank line
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _build(self, found: Route, body: Any) -> Reply:
        if found.build is None:
            return models(self.server.state.models, found.model_id)
        try:
            return found.build(body, int(time.time()))
        except BadRequest as exc:
            error = error_body(
                str(exc), type="invalid_request_error", param=exc.param, code=exc.code
            )
            return Reply(status=exc.status, body=error)
        except Exception:
            # A bug of this server, not of the caller: answer like a provider would, and say why.
            logger.exception("llmcache.testing could not answer a %s request", found.endpoint)
            message = "The server had an error while processing your request."
            return Reply(status=500, body=error_body(message, type="server_error"))

    def _fault(self, pending: PendingFault, found: Route, body: Any) -> None:
        streaming = isinstance(body, dict) and body.get("stream") is True
        if pending.fault is Fault.RATE_LIMIT:
            message = f"Rate limit reached for requests {_INJECTED}."
            error = error_body(message, type="requests", code="rate_limit_exceeded")
            retry = {"retry-after": f"{pending.retry_after:g}"}
            self._send(Reply(status=429, body=error, headers=retry))
        elif pending.fault is Fault.SERVER_ERROR:
            message = f"The server had an error while processing your request {_INJECTED}."
            self._send(Reply(status=500, body=error_body(message, type="server_error")))
        elif pending.fault is Fault.MALFORMED_JSON:
            if streaming:
                self._send(Reply(events=[Event(data="{not json"), DONE]))
            else:
                self._wait(self._ttft)
                self._write(self._head(200, _JSON, length=len(_BROKEN)) + _BROKEN)
        else:  # DROP_STREAM
            reply = self._build(found, body) if streaming else None
            if reply is not None and reply.events is not None:
                self._send(reply, limit=pending.after_chunks)
            self._drop()

    # -- writing ----------------------------------------------------------------------------

    def _head(
        self, status: int, content_type: str, *, length: int | None = None, extra: Any = ()
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"content-type: {content_type}",
            f"x-request-id: {self._request_id}",
            f"server: {self.server_version}",
        ]
        if length is None:
            lines += ["transfer-encoding: chunked", "cache-control: no-cache"]
        else:
            lines.append(f"content-length: {length}")
        lines.extend(f"{name}: {value}" for name, value in dict(extra).items())
        if self.close_connection:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, reply: Reply, *, limit: int | None = None) -> None:
        """Write ``reply``: a JSON document at once, or its events paced; ``limit`` stops early."""
        if reply.events is None:
            data = dumps(reply.body).encode()
            head = self._head(reply.status, _JSON, length=len(data), extra=reply.headers)
            self._wait(self._ttft)
            self._write(head + data)
            return
        # Bytes are gathered until the next pause, so an unpaced stream costs one send.
        pending = bytearray(self._head(reply.status, _SSE, extra=reply.headers))
        start = time.monotonic() + self._ttft
        deltas = 0
        events = reply.events if limit is None else reply.events[:limit]
        for event in events:
            due = start
            if event.delta and self._pace is not None:
                due += deltas / self._pace
                deltas += 1
            delay = due - time.monotonic()
            if delay > 0:
                self._write(bytes(pending))
                pending.clear()
                self._wait(delay)
            pending += chunk(event.encode())
        if limit is None:
            pending += LAST_CHUNK
        if pending:
            self._write(bytes(pending))

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.server.state.stopping.wait(seconds):
            self._drop()

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)

    def _drop(self) -> None:
        """Close the connection now, mid-answer: the peer sees the stream end abruptly."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Dropped
