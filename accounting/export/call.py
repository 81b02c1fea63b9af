"""What an exporter is told about a call, and the two plug points of export.

The request path talks to a :class:`CallExporter` in two phases, so the exported span covers
the call exactly::

    handle = exporter.start_call(CallStart(provider="openai", request_model="gpt-4o-mini",
                                           server_address="api.openai.com", server_port=443,
                                           params=request_kwargs))
    ...  # the call, the accounting, the ledger record
    exporter.end_call(handle, record, CallEnd(response_id=resp.id, response_model=resp.model,
                                              finish_reasons=("stop",)))

Export = processor + exporter (as OpenTelemetry's ``BatchSpanProcessor`` + ``SpanExporter``):
:class:`~accounting.export.batch.BatchCallExporter` is the processor (a bounded queue drained
by a background thread), a :class:`CallSink` is the exporter it hands batches of
:class:`FinishedCall` to (:class:`~accounting.export.otel.OTelSink` turns them into spans and
metric points).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from opentelemetry.context import Context

from accounting._exceptions import BudgetExceeded
from accounting.record import CallRecord

__all__ = [
    "BudgetRefusal",
    "CallEnd",
    "CallExporter",
    "CallHandle",
    "CallSink",
    "CallStart",
    "ExportResult",
    "FinishedCall",
]

_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStart:
    """What is known of a call when it starts.

    Attributes:
        provider: our provider name, e.g. ``"openai"`` (mapped to ``gen_ai.provider.name``).
        request_model: the model as sent to the provider.
        operation: ``"chat"``, ``"completions"``, ``"embeddings"``, ``"responses"``, or any
            other name (mapped to ``gen_ai.operation.name``).
        server_address: host of the provider's endpoint, e.g. ``"api.openai.com"``.
        server_port: its port (exported only with ``server_address``).
        params: the request's arguments with OpenAI names (``temperature``, ``top_p``,
            ``top_k``, ``max_tokens``/``max_completion_tokens``/``max_output_tokens``,
            ``seed``, ``stop``, ``frequency_penalty``, ``presence_penalty``, ``n``,
            ``stream``, ``response_format``, ``encoding_format``, ``dimensions``). Only those
            keys are read (copied at :meth:`CallExporter.start_call`), so the whole request
            may be passed: its messages are never read from here.
        messages: the prompt, read only when content capture is switched on.
        conversation_id: the conversation (session, thread) the call belongs to, if any.
    """

    provider: str
    request_model: str
    operation: str = "chat"
    server_address: str | None = None
    server_port: int | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: _NO_PARAMS)
    messages: Sequence[Any] | None = None
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnd:
    """What the response (or the failure) said, beyond the ledger record.

    Attributes:
        response_id: the provider's id of the response, e.g. ``"chatcmpl-123"``.
        response_model: the model that answered (else the record's ``model_served``).
        finish_reasons: one per choice, e.g. ``("stop",)``.
        output_messages: the completion (OpenAI ``choices`` or messages), read only when
            content capture is switched on.
        error: the exception the call ended with: a provider error, or the
            :class:`~accounting.BudgetExceeded` that refused it (its limit, spend and request
            are exported). Only its type and budget figures are kept, never its message text.
    """

    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: Sequence[str] = ()
    output_messages: Sequence[Any] | None = None
    error: BaseException | None = None


NO_END = CallEnd()


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetRefusal:
    """The figures of a budget refusal (from :class:`~accounting.BudgetExceeded`)."""

    scope: str
    name: str | None
    period: str
    limit: Decimal
    spent: Decimal
    requested: Decimal

    @classmethod
    def from_exception(cls, exc: BudgetExceeded) -> BudgetRefusal:
        """The figures ``exc`` carries."""
        return cls(
            scope=exc.scope,
            name=exc.name,
            period=exc.period,
            limit=exc.limit,
            spent=exc.spent,
            requested=exc.requested,
        )


class CallHandle:
    """A call in flight, returned by :meth:`CallExporter.start_call`; pass it to ``end_call``.

    Opaque to the caller. A plain slotted class, not a dataclass: it is made on every call and
    must cost next to nothing.
    """

    __slots__ = ("input_json", "parent", "request", "start", "start_ns")

    def __init__(
        self,
        start: CallStart,
        start_ns: int,
        parent: Context | None,
        request: Mapping[str, Any],
        input_json: str | None,
    ) -> None:
        self.start = start
        self.start_ns = start_ns
        self.parent = parent
        self.request = request
        self.input_json = input_json


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishedCall:
    """One call, start to end, as a :class:`CallSink` receives it.

    Attributes:
        start: what was known at the start.
        record: the ledger record (cost, cache outcome, usage, attribution, status).
        end: what the response said (its ``error`` is always ``None`` here: see ``error_type``
            and ``refusal``).
        start_ns: when the call started, Unix nanoseconds.
        end_ns: when it ended, Unix nanoseconds.
        parent: the OpenTelemetry context current when the call started (its span is the
            parent of the call's span); ``None``: the context current when exported.
        request: the recognised request parameters, copied at the start.
        input_json: the prompt as the conventions' ``gen_ai.input.messages`` JSON, only when
            content capture is on.
        output_json: the completion as ``gen_ai.output.messages`` JSON, likewise.
        error_type: the exception type the call ended with, if any.
        refusal: the budget figures, when a budget refused the call.
    """

    start: CallStart
    record: CallRecord
    end: CallEnd = NO_END
    start_ns: int
    end_ns: int
    parent: Context | None = None
    request: Mapping[str, Any] = field(default_factory=lambda: _NO_PARAMS)
    input_json: str | None = None
    output_json: str | None = None
    error_type: str | None = None
    refusal: BudgetRefusal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportResult:
    """What a :class:`CallSink` did with a batch: calls exported, calls it failed to export."""

    exported: int
    failed: int = 0


@runtime_checkable
class CallExporter(Protocol):
    """Where the request path reports its calls. No method ever raises."""

    def start_call(self, start: CallStart) -> CallHandle:
        """A call starts now, as a child of the current span."""
        ...

    def end_call(self, handle: CallHandle, record: CallRecord, end: CallEnd | None = None) -> None:
        """The call of ``handle`` ended now and was recorded as ``record``."""
        ...

    def export_record(
        self, record: CallRecord, *, start: CallStart | None = None, end: CallEnd | None = None
    ) -> None:
        """Export a call that is over (timed by ``record.time`` and ``record.latency``)."""
        ...

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Export everything pending; True when done within ``timeout`` seconds."""
        ...

    def shutdown(self, timeout: float = 30.0) -> None:
        """Flush, then release threads and connections; later calls are dropped and counted."""
        ...


@runtime_checkable
class CallSink(Protocol):
    """Turns batches of finished calls into telemetry (off the request path)."""

    def export(self, batch: Sequence[FinishedCall]) -> ExportResult:
        """Export ``batch``; a call that fails is counted in the result, not raised."""
        ...

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Push out what the sink buffers; True when done within ``timeout`` seconds."""
        ...

    def shutdown(self, timeout: float = 30.0) -> None:
        """Release what the sink owns (providers it built, connections)."""
        ...
