"""In-process single-flight: one caller computes a key, the others wait for its result.

A :class:`Flight` can be awaited from any event loop and waited on from any thread at once,
so asyncio tasks and threads missing the same key share one upstream call. Waiters get the
result's encoded bytes and decode their own copy: no caller can mutate another's object.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from llmcache._exceptions import LLMCacheError

__all__ = ["Flight", "FlightAbandoned", "Flights"]


class FlightAbandoned(LLMCacheError):
    """The caller computing a key gave up without a result; its waiters compute for themselves."""


class Flight:
    """One upstream call in progress; finished with its encoded result or its error."""

    __slots__ = (
        "_done",
        "_event",
        "_lock",
        "_waiters",
        "body",
        "error",
        "lease",
        "task",
        "thread",
    )

    def __init__(self) -> None:
        #: The leader's thread: a blocking wait there (a sync call made from a coroutine on
        #: that thread's event loop) would stop the leader from ever finishing.
        self.thread = threading.get_ident()
        #: The leader's asyncio task, if any: awaiting the flight there would wait for itself
        #: (a task reading a stream it leads, then asking for the same request again).
        loop = asyncio._get_running_loop()
        self.task = asyncio.current_task(loop) if loop is not None else None
        self._done = False
        # Made by the first waiting thread: most flights have no waiter, and an Event (a
        # Condition and its lock) costs more than the rest of the flight.
        self._event: threading.Event | None = None
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.body: bytes | None = None
        self.error: BaseException | None = None
        #: (tier index, lock key, token) of the cross-process lease the leader holds, if any.
        self.lease: tuple[int, str, str] | None = None

    @property
    def done(self) -> bool:
        """Whether the flight has finished."""
        return self._done

    def finish(self, body: bytes | None, error: BaseException | None = None) -> None:
        """Publish the result (or error) and wake every waiter, in any thread or loop."""
        self.body, self.error = body, error
        with self._lock:
            self._done = True
            event, waiters, self._waiters = self._event, self._waiters, []
        if event is not None:
            event.set()
        for loop, fut in waiters:
            # The waiter's loop may have closed meanwhile; nothing is left to wake there.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, fut)

    def wait(self, timeout: float | None) -> bool:
        """Block until finished or ``timeout`` seconds; return whether it finished.

        Returns ``False`` at once when called on the leader's own thread.
        """
        with self._lock:
            if self._done:
                return True
            if self.thread == threading.get_ident():
                return False
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        event.wait(timeout)
        return self._done

    async def wait_async(self, timeout: float | None) -> bool:
        """Await until finished or ``timeout`` seconds; return whether it finished.

        Returns ``False`` at once when awaited by the leader's own task.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._done:
                return True
            if self.task is not None and self.task is asyncio.current_task(loop):
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return self._done
        return True


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Flights:
    """The flights in progress, by key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, bool]:
        """Return the flight for ``key`` and whether the caller leads it (must compute)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def leave(self, key: str, flight: Flight) -> None:
        """Forget ``flight`` so later callers read the cache (or lead a new flight)."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)
