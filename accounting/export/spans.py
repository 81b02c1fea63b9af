"""One CLIENT span per finished call, through whatever OpenTelemetry tracer is given."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from accounting.export.attributes import span_attributes, span_error, span_name
from accounting.export.call import FinishedCall
from accounting.export.options import ExportOptions

__all__ = ["emit_span"]


def emit_span(tracer: Tracer, call: FinishedCall, options: ExportOptions) -> None:
    """Record ``call`` as a span that started and ended when the call did.

    The span is made after the fact (off the request path) with the call's own start and end
    times and, as parent, the context that was current when the call started: to a backend it
    is the span of the call, a child of the application's span. Every attribute is given at
    the start, so samplers see the request attributes as the conventions require.

    Args:
        tracer: where the span goes.
        call: the finished call.
        options: what to write beyond the conventions.
    """
    span = tracer.start_span(
        span_name(call.start.operation, call.start.request_model),
        context=call.parent,
        kind=SpanKind.CLIENT,
        attributes=span_attributes(call, options),
        start_time=call.start_ns,
        record_exception=False,
        set_status_on_exception=False,
    )
    error = span_error(call)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error[1]))
    span.end(end_time=call.end_ns)
