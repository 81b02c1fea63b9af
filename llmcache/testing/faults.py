"""Injected failures: what can go wrong with a request, queued in order, one per request."""

from __future__ import annotations

import enum
import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["Fault", "FaultQueue", "PendingFault"]


class Fault(enum.Enum):
    """A failure :meth:`LocalServer.fault <llmcache.testing.LocalServer.fault>` injects.

    The openai SDK retries 429, 500 and connection errors (twice by default): build the client
    with ``max_retries=0`` to see the fault itself, or count the retries with
    ``server.count(...)``.

    Attributes:
        RATE_LIMIT: status 429 with ``Retry-After: <seconds>`` and an OpenAI error body
            (the SDK raises ``openai.RateLimitError``).
        SERVER_ERROR: status 500 with an OpenAI error body (``openai.InternalServerError``).
        DROP_STREAM: a streamed answer sends ``after_chunks`` events, then the connection is
            closed without the rest (no finish chunk, no ``[DONE]``, no end of the chunked
            body); any other request has its connection closed without a response.
        MALFORMED_JSON: status 200 with a body that is not valid JSON; a stream sends one
            ``data: {not json`` event (then ``[DONE]``).
    """

    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    DROP_STREAM = "drop_stream"
    MALFORMED_JSON = "malformed_json"


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingFault:
    """One queued fault, for one request.

    Attributes:
        fault: what happens.
        endpoint: the endpoint it waits for (``"chat.completions"`` …), ``None`` for any.
        retry_after: seconds sent in ``Retry-After`` (``RATE_LIMIT``).
        after_chunks: events sent before the connection is dropped (``DROP_STREAM``).
    """

    fault: Fault
    endpoint: str | None
    retry_after: float = 0.0
    after_chunks: int = 0


class FaultQueue:
    """Faults waiting for requests, first in first out; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[PendingFault] = deque()

    def add(self, pending: PendingFault, times: int) -> None:
        """Queue ``pending`` for the next ``times`` matching requests."""
        with self._lock:
            self._pending.extend([pending] * times)

    def take(self, endpoint: str) -> PendingFault | None:
        """Remove and return the first fault waiting for ``endpoint`` (or for any endpoint)."""
        with self._lock:
            if not self._pending:  # the common case, kept cheap
                return None
            for i, pending in enumerate(self._pending):
                if pending.endpoint is None or pending.endpoint == endpoint:
                    del self._pending[i]
                    return pending
        return None

    def clear(self) -> None:
        """Drop every waiting fault."""
        with self._lock:
            self._pending.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
