"""Server-sent events and HTTP/1.1 chunked framing, as OpenAI streams them.

Chat and legacy completions send ``data: <json>`` events ending with ``data: [DONE]``; the
Responses API sends ``event: <type>`` before each ``data:`` line and no ``[DONE]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["DONE", "LAST_CHUNK", "Event", "chunk", "dumps", "json_event"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One server-sent event.

    Attributes:
        data: the ``data:`` payload (JSON text, or ``[DONE]``); one line.
        event: the ``event:`` field, or ``None`` to send none.
        delta: the event carries generated text or arguments, so ``tokens_per_second``
            paces it.
    """

    data: str
    event: str | None = None
    delta: bool = False

    def encode(self) -> bytes:
        """The event's wire bytes, blank line included."""
        head = f"event: {self.event}\n" if self.event is not None else ""
        return f"{head}data: {self.data}\n\n".encode()


#: The sentinel that ends a chat or completions stream.
DONE = Event(data="[DONE]")

#: The zero-length chunk that ends a chunked HTTP body.
LAST_CHUNK = b"0\r\n\r\n"


def json_event(payload: Any, *, event: str | None = None, delta: bool = False) -> Event:
    """An event whose data is ``payload`` as compact JSON."""
    return Event(data=dumps(payload), event=event, delta=delta)


def dumps(payload: Any) -> str:
    """Compact JSON, non-ASCII kept as is (as OpenAI sends it)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk (RFC 9112 section 7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)
