"""The single-flight fetch flow of :class:`~llmcache.cache.Cache`.

A miss is computed once per key: concurrent callers of this process join the first one's
*flight* and wait for its result; across processes, the leader takes a lease on the most widely
shared tier that grants them (Redis), looks again, and only then calls upstream. The upstream
function's own errors reach every caller and are never cached; a leader cancelled midway leaves
its waiters to compute for themselves.

:class:`Fetch` adds this flow (and the start of :meth:`Cache.claim`, whose flow lives in
:mod:`llmcache.claim`) to the tier machinery of :class:`~llmcache._reads.Reads`.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from llmcache._flow import Call, Failed, Flow, Sleep, TierCall, Wait
from llmcache._reads import Reads, check_ttl, log
from llmcache.claim import Claim, claim_flow
from llmcache.codec import Entry
from llmcache.fetched import CacheInfo, Fetched
from llmcache.keys import CacheKey
from llmcache.singleflight import Flight, FlightAbandoned, Flights
from llmcache.tiers.base import LockTier

__all__ = ["Fetch"]


@dataclasses.dataclass(slots=True)
class _Job:
    """One upstream call to make and how to store its result (not frozen: made at every miss,
    and a frozen dataclass pays a setattr call per field)."""

    tkey: str
    fn: Callable[[], Any]
    ttl: float | None
    no_store: bool
    condition: Callable[[Any], bool] | None
    enc: Callable[[Any], bytes]


class _Abandoned(FlightAbandoned):
    """The leader of a flight was cancelled; its waiters compute for themselves."""


class _Kind(Exception):
    """An exception reduced to its type name, for logs that must not quote stored values."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(type(exc).__name__)

    def __str__(self) -> str:
        return str(self.args[0])


class Fetch(Reads):
    """Single-flight read-through: one upstream call per missed key, its result shared.

    :class:`~llmcache.cache.Cache` sets the configuration declared here before
    ``super().__init__()``.
    """

    # Set by Cache.__init__ before this class's __init__ runs.
    single_flight: bool
    lock_lease: float
    wait_timeout: float

    def __init__(self) -> None:
        super().__init__()
        locks = [i for i, t in enumerate(self.tiers) if isinstance(t, LockTier)]
        self._lock_index = locks[-1] if locks else None
        self._flights = Flights()
        self._upstream = self._coalesced = self._upstream_errors = 0

    def _begin_fetch(
        self,
        key: object,
        fn: Callable[[], Any],
        *,
        namespace: str | None,
        tenant: str | None,
        ttl: float | None,
        no_cache: bool,
        no_store: bool,
        condition: Callable[[Any], bool] | None,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
        sync: bool,
    ) -> Fetched[Any] | Flow[Fetched[Any]]:
        """The part of a fetch the sync and async faces share: a fast hit, or the flow to drive."""
        if ttl is not None:
            check_ttl(ttl)
        ck = self.key(key, namespace=namespace, tenant=tenant)
        first_missed = None
        if not no_cache:
            hit = self._fast_hit(ck, decode, sync)
            if isinstance(hit, Fetched):
                return hit
            first_missed = hit
        return self._fetch(
            ck,
            first_missed=first_missed,
            fn=fn,
            ttl=ttl,
            no_cache=no_cache,
            no_store=no_store,
            condition=condition,
            enc=encode,
            dec=decode,
        )

    def _fetch(
        self,
        ck: CacheKey,
        *,
        fn: Callable[[], Any],
        ttl: float | None,
        no_cache: bool,
        no_store: bool,
        condition: Callable[[Any], bool] | None,
        enc: Callable[[Any], bytes],
        dec: Callable[[bytes], Any],
        first_missed: str | None = None,
    ) -> Flow[Fetched[Any]]:
        if first_missed is None:
            tkey = yield from self._tier_key(ck)
            start = 0
        else:  # the first tier was read (and missed, counted) on the fast path
            tkey, start = first_missed, 1
        if not no_cache:
            self._lookups += 1
            # After a fast-path miss of the only tier there is nothing left to read.
            found = (yield from self._lookup(tkey, start)) if start < len(self.tiers) else None
            hit = None if found is None else self._hit(tkey, found, dec)
            if hit is not None:
                return hit
        job = _Job(tkey, fn, ttl, no_store, condition, enc)
        if no_cache or not self.single_flight:
            return (yield from self._compute(job, None))
        while True:
            flight, leader = self._flights.join(tkey)
            if leader:
                break
            # The leader waits at most wait_timeout for another process, then computes for at
            # most lock_lease (set above the slowest upstream call) before it counts as hung.
            finished = yield Wait(flight, self.wait_timeout + self.lock_lease)
            if not finished:  # a sync caller on the leader's own thread: waiting would deadlock
                return (yield from self._compute(job, None))
            if isinstance(flight.error, FlightAbandoned):
                # The leader was cancelled or a claim abandoned: free the lease a cancelled
                # leader could not release (a closed flow cannot yield); a waiter then leads.
                if flight.lease is not None:
                    yield from self._each_lock_release(*flight.lease)
                continue
            if flight.error is not None:
                raise flight.error
            assert flight.body is not None
            try:
                value = dec(flight.body)
            except Exception:  # a decoder that rejects the leader's bytes: compute our own
                return (yield from self._compute(job, None))
            self._coalesced += 1
            return Fetched(value, CacheInfo(hit=False, tier=None, key=tkey, coalesced=True))
        try:
            if self._lock_index is None or job.no_store:
                return (yield from self._compute(job, flight))
            return (yield from self._lead(job, flight, dec))
        finally:
            self._flights.leave(tkey, flight)
            if not flight.done:
                flight.finish(None, _Abandoned("the caller computing this key was cancelled"))

    def _hit(
        self, tkey: str, found: tuple[int, Entry], dec: Callable[[bytes], Any]
    ) -> Fetched[Any] | None:
        i, entry = found
        try:
            value = dec(entry.body)
        except Exception as exc:
            # Verified bytes the caller's decoder rejects (a model whose schema changed, a class
            # not imported here): a miss, counted, and the fresh result will overwrite it.
            c = self._counters[i]
            c.hits -= 1
            c.corrupt += 1
            # The type only: a decoder's message may quote the stored value (completion text).
            self._log(
                i, "entry %s in tier %s cannot be decoded (%s); treated as a miss", tkey, _Kind(exc)
            )
            return None
        self._hits += 1
        age = max(0.0, time.time() - entry.created)
        return Fetched(value, CacheInfo(hit=True, tier=self.tiers[i].name, key=tkey, age=age))

    def _lead(self, job: _Job, flight: Flight, dec: Callable[[bytes], Any]) -> Flow[Fetched[Any]]:
        """Compute as the leader holding the cross-process lock of tier ``_lock_index``."""
        tkey, li = job.tkey, self._lock_index
        assert li is not None
        lock_tier, lkey, token = self.tiers[li], tkey + ":lock", uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.002
        while True:
            got = yield TierCall(lock_tier, "acquire", lkey, token, self.lock_lease)
            if type(got) is Failed:
                self._fault(li, got.exc)
                return (yield from self._compute(job, flight))
            # Taken or not, the value may have landed since our first read: look again.
            found = yield from self._lookup(tkey, li, recheck=True)
            hit = None if found is None else self._hit(tkey, found, dec)
            if hit is not None:
                if got:
                    yield from self._each_lock_release(li, lkey, token)
                assert found is not None
                flight.finish(found[1].body)
                return hit
            if got:
                flight.lease = (li, lkey, token)
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "waited %.1fs for another process to compute %s; calling upstream",
                    self.wait_timeout,
                    tkey,
                )
                return (yield from self._compute(job, flight))
            yield Sleep(delay)
            delay = min(delay * 1.5, 0.05)
        # No release in a `finally`: a flow closed by cancellation cannot yield; the lease
        # then frees the lock by itself.
        try:
            fetched = yield from self._compute(job, flight)
        except Exception:
            yield from self._each_lock_release(li, lkey, token)
            raise
        yield from self._each_lock_release(li, lkey, token)
        return fetched

    def _each_lock_release(self, li: int, lkey: str, token: str) -> Flow[None]:
        res = yield TierCall(self.tiers[li], "release", lkey, token)
        if type(res) is Failed:
            self._fault(li, res.exc)

    def _compute(self, job: _Job, flight: Flight | None) -> Flow[Fetched[Any]]:
        self._upstream += 1
        result = yield Call(job.fn)
        if type(result) is Failed:
            self._upstream_errors += 1
            if flight is not None:
                flight.finish(None, result.exc)
            raise result.exc
        try:
            body = job.enc(result)
            keep = not job.no_store and (job.condition is None or job.condition(result))
        except Exception as exc:
            if flight is not None:
                flight.finish(None, exc)
            raise
        stored = (yield from self._store(job.tkey, body, job.ttl)) if keep else False
        if flight is not None:
            flight.finish(body)
        return Fetched(result, CacheInfo(hit=False, tier=None, key=job.tkey, stored=stored))

    def _begin_claim(
        self,
        *,
        key: object,
        decode: Callable[[bytes], Any],
        namespace: str | None,
        tenant: str | None,
        ttl: float | None,
        no_cache: bool,
        no_store: bool,
        sync: bool,
    ) -> Fetched[Any] | Claim | Flow[Fetched[Any] | Claim]:
        """The part of a claim the sync and async faces share: a fast hit, or the flow to drive."""
        check_ttl(ttl)
        ck = self.key(key, namespace=namespace, tenant=tenant)
        first_missed = None
        if not no_cache:
            hit = self._fast_hit(ck, decode, sync)
            if isinstance(hit, Fetched):
                return hit
            first_missed = hit
        return claim_flow(
            self,
            ck,
            decode=decode,
            ttl=ttl,
            no_cache=no_cache,
            no_store=no_store,
            first_missed=first_missed,
        )
