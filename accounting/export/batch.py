"""The request path's exporter: note the call, queue it, let a background thread do the rest.

Making an OpenTelemetry span and recording five metric points costs tens of microseconds of
SDK work (attribute validation, locks, aggregation). None of it happens on the request path:
:meth:`BatchCallExporter.start_call` notes the time, the current context and the request's
sampling parameters; :meth:`~BatchCallExporter.end_call` appends the record to a bounded
queue. A daemon thread drains the queue in batches into a :class:`~accounting.export.call.CallSink`
(which builds the spans with the call's own start and end times and its parent, and the
metric points), whose output OpenTelemetry's batch processors then ship.

Nothing here raises into the caller. A full queue drops the call (counted, logged once); a sink
that fails is counted and logged once; a fault inside ``start_call``/``end_call`` itself is
counted and logged once. :meth:`~BatchCallExporter.stats` reports every count.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from opentelemetry import context as otel_context

from accounting._exceptions import BudgetExceeded, ConfigError
from accounting.export.attributes import PARAM_KEYS
from accounting.export.call import (
    NO_END,
    BudgetRefusal,
    CallEnd,
    CallHandle,
    CallSink,
    CallStart,
    FinishedCall,
)
from accounting.export.content import input_messages_json, output_messages_json
from accounting.record import CallRecord

__all__ = ["BatchCallExporter", "DeliveryStats", "ExportStats", "ReportsDelivery"]

log = logging.getLogger("accounting.export")

_PARAMS = frozenset(PARAM_KEYS)
_EMPTY: Mapping[str, Any] = MappingProxyType({})

# (handle, record, end, end_ns, error_type, refusal): a tuple, cheaper to make than an object.
_Item = tuple[CallHandle, CallRecord, CallEnd, int, str | None, BudgetRefusal | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryStats:
    """What OpenTelemetry did with the telemetry, for the pipeline ``configure_otel`` built.

    Attributes:
        spans_exported: spans the backend accepted.
        spans_failed: spans in batches the OTLP exporter gave up on (backend down, refused).
        spans_dropped: spans dropped before export because the span queue was full (the
            backend was too slow or down for too long).
        metric_exports: metric exports the backend accepted.
        metric_exports_failed: metric exports that failed (cumulative metrics are sent again
            in full at the next export, so a failure loses resolution, not totals).
    """

    spans_exported: int = 0
    spans_failed: int = 0
    spans_dropped: int = 0
    metric_exports: int = 0
    metric_exports_failed: int = 0


@runtime_checkable
class ReportsDelivery(Protocol):
    """An optional ability of a sink: it can say what became of the telemetry it produced."""

    def delivery(self) -> DeliveryStats | None:
        """Counts since the sink was made; ``None`` when it cannot tell."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportStats:
    """What a :class:`BatchCallExporter` did since it was made.

    Attributes:
        queued: calls waiting for the background thread now.
        exported: calls the sink turned into telemetry.
        failed: calls the sink failed to turn into telemetry.
        dropped: calls dropped because the queue was full, that ended after shutdown, or
            still queued when the shutdown's time ran out.
        errors: faults inside ``start_call``/``end_call``/``export_record`` (caught).
        delivery: what became of the telemetry, when the sink can tell.
    """

    queued: int
    exported: int
    failed: int
    dropped: int
    errors: int
    delivery: DeliveryStats | None = None


class BatchCallExporter:
    """A :class:`~accounting.export.call.CallExporter` that exports off the request path.

    Args:
        sink: what turns batches of finished calls into telemetry.
        capture_content: record the prompt and the completion text (the conventions' opt-in
            ``gen_ai.input.messages``/``gen_ai.output.messages``). Off by default: no text of
            the prompt or completion is read.
        max_queue_size: calls waiting at most; past it calls are dropped and counted.
        max_batch_size: calls handed to the sink at once; a queue this long wakes the thread.
        schedule_delay: seconds between drains of a queue shorter than ``max_batch_size``.

    Raises:
        ConfigError: a size or delay is not positive, or the batch exceeds the queue.
    """

    def __init__(
        self,
        sink: CallSink,
        *,
        capture_content: bool = False,
        max_queue_size: int = 2048,
        max_batch_size: int = 512,
        schedule_delay: float = 1.0,
    ) -> None:
        if max_queue_size < 1:
            raise ConfigError("must be at least 1", where="max_queue_size")
        if not 1 <= max_batch_size <= max_queue_size:
            raise ConfigError("must be between 1 and max_queue_size", where="max_batch_size")
        if not schedule_delay > 0:
            raise ConfigError("must be positive", where="schedule_delay")
        self._sink = sink
        self._capture = capture_content
        self._max_queue = max_queue_size
        self._max_batch = max_batch_size
        self._delay = schedule_delay
        self._queue: deque[_Item] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # counters written from several threads
        self._drain_lock = threading.Lock()  # one drain at a time: worker or force_flush
        self._closed = False
        self._exported = 0
        self._failed = 0
        self._dropped = 0
        self._errors = 0
        self._logged: set[str] = set()
        self._worker = self._start_worker()
        ref = weakref.ref(self)
        atexit.register(_shutdown_at_exit, ref)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _reinit_in_child(ref))

    # -- the request path --------------------------------------------------------------------

    def start_call(self, start: CallStart) -> CallHandle:
        """Note that a call starts now, under the current OpenTelemetry context.

        Copies the recognised request parameters (not the messages); with content capture on,
        also serializes the prompt now, since the application may change its message list
        once the call returns. Never raises.

        Args:
            start: what is known of the call.

        Returns:
            The handle to give :meth:`end_call`.
        """
        try:
            params = start.params
            request = {k: v for k, v in params.items() if k in _PARAMS} if params else _EMPTY
            prompt = None
            if self._capture and start.messages is not None:
                prompt = input_messages_json(start.messages)
            if params or start.messages is not None:
                # The handle may wait in the queue for a while: keep neither the whole request
                # nor the prompt alive through it (a prompt can weigh megabytes), only the
                # recognised parameters copied above and, with capture on, the prompt's JSON.
                start = dataclasses.replace(start, params=_EMPTY, messages=None)
            return CallHandle(start, time.time_ns(), otel_context.get_current(), request, prompt)
        except Exception:
            self._fault("start_call")
            return CallHandle(start, time.time_ns(), None, _EMPTY, None)

    def end_call(self, handle: CallHandle, record: CallRecord, end: CallEnd | None = None) -> None:
        """The call of ``handle`` ended now; queue it for export. Never raises.

        Args:
            handle: from :meth:`start_call`.
            record: the call's ledger record.
            end: what the response said; ``end.error`` may be the provider's exception or the
                :class:`~accounting.BudgetExceeded` that refused the call.
        """
        try:
            self._enqueue(handle, record, end, time.time_ns())
        except Exception:
            self._fault("end_call")

    def export_record(
        self, record: CallRecord, *, start: CallStart | None = None, end: CallEnd | None = None
    ) -> None:
        """Export a call that is already over (a hit recorded after the fact, a replay).

        Its span runs from ``record.time`` for ``record.latency`` seconds, as a child of the
        span current now. Never raises.

        Args:
            record: the call's ledger record.
            start: what was known at its start; by default, what the record says.
            end: what the response said.
        """
        try:
            if start is None:
                start = CallStart(
                    provider=record.provider,
                    request_model=record.model_requested,
                    operation=record.operation,
                )
            handle = self.start_call(start)
            handle.start_ns = int(record.time * 1e9)
            self._enqueue(handle, record, end, handle.start_ns + int(record.latency * 1e9))
        except Exception:
            self._fault("export_record")

    def _enqueue(self, handle: CallHandle, record: CallRecord, end: CallEnd | None, t: int) -> None:
        queue = self._queue
        if self._closed or len(queue) >= self._max_queue:
            self._drop()
            return
        error_type = None
        refusal = None
        if end is None:
            end = NO_END
        else:
            error = end.error
            drop_output = not self._capture and end.output_messages is not None
            if error is not None or drop_output:
                # Keep the figures, not the exception: its traceback would hold the caller's
                # frames (and the request) alive until the thread gets to it. Nor the
                # completion, unless it is to be exported: it may be large.
                if error is not None:
                    error_type = type(error).__name__
                    if isinstance(error, BudgetExceeded):
                        refusal = BudgetRefusal.from_exception(error)
                output = None if drop_output else end.output_messages
                end = dataclasses.replace(end, error=None, output_messages=output)
        queue.append((handle, record, end, t, error_type, refusal))
        if len(queue) >= self._max_batch and not self._wake.is_set():
            self._wake.set()

    # -- counting and logging ----------------------------------------------------------------

    def _warn_once(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        with self._lock:
            if kind in self._logged:
                return
            self._logged.add(kind)
        log.warning(message, *args, exc_info=exc_info)

    def _drop(self) -> None:
        with self._lock:
            self._dropped += 1
        if self._closed:
            self._warn_once("closed", "a call ended after the exporter was shut down: dropped")
        else:
            self._warn_once(
                "queue_full",
                "export queue full (%d calls waiting): dropping calls; further drops are "
                "counted in stats(), not logged",
                self._max_queue,
            )

    def _fault(self, where: str) -> None:
        with self._lock:
            self._errors += 1
        self._warn_once(
            where,
            "export fault in %s (the call goes on; further faults are counted in stats())",
            where,
            exc_info=True,
        )

    # -- the background side -----------------------------------------------------------------

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self._run, name="accounting-export", daemon=True)
        worker.start()
        return worker

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._drain()

    def _finish(self, item: _Item) -> FinishedCall:
        handle, record, end, end_ns, error_type, refusal = item
        output = None
        if self._capture and end.output_messages is not None:
            output = output_messages_json(end.output_messages, end.finish_reasons)
        return FinishedCall(
            start=handle.start,
            record=record,
            end=end,
            start_ns=handle.start_ns,
            end_ns=end_ns,
            parent=handle.parent,
            request=handle.request,
            input_json=handle.input_json,
            output_json=output,
            error_type=error_type,
            refusal=refusal,
        )

    def _drain(self, timeout: float | None = None) -> bool:
        """Hand the queue to the sink; False if the drain lock was not had within ``timeout``
        (the thread is inside a slow sink): the caller must not wait past its own deadline."""
        if timeout is None:
            acquired = self._drain_lock.acquire()
        else:
            acquired = self._drain_lock.acquire(timeout=max(timeout, 0.0))
        if not acquired:
            return False
        try:
            self._drain_locked()
        finally:
            self._drain_lock.release()
        return True

    def _drain_locked(self) -> None:
        queue = self._queue
        while queue:
            items = [queue.popleft() for _ in range(min(self._max_batch, len(queue)))]
            batch: list[FinishedCall] = []
            failed = 0
            for item in items:
                try:
                    batch.append(self._finish(item))
                except Exception:
                    failed += 1
                    self._warn_once("finish", "could not prepare a call", exc_info=True)
            exported = 0
            try:
                result = self._sink.export(batch)
                exported, failed = result.exported, failed + result.failed
            except Exception:
                failed += len(batch)
                self._warn_once(
                    "sink",
                    "export sink %s failed; further failures are counted in stats()",
                    type(self._sink).__name__,
                    exc_info=True,
                )
            with self._lock:
                self._exported += exported
                self._failed += failed
            if failed:
                self._warn_once(
                    "sink_failed",
                    "export sink %s could not export %d calls; further failures are "
                    "counted in stats()",
                    type(self._sink).__name__,
                    failed,
                )

    # -- control -----------------------------------------------------------------------------

    def stats(self) -> ExportStats:
        """Counts since the exporter was made (and what became of the telemetry)."""
        delivery = self._sink.delivery() if isinstance(self._sink, ReportsDelivery) else None
        with self._lock:
            return ExportStats(
                queued=len(self._queue),
                exported=self._exported,
                failed=self._failed,
                dropped=self._dropped,
                errors=self._errors,
                delivery=delivery,
            )

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Hand every queued call to the sink now, then flush the sink.

        Args:
            timeout: seconds in all: to wait for the thread (it may be inside the sink) and
                for the sink's flush.

        Returns:
            True when the sink reports everything flushed within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        if not self._drain(timeout):
            return False  # the thread is still inside the sink: not done in time
        try:
            return self._sink.force_flush(max(deadline - time.monotonic(), 0.0))
        except Exception:
            self._warn_once("flush", "export sink flush failed", exc_info=True)
            return False

    def shutdown(self, timeout: float = 30.0) -> None:
        """Export what is queued, stop the thread, shut the sink down. Calls ending later are
        dropped (counted), as are calls still queued when ``timeout`` runs out (the thread
        stuck in a slow sink). Safe to call twice.

        Args:
            timeout: seconds to wait, in all, for the thread and the sink.
        """
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        self._closed = True
        self._wake.set()
        self._worker.join(timeout)
        if not self._drain(deadline - time.monotonic()):
            # The thread is stuck inside the sink: what is still queued will not be
            # exported in time. Count it as dropped rather than outstay the timeout.
            self._drop_queued()
        try:
            self._sink.shutdown(max(deadline - time.monotonic(), 0.0))
        except Exception:
            self._warn_once("shutdown", "export sink shutdown failed", exc_info=True)

    def _drop_queued(self) -> None:
        lost = 0
        queue = self._queue
        while True:
            try:
                queue.popleft()
            except IndexError:
                break
            lost += 1
        if lost:
            with self._lock:
                self._dropped += lost
            self._warn_once(
                "shutdown_dropped",
                "shutdown timed out with %d calls still queued: dropped",
                lost,
            )

    def _reinit_after_fork(self) -> None:
        # The parent's thread does not exist in the child, and its locks may be held.
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._queue.clear()
        if not self._closed:
            self._worker = self._start_worker()


def _shutdown_at_exit(ref: weakref.ref[BatchCallExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter.shutdown(timeout=5.0)


def _reinit_in_child(ref: weakref.ref[BatchCallExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter._reinit_after_fork()
