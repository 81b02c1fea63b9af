"""The OpenTelemetry sink: finished calls → spans and metric points on the given providers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import metadata
from typing import Protocol

from opentelemetry import metrics, trace

from accounting.export.attributes import SCHEMA_URL, metric_points
from accounting.export.batch import DeliveryStats
from accounting.export.call import ExportResult, FinishedCall
from accounting.export.metrics import Instruments
from accounting.export.options import ExportOptions
from accounting.export.spans import emit_span

__all__ = ["SCOPE_NAME", "OTelSink", "Pipeline"]

log = logging.getLogger("accounting.export")

#: The instrumentation scope of our spans and metrics.
SCOPE_NAME = "accounting.export"


def _version() -> str | None:
    try:
        return metadata.version("llmcache")
    except metadata.PackageNotFoundError:
        return None


class Pipeline(Protocol):
    """Providers a sink owns (built by ``configure_otel``): flushed, shut down and counted."""

    def force_flush(self, timeout: float) -> bool:
        """Flush the owned providers."""
        ...

    def shutdown(self, timeout: float) -> None:
        """Shut the owned providers down."""
        ...

    def delivery(self) -> DeliveryStats:
        """What became of the telemetry of the owned providers."""
        ...


class OTelSink:
    """A :class:`~accounting.export.call.CallSink` writing to OpenTelemetry providers.

    Args:
        tracer_provider: where spans go; by default the global one (whatever the application
            configured, or OpenTelemetry's proxy until it does).
        meter_provider: where metric points go; by default the global one.
        options: what to write beyond the conventions.
        pipeline: providers this sink owns (from ``configure_otel``); only those are ever shut
            down, never the application's.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        options: ExportOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider or trace.get_tracer_provider()
        self._meter_provider = meter_provider or metrics.get_meter_provider()
        self._options = options or ExportOptions()
        self._pipeline = pipeline
        version = _version()
        self._tracer = self._tracer_provider.get_tracer(SCOPE_NAME, version, schema_url=SCHEMA_URL)
        meter = self._meter_provider.get_meter(SCOPE_NAME, version, schema_url=SCHEMA_URL)
        self._instruments = Instruments(meter)
        self._logged = False

    @property
    def tracer_provider(self) -> trace.TracerProvider:
        """The provider spans go to."""
        return self._tracer_provider

    @property
    def meter_provider(self) -> metrics.MeterProvider:
        """The provider metric points go to."""
        return self._meter_provider

    def export(self, batch: Sequence[FinishedCall]) -> ExportResult:
        """Emit a span and the metric points of each call; a call that fails does not stop
        the others.

        Args:
            batch: finished calls.

        Returns:
            How many calls were exported and how many failed.
        """
        failed = 0
        for call in batch:
            ok = True
            try:
                emit_span(self._tracer, call, self._options)
            except Exception:
                ok = False
                self._log_first()
            try:
                self._instruments.record(metric_points(call, self._options))
            except Exception:
                ok = False
                self._log_first()
            failed += not ok
        return ExportResult(exported=len(batch) - failed, failed=failed)

    def _log_first(self) -> None:
        if not self._logged:
            self._logged = True
            log.warning("could not turn a call into telemetry", exc_info=True)

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Flush the providers: the owned pipeline, else the given providers when they can."""
        if self._pipeline is not None:
            return self._pipeline.force_flush(timeout)
        done = True
        millis = int(timeout * 1000)
        for provider in (self._tracer_provider, self._meter_provider):
            flush = getattr(provider, "force_flush", None)
            if callable(flush):
                done = bool(flush(millis)) and done
        return done

    def shutdown(self, timeout: float = 30.0) -> None:
        """Shut down the providers this sink owns; the application's are only flushed."""
        if self._pipeline is not None:
            self._pipeline.shutdown(timeout)
        else:
            self.force_flush(timeout)

    def delivery(self) -> DeliveryStats | None:
        """What became of the telemetry: known for a pipeline ``configure_otel`` built, not for
        the application's own providers (``None``)."""
        if self._pipeline is not None:
            return self._pipeline.delivery()
        return None
