"""Claims: single-flight for results that arrive later than the call that asked for them.

:meth:`Cache.fetch` computes a result inside the call and stores it before returning. A streamed
answer does not fit that shape: the caller must get the stream at once and read it chunk by
chunk, and only when it has been read to the end is there a result to store. So a miss can be
*claimed* instead: :meth:`Cache.claim` returns either the cached value or a :class:`Claim`, the
duty to compute that key. Other callers missing the same key meanwhile wait for the claim, as
they wait for a :meth:`Cache.fetch` leader (the two share one set of flights), and get its result
when it is published, or compute for themselves when it is abandoned.

Single-flight of claims spans the threads and tasks of one process; across processes each one
computes for itself (holding a cross-process lock for as long as a caller takes to read a
stream would block other processes on the slowest reader).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmcache import _flow
from llmcache._flow import Flow, Wait
from llmcache.fetched import CacheInfo, Fetched
from llmcache.keys import CacheKey
from llmcache.singleflight import Flight, FlightAbandoned

if TYPE_CHECKING:
    from llmcache._fetch import Fetch

__all__ = ["Claim", "ClaimAbandoned"]


class ClaimAbandoned(FlightAbandoned):
    """The caller computing a key gave up (a stream closed early or broken); waiters go on."""


class Claim:
    """The duty to compute one key; end it with :meth:`publish` or :meth:`abandon`.

    Attributes:
        key: the key the tiers hold the entry under.
    """

    __slots__ = ("_cache", "_flight", "_no_store", "_ttl", "done", "key", "started")

    def __init__(
        self, cache: Fetch, key: str, flight: Flight | None, ttl: float | None, no_store: bool
    ) -> None:
        self._cache, self.key, self._flight = cache, key, flight
        self._ttl, self._no_store = ttl, no_store
        self.started = time.monotonic()
        #: Whether the claim was published or abandoned.
        self.done = False
        cache._upstream += 1

    def _finish(self, body: bytes | None, error: BaseException | None) -> None:
        self.done = True
        flight = self._flight
        if flight is not None:
            flight.finish(body, error)
            self._cache._flights.leave(self.key, flight)

    def _store(self, body: bytes, store: bool) -> Flow[bool]:
        stored = False
        try:
            if store and not self._no_store:
                stored = yield from self._cache._store(self.key, body, self._ttl)
        finally:
            # Also when the caller is cancelled while a tier writes: the waiters get the
            # result all the same, and the key is never left to a flight nobody finishes.
            self._finish(body, None)
        return stored

    def publish(self, body: bytes, *, store: bool = True) -> bool:
        """Store ``body`` (unless ``store`` is false or the claim was made with ``no_store``)
        and hand it to the callers waiting for this key; return whether a tier stored it."""
        if self.done:
            return False
        return _flow.run(self._store(body, store))

    async def apublish(self, body: bytes, *, store: bool = True) -> bool:
        """Async :meth:`publish`."""
        if self.done:
            return False
        return await _flow.arun(self._store(body, store))

    def abandon(self, error: BaseException | None = None) -> None:
        """Give up: waiters raise ``error`` (the upstream call's own failure) or, with none,
        compute for themselves. Idempotent; a no-op after :meth:`publish`."""
        if self.done:
            return
        if error is not None:
            self._cache._upstream_errors += 1
        self._finish(None, error if error is not None else ClaimAbandoned("claim abandoned"))


def claim_flow(
    cache: Fetch,
    ck: CacheKey,
    *,
    decode: Callable[[bytes], Any],
    ttl: float | None,
    no_cache: bool,
    no_store: bool,
    first_missed: str | None = None,
) -> Flow[Fetched[Any] | Claim]:
    """The flow behind :meth:`Cache.claim` (after its fast first-tier hit failed).

    ``first_missed`` is the tier key when the fast path read the first tier and missed.
    """
    if first_missed is None:
        tkey = yield from cache._tier_key(ck)
        start = 0
    else:
        tkey, start = first_missed, 1
    if not no_cache:
        cache._lookups += 1
        found = (yield from cache._lookup(tkey, start)) if start < len(cache.tiers) else None
        hit = None if found is None else cache._hit(tkey, found, decode)
        if hit is not None:
            return hit
    if no_cache or not cache.single_flight:
        return Claim(cache, tkey, None, ttl, no_store)
    while True:
        flight, leader = cache._flights.join(tkey)
        if leader:
            return Claim(cache, tkey, flight, ttl, no_store)
        finished = yield Wait(flight, cache.wait_timeout + cache.lock_lease)
        if not finished:  # the leader is on this very thread: waiting would deadlock
            return Claim(cache, tkey, None, ttl, no_store)
        if isinstance(flight.error, FlightAbandoned):
            continue
        if flight.error is not None:
            raise flight.error
        assert flight.body is not None
        try:
            value = decode(flight.body)
        except Exception:
            return Claim(cache, tkey, None, ttl, no_store)
        cache._coalesced += 1
        return Fetched(value, CacheInfo(hit=False, tier=None, key=tkey, coalesced=True))
