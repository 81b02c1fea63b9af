"""OpenTelemetry export of LLM calls: one CLIENT span and metric points per call, hit or miss.

The request path reports each call to a :class:`CallExporter` in two phases
(:meth:`~CallExporter.start_call` when it starts, :meth:`~CallExporter.end_call` with its
ledger record when it ends); :func:`configure_otel` builds one that exports over OTLP, or
through the application's own OpenTelemetry providers when it has configured them. Spans follow
the GenAI semantic conventions (v1.41) and carry the cost, the cache outcome, the saving and
the attribution in the ``llmcache.*`` namespace (see :mod:`accounting.export.attributes`).

Export never slows or breaks a call: the request path only queues (a few microseconds, see
``benchmarks/bench_export.py``); a background thread makes the spans and metric points, and
OpenTelemetry's batch processors ship them. Whatever is lost is counted (``stats()``) and
logged once. Prompt and completion text are exported only with ``capture_content=True``.

Modules, in data-flow order: :mod:`.call` (the values and the two Protocols), :mod:`.batch`
(the queue and its thread), :mod:`.attributes` and :mod:`.content` (pure: call → attributes,
messages → JSON), :mod:`.spans` and :mod:`.metrics` (onto the OpenTelemetry API),
:mod:`.otel` (the sink), :mod:`.setup` (:func:`configure_otel`).
"""

from typing import TYPE_CHECKING, Any

from accounting.export.attributes import (
    DURATION_BUCKETS,
    PROVIDER_NAMES,
    SCHEMA_URL,
    TOKEN_USAGE_BUCKETS,
    operation_name,
    provider_name,
)
from accounting.export.batch import BatchCallExporter, DeliveryStats, ExportStats, ReportsDelivery
from accounting.export.call import (
    BudgetRefusal,
    CallEnd,
    CallExporter,
    CallHandle,
    CallSink,
    CallStart,
    ExportResult,
    FinishedCall,
)
from accounting.export.options import ExportOptions
from accounting.export.otel import OTelSink

if TYPE_CHECKING:
    from accounting.export.setup import OTLPTarget, configure_otel, resolve_target

# The setup module (the OpenTelemetry SDK and its exporters) is imported on first use only
# (PEP 562): ``import accounting`` imports this package for its Protocols, and must work, and
# stay light, with export switched off.
_LAZY = frozenset({"OTLPTarget", "configure_otel", "resolve_target"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from accounting.export import setup  # noqa: PLC0415

        return getattr(setup, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DURATION_BUCKETS",
    "PROVIDER_NAMES",
    "SCHEMA_URL",
    "TOKEN_USAGE_BUCKETS",
    "BatchCallExporter",
    "BudgetRefusal",
    "CallEnd",
    "CallExporter",
    "CallHandle",
    "CallSink",
    "CallStart",
    "DeliveryStats",
    "ExportOptions",
    "ExportResult",
    "ExportStats",
    "FinishedCall",
    "OTLPTarget",
    "OTelSink",
    "ReportsDelivery",
    "configure_otel",
    "operation_name",
    "provider_name",
    "resolve_target",
]
