"""One-call setup: ``configure_otel(endpoint=..., protocol="http"|"grpc", ...)``.

For each signal (traces, metrics) the exporter uses, in this order:

1. the provider passed in (``tracer_provider=``, ``meter_provider=``);
2. the application's global provider, when it configured one (``use_global=True``): it is
   used as it is, never replaced, never shut down;
3. a provider of our own exporting over OTLP, which is **not** made global: an OpenTelemetry
   ``TracerProvider`` with a ``BatchSpanProcessor`` and a ``MeterProvider`` with a
   ``PeriodicExportingMetricReader``, both shipping from their own threads.

Our own providers follow the standard variables where an argument is not given:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (and ``_TRACES_``/``_METRICS_`` ones), ``_HEADERS``,
``_PROTOCOL`` (``http/protobuf`` or ``grpc``), ``_TIMEOUT``, ``_COMPRESSION``,
``_CERTIFICATE``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_SCHEDULE_DELAY``,
``OTEL_METRIC_EXPORT_INTERVAL`` and ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``
(``delta`` for Datadog). ``endpoint`` is a base URL like ``OTEL_EXPORTER_OTLP_ENDPOINT``
(``http://collector:4318``; with ``http``, ``/v1/traces`` and ``/v1/metrics`` are appended).

What our providers lose is counted (:class:`~accounting.export.batch.DeliveryStats`) and logged
once per kind: spans the backend refused or never got (down, unreachable), spans dropped
because the span queue was full, failed metric exports. OpenTelemetry's own exporters also log
their failures, per batch, under the ``opentelemetry`` loggers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from accounting._exceptions import ConfigError
from accounting.export.batch import BatchCallExporter, DeliveryStats
from accounting.export.control import Control
from accounting.export.options import ExportOptions
from accounting.export.otel import OTelSink

__all__ = ["OTLPTarget", "configure_otel", "resolve_target"]

log = logging.getLogger("accounting.export")

_PROTOCOLS = {"http": "http", "http/protobuf": "http", "grpc": "grpc"}
_NO_GRPC = (
    "OTLP over gRPC needs the opentelemetry-exporter-otlp-proto-grpc package "
    "(pip install 'llmcache[otlp-grpc]'); or use protocol='http'"
)
#: Seconds after which an export still in progress at shutdown means the backend is down.
STUCK_AFTER = 1.0
#: Seconds a shutdown that gave up on the backend still waits for the aborted exports to end,
#: so that what they lost is counted when it returns (they end in milliseconds, unless an HTTP
#: request in flight to a collector that never answers cannot be cut).
SETTLE_AFTER_ABORT = 0.25


@dataclass(frozen=True, slots=True, kw_only=True)
class OTLPTarget:
    """Where one signal goes, as resolved from the arguments and the environment.

    Attributes:
        protocol: ``"http"`` (OTLP/HTTP, protobuf) or ``"grpc"``.
        endpoint: the URL to give the exporter; ``None`` lets it read its variables (and
            default to ``localhost:4318``/``:4317``).
    """

    protocol: str
    endpoint: str | None


def resolve_target(
    signal: str,
    *,
    endpoint: str | None,
    protocol: str | None,
    environ: Mapping[str, str],
) -> OTLPTarget:
    """Pure: the protocol and endpoint of ``signal`` (``"traces"`` or ``"metrics"``).

    Args:
        signal: ``"traces"`` or ``"metrics"``.
        endpoint: the base URL given to ``configure_otel``, if any.
        protocol: the protocol given to ``configure_otel``, if any.
        environ: the environment (``os.environ``).

    Returns:
        The target.

    Raises:
        ConfigError: an unknown protocol (``http/json`` is not supported by OpenTelemetry's
            Python exporters), or an endpoint that is not an http(s) URL.
    """
    upper = signal.upper()
    where = "protocol"
    raw = protocol
    if raw is None:
        for var in (f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            if environ.get(var):
                raw, where = environ[var], var
                break
    chosen = _PROTOCOLS.get((raw or "http/protobuf").strip().lower())
    if chosen is None:
        raise ConfigError(
            f"unsupported OTLP protocol {raw!r}; use 'http' (http/protobuf) or 'grpc'",
            where=where,
        )
    if endpoint is None:
        return OTLPTarget(protocol=chosen, endpoint=None)
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"must be an http:// or https:// URL, got {endpoint!r}", where="endpoint")
    if chosen == "http":
        return OTLPTarget(protocol=chosen, endpoint=f"{endpoint.rstrip('/')}/v1/{signal}")
    return OTLPTarget(protocol=chosen, endpoint=endpoint)


class _Delivery:
    """Counts of what our providers shipped or lost, and one log line per kind of loss."""

    def __init__(self, traces: str, metrics: str) -> None:
        # Endpoints only, for the logs: never the headers (they hold API keys).
        self.traces = traces
        self.metrics = metrics
        self._lock = threading.Lock()
        self._counts = {
            "spans_exported": 0,
            "spans_failed": 0,
            "spans_dropped": 0,
            "metric_exports": 0,
            "metric_exports_failed": 0,
        }
        self._logged: set[str] = set()
        self.failing = False  # the last export failed: do not wait on it at shutdown

    def add(self, name: str, count: int) -> None:
        with self._lock:
            self._counts[name] += count

    def warn_once(self, kind: str, message: str, *args: object) -> None:
        with self._lock:
            if kind in self._logged:
                return
            self._logged.add(kind)
        log.warning(message, *args)

    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(**self._counts)

    def reinit_after_fork(self) -> None:
        # The parent's lock may have been held by one of its threads at the fork.
        self._lock = threading.Lock()


class _CountingSpanExporter(SpanExporter):
    """Counts what the OTLP span exporter delivers or loses; can abort its retries."""

    def __init__(self, inner: SpanExporter, delivery: _Delivery) -> None:
        self._inner = inner
        self._delivery = delivery
        self._aborted = False
        self._closed = False
        self.received = 0  # spans handed to export (by the batch processor's one exporter)
        self.busy_since: float | None = None  # monotonic start of the export in progress

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        self.received += count
        result = SpanExportResult.FAILURE
        if not self._aborted:
            self.busy_since = time.monotonic()
            try:
                result = self._inner.export(spans)
            except Exception:
                log.debug("OTLP span exporter raised", exc_info=True)
            finally:
                self.busy_since = None
        if result is SpanExportResult.SUCCESS:
            self._delivery.failing = False
            self._delivery.add("spans_exported", count)
        else:
            self._delivery.failing = True
            self._delivery.add("spans_failed", count)
            self._delivery.warn_once(
                "spans_failed",
                "could not export %d spans to %s (backend down or refusing); the calls go on, "
                "further losses are counted in stats(), not logged",
                count,
                self._delivery.traces,
            )
        return result

    def abort(self) -> None:
        """Fail every export from now on, and cut short a retry in progress."""
        self._aborted = True
        self.shutdown()

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _CountingMetricExporter(MetricExporter):
    """Counts the OTLP metric exporter's successes and failures; can abort its retries."""

    def __init__(self, inner: MetricExporter, delivery: _Delivery) -> None:
        # Keep the inner exporter's temporality and aggregation preferences (they follow
        # OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE): the reader asks us for them.
        # Private attributes of the SDK's MetricExporter: read with defaults (the SDK's own),
        # so that a rename costs the preferences, not the export.
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self._inner = inner
        self._delivery = delivery
        self._aborted = False
        self._closed = False
        self.busy_since: float | None = None  # monotonic start of the export in progress

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        result = MetricExportResult.FAILURE
        if not self._aborted:
            self.busy_since = time.monotonic()
            try:
                result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            except Exception:
                log.debug("OTLP metric exporter raised", exc_info=True)
            finally:
                self.busy_since = None
        if result is MetricExportResult.SUCCESS:
            self._delivery.add("metric_exports", 1)
        else:
            self._delivery.failing = True
            self._delivery.add("metric_exports_failed", 1)
            self._delivery.warn_once(
                "metrics_failed",
                "could not export metrics to %s; further failures are counted in stats(), "
                "not logged",
                self._delivery.metrics,
            )
        return result

    def abort(self) -> None:
        """Fail every export from now on, and cut short a retry in progress."""
        self._aborted = True
        self.shutdown()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if not self._closed:
            self._closed = True
            self._inner.shutdown(timeout_millis=timeout_millis)


class _CountedBatchSpanProcessor(SpanProcessor):
    """A ``BatchSpanProcessor`` whose drops on a full queue are counted.

    The SDK's processor drops the newest span when its queue is full and logs a warning, but
    does not count (its own metrics need ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`` and a
    meter). So this processor admits a span only while fewer than ``max_queue_size`` admitted
    spans have not yet reached the exporter, and counts the others: the inner queue never
    fills, and every span lost is counted here. Spans are produced by one thread (the export
    thread of :class:`~accounting.export.batch.BatchCallExporter`), so the count is exact.
    """

    def __init__(
        self, exporter: _CountingSpanExporter, delivery: _Delivery, max_queue_size: int
    ) -> None:
        self._inner = BatchSpanProcessor(
            exporter,
            max_queue_size=max_queue_size,
            max_export_batch_size=min(512, max_queue_size),  # the SDK's default, if it fits
        )
        self._exporter = exporter
        self._delivery = delivery
        self._limit = max_queue_size
        self._admitted = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._admitted - self._exporter.received >= self._limit:
            self._delivery.add("spans_dropped", 1)
            self._delivery.warn_once(
                "spans_dropped",
                "span queue full (%d spans waiting for %s): dropping spans; further drops are "
                "counted in stats(), not logged",
                self._limit,
                self._delivery.traces,
            )
            return
        self._admitted += 1
        self._inner.on_end(span)

    def reinit_after_fork(self) -> None:
        # The SDK's processor empties its queue in the child: so nothing admitted is waiting.
        self._admitted = 0
        self._exporter.received = 0
        self._exporter.busy_since = None

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _OwnedPipeline:
    """The providers ``configure_otel`` built (never global): flush, shut down, count.

    Their flushes and their shutdown run on one :class:`~accounting.export.control.Control`
    thread, started here (not per call, and never at interpreter exit); callers wait for it
    at most their timeout.
    """

    def __init__(self, delivery: _Delivery) -> None:
        self._delivery = delivery
        self.tracer_provider: SDKTracerProvider | None = None
        self.meter_provider: SDKMeterProvider | None = None
        self.span_exporter: _CountingSpanExporter | None = None
        self.metric_exporter: _CountingMetricExporter | None = None
        self.span_processor: _CountedBatchSpanProcessor | None = None
        self._control = Control()

    def _flush(self, timeout: float) -> bool:
        done = True
        millis = int(timeout * 1000)
        if self.tracer_provider is not None:
            done = self.tracer_provider.force_flush(millis) and done
        if self.meter_provider is not None:
            done = self.meter_provider.force_flush(millis) and done
        return done

    def force_flush(self, timeout: float) -> bool:
        # The SDK's batch processor ignores its flush timeout (it waits for every batch, each
        # up to the exporter's timeout with retries), so the flush runs on the control thread
        # and we wait for it at most ``timeout``: False if it is not done by then, or as soon
        # as an export is stuck (the exporter retrying a backend that is down). A past failure
        # alone does not end the wait: the backend may be back, and then the flush is quick.
        return self._control.flush(lambda: self._flush(timeout), timeout, give_up=self._stuck)

    def _stuck(self) -> bool:
        # An export has been going on for over a second: a collector that works answers in
        # milliseconds, so this one is down (the exporter is retrying) or too slow to wait for.
        now = time.monotonic()
        for exporter in (self.span_exporter, self.metric_exporter):
            since = exporter.busy_since if exporter is not None else None
            if since is not None and now - since > STUCK_AFTER:
                return True
        return False

    def _failing(self) -> bool:
        # The last export failed, or one is stuck.
        return self._delivery.failing or self._stuck()

    def _abort(self) -> None:
        for exporter in (self.span_exporter, self.metric_exporter):
            if exporter is not None:
                exporter.abort()

    def _shutdown(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._flush(timeout):
            self._abort()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            remaining = max(deadline - time.monotonic(), 0.1)
            self.meter_provider.shutdown(timeout_millis=remaining * 1000)
        return True

    def shutdown(self, timeout: float) -> None:
        # Flush what is pending, within ``timeout``. If the backend is failing (checked
        # before and all along the wait: the first export of a short run often starts here),
        # or the shutdown does not end in time, abort the exporters: a retry in progress ends
        # and whatever is still pending fails at once (counted). The SDK's shutdown may go on
        # (an HTTP request in flight cannot be cut) on the control thread, a daemon: it no
        # longer delays the application.
        deadline = time.monotonic() + timeout
        if self._failing():
            self._abort()
        if self._control.shutdown(lambda: self._shutdown(timeout), timeout, self._failing):
            return
        self._abort()
        # Aborted exports end in milliseconds: wait that long, so that what they lost is
        # counted in stats() when we return; never past ``timeout``.
        settle = min(deadline - time.monotonic(), SETTLE_AFTER_ABORT)
        self._control.shutdown(lambda: True, settle)  # waits for the shutdown under way

    def delivery(self) -> DeliveryStats:
        return self._delivery.stats()

    def reinit_after_fork(self) -> None:
        """In a forked child: fresh locks, counts of what is queued, and control thread."""
        self._delivery.reinit_after_fork()
        if self.span_processor is not None:
            self.span_processor.reinit_after_fork()
        self._control.reinit_after_fork()


def _reinit_in_child(ref: weakref.ref[_OwnedPipeline]) -> None:
    pipeline = ref()
    if pipeline is not None:
        pipeline.reinit_after_fork()


def _global_tracer_provider() -> trace.TracerProvider | None:
    provider = trace.get_tracer_provider()
    # Until the application sets one, the API hands out a proxy: "not configured".
    return None if isinstance(provider, trace.ProxyTracerProvider) else provider


def _global_meter_provider() -> metrics.MeterProvider | None:
    provider = metrics.get_meter_provider()
    # Until the application sets one, the metrics API hands out a proxy whose class is not
    # public: "not configured" is that object. It is read lazily and defensively (a private
    # name), falling back on the class's name, so a rename in the API never breaks us.
    try:
        from opentelemetry.metrics import _internal  # noqa: PLC0415
    except ImportError:
        proxy = None
    else:
        proxy = getattr(_internal, "_PROXY_METER_PROVIDER", None)
    if provider is proxy or type(provider).__name__ == "_ProxyMeterProvider":
        return None
    return provider


def _span_exporter(
    target: OTLPTarget, headers: Mapping[str, str] | None, timeout: float | None
) -> SpanExporter:
    if target.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:
            raise ConfigError(_NO_GRPC, where="protocol") from exc

        return GrpcSpanExporter(
            endpoint=target.endpoint,
            headers=dict(headers) if headers else None,
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=target.endpoint, headers=headers, timeout=timeout)


def _metric_exporter(
    target: OTLPTarget, headers: Mapping[str, str] | None, timeout: float | None
) -> MetricExporter:
    if target.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
                OTLPMetricExporter as GrpcMetricExporter,
            )
        except ImportError as exc:
            raise ConfigError(_NO_GRPC, where="protocol") from exc

        return GrpcMetricExporter(
            endpoint=target.endpoint,
            headers=dict(headers) if headers else None,
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=target.endpoint, headers=headers, timeout=timeout)


def _redact(url: str) -> str:
    """Pure: ``url`` without its userinfo, query and fragment (they may hold credentials)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # IPv6
        port = parts.port
    except ValueError:
        return "<unparsable endpoint>"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _describe(target: OTLPTarget, signal: str, environ: Mapping[str, str]) -> str:
    """The URL the exporter will use (for logs, without credentials), resolved as
    OpenTelemetry's exporters do."""
    if target.endpoint is not None:
        return _redact(target.endpoint)
    specific = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return _redact(specific)
    if target.protocol == "grpc":
        return _redact(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4317")
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    return _redact(f"{base.rstrip('/')}/v1/{signal}")


def configure_otel(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    service_name: str | None = None,
    timeout: float | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    use_global: bool = True,
    capture_content: bool = False,
    options: ExportOptions | None = None,
    max_queue_size: int = 2048,
    schedule_delay: float = 1.0,
    metric_export_interval: float | None = None,
) -> BatchCallExporter:
    """Export every call as an OpenTelemetry span and metric points, off the request path.

    Args:
        endpoint: OTLP base URL (e.g. ``http://localhost:4318``); default from
            ``OTEL_EXPORTER_OTLP_ENDPOINT``, else OpenTelemetry's localhost default.
        protocol: ``"http"`` (OTLP/HTTP, protobuf) or ``"grpc"``; default from
            ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``"http"``. gRPC needs the
            ``opentelemetry-exporter-otlp-proto-grpc`` package.
        headers: sent with every export (API keys: never logged); merged over
            ``OTEL_EXPORTER_OTLP_HEADERS`` for http.
        service_name: ``service.name`` of our own providers' resource; default
            ``OTEL_SERVICE_NAME``.
        timeout: seconds per OTLP export, retries included; default ``OTEL_EXPORTER_OTLP_TIMEOUT``
            or 10.
        tracer_provider: spans go there (overrides the global one and ours).
        meter_provider: metric points go there (likewise).
        use_global: use the application's global providers when it configured them.
        capture_content: record prompt and completion text (opt-in attributes).
        options: what to write beyond the conventions (``gen_ai.usage.cost``, metric
            dimensions such as the user id, provider names).
        max_queue_size: calls, and spans of our own provider, waiting at most; past it they
            are dropped and counted.
        schedule_delay: seconds between exports of a short queue of calls.
        metric_export_interval: seconds between metric exports of our own meter provider;
            default ``OTEL_METRIC_EXPORT_INTERVAL`` or 60.

    Returns:
        The exporter to give the request path (a
        :class:`~accounting.export.call.CallExporter`); ``shutdown()`` it to flush at the end
        (it also does so at interpreter exit).

    Raises:
        ConfigError: an unsupported protocol, a malformed endpoint, or gRPC without its
            exporter package.
    """
    traces_target = resolve_target(
        "traces", endpoint=endpoint, protocol=protocol, environ=os.environ
    )
    metrics_target = resolve_target(
        "metrics", endpoint=endpoint, protocol=protocol, environ=os.environ
    )
    if tracer_provider is None and use_global:
        tracer_provider = _global_tracer_provider()
    if meter_provider is None and use_global:
        meter_provider = _global_meter_provider()

    pipeline: _OwnedPipeline | None = None
    if tracer_provider is None or meter_provider is None:
        resource = Resource.create({"service.name": service_name} if service_name else {})
        delivery = _Delivery(
            _describe(traces_target, "traces", os.environ),
            _describe(metrics_target, "metrics", os.environ),
        )
        pipeline = _OwnedPipeline(delivery)
        if tracer_provider is None:
            exporter = _CountingSpanExporter(
                _span_exporter(traces_target, headers, timeout), delivery
            )
            own_tracer = SDKTracerProvider(resource=resource, shutdown_on_exit=False)
            processor = _CountedBatchSpanProcessor(exporter, delivery, max_queue_size)
            own_tracer.add_span_processor(processor)
            pipeline.span_processor = processor
            pipeline.tracer_provider, pipeline.span_exporter = own_tracer, exporter
            tracer_provider = own_tracer
        if meter_provider is None:
            metric_exporter = _CountingMetricExporter(
                _metric_exporter(metrics_target, headers, timeout), delivery
            )
            interval = None if metric_export_interval is None else metric_export_interval * 1000
            reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval)
            own_meter = SDKMeterProvider(
                metric_readers=[reader], resource=resource, shutdown_on_exit=False
            )
            pipeline.meter_provider, pipeline.metric_exporter = own_meter, metric_exporter
            meter_provider = own_meter
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(pipeline)
            os.register_at_fork(after_in_child=lambda: _reinit_in_child(ref))
        for signal, own, target in (
            ("traces", pipeline.tracer_provider, traces_target),
            ("metrics", pipeline.meter_provider, metrics_target),
        ):
            if own is not None:
                log.info(
                    "exporting LLM call %s over OTLP/%s to %s",
                    signal,
                    target.protocol,
                    _describe(target, signal, os.environ),
                )
    sink = OTelSink(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        options=options,
        pipeline=pipeline,
    )
    return BatchCallExporter(
        sink,
        capture_content=capture_content,
        max_queue_size=max_queue_size,
        max_batch_size=min(512, max_queue_size),  # the default batch, if it fits the queue
        schedule_delay=schedule_delay,
    )
