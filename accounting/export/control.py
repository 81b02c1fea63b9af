"""One control thread per pipeline: its flushes and shutdown run there; callers wait, bounded.

OpenTelemetry's batch processors do not keep to the timeouts they are given (a flush waits for
every batch, each up to the exporter's timeout with retries; a ``shutdown()`` joins its thread
for up to 30 s), and an HTTP request in flight cannot be cut. So the calls that may block run
on a thread of their own, and the caller waits for them at most its timeout.

That thread is started once, by ``configure_otel``, not per call: a flush per call would leak
a thread per call while the collector is slow, and Python 3.12+ refuses to start threads
during interpreter shutdown (``RuntimeError: can't create new thread at interpreter
shutdown``), which is when the exit hook flushes. One flush runs at a time; a caller arriving
while one runs waits on that one. The shutdown is run once.

A caller may also say when to stop waiting before its timeout (``give_up``): the pipeline's
check for a failing backend is asked again every few tens of milliseconds while the caller
waits, not once before, since the first export of a short-lived run often starts during the
wait itself (every span of a CLI run is exported at exit).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

__all__ = ["Control"]

log = logging.getLogger("accounting.export")

#: Seconds between two checks of ``give_up`` while a caller waits: how late a caller learns that
#: the backend is failing. Only callers of a flush or a shutdown wait; the request path never does.
POLL = 0.05


class _Job:
    __slots__ = ("done", "fn", "result")

    def __init__(self, fn: Callable[[], bool]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result = False


class Control:
    """A daemon thread that runs the blocking flushes and the shutdown of a pipeline."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._flush: _Job | None = None
        self._shutdown: _Job | None = None
        self._thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="accounting-export-control", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            try:
                job.result = bool(job.fn())
            except Exception:
                log.debug("export control job raised", exc_info=True)
            finally:
                job.done.set()
            if job is self._shutdown:
                return

    def flush(
        self,
        fn: Callable[[], bool],
        timeout: float,
        give_up: Callable[[], bool] | None = None,
    ) -> bool:
        """Run ``fn`` (a flush) unless one is running already; wait for it at most ``timeout``.

        Args:
            fn: the flush; returns True when everything was flushed.
            timeout: seconds to wait.
            give_up: asked while waiting; True stops the wait (the flush goes on).

        Returns:
            The flush's result, False if it did not end in time, the wait was given up, or
            the pipeline is shut down.
        """
        with self._lock:
            if self._shutdown is not None:
                return False
            job = self._flush
            if job is None or job.done.is_set():
                job = self._flush = _Job(fn)
                self._jobs.put(job)
        return _wait(job, timeout, give_up) and job.result

    def shutdown(
        self,
        fn: Callable[[], bool],
        timeout: float,
        give_up: Callable[[], bool] | None = None,
    ) -> bool:
        """Run ``fn`` (the shutdown) once, after any flush queued; wait for it at most ``timeout``.

        A second call runs nothing: it waits for the shutdown already under way.

        Args:
            fn: the shutdown.
            timeout: seconds to wait.
            give_up: asked while waiting; True stops the wait (the shutdown goes on).

        Returns:
            True when it ended in time (and was not given up).
        """
        with self._lock:
            job = self._shutdown
            if job is None:
                job = self._shutdown = _Job(fn)
                self._jobs.put(job)
        return _wait(job, timeout, give_up)

    def reinit_after_fork(self) -> None:
        """In a forked child: the parent's thread is gone and its lock may be held."""
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._flush = None
        if self._shutdown is None:
            self._thread = self._start()


def _wait(job: _Job, timeout: float, give_up: Callable[[], bool] | None) -> bool:
    """Wait for ``job`` at most ``timeout`` seconds; False also once ``give_up()`` says so."""
    if give_up is None:
        return job.done.wait(max(timeout, 0.0))
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if job.done.wait(min(max(remaining, 0.0), POLL)):
            return True
        if remaining <= POLL or give_up():
            return False
