"""The multi-tier cache: read-through with promotion, write-through, single-flight.

Tiers are ordered fastest first. A read tries each in turn; a hit in a slower tier is copied
into the faster ones with the entry's remaining TTL. A write goes to every tier. Any failure of a
tier is counted in :meth:`Cache.stats`, logged (at most once a minute per tier) and served
around: the caller never sees it. Only the upstream function's own errors reach the caller, and
they are never cached.

Keys carry a namespace *generation*: :meth:`Cache.invalidate_namespace` bumps it (one counter
increment, O(1)), after which the old entries simply stop matching and age out. The generation
is read from the most widely shared tier that keeps counters (Redis, else disk, else memory),
at most once per ``generation_refresh`` seconds per namespace, so another process's
invalidation is seen within that time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from llmcache import _flow
from llmcache._exceptions import TierUnavailable, UncacheableValue
from llmcache._flow import Call, Failed, Flow, Sleep, TierCall, Wait
from llmcache.claim import Claim, claim_flow
from llmcache.codec import CorruptEntry, Entry, decode, encode
from llmcache.fetched import CacheInfo, Fetched
from llmcache.keys import KEY_SCHEMA, CacheKey, make_key, validate_name
from llmcache.paths import disk_cache_dir
from llmcache.singleflight import Flight, FlightAbandoned, Flights
from llmcache.stats import CacheStats, TierStats, _Counters
from llmcache.tiers.base import CounterTier, EntryTier, InlineAsync, LockTier, SizedTier, Tier
from llmcache.tiers.disk import DiskTier
from llmcache.tiers.memory import MemoryTier

__all__ = ["Cache", "CacheInfo", "Fetched"]

log = logging.getLogger("llmcache")
# namespace -> (tag used in keys, monotonic time it must be re-read, clear epoch, generation)
_Generation = tuple[str, float, int, int]
# Counter of clear() calls; "~" never appears in a namespace name.
_EPOCH = "~epoch"
T = TypeVar("T")
_LOG_EVERY = 60.0


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


_json_decode = json.JSONDecoder().decode


class _Kind(Exception):
    """An exception reduced to its type name, for logs that must not quote stored values."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(type(exc).__name__)

    def __str__(self) -> str:
        return str(self.args[0])


def json_value(body: bytes) -> Any:
    """Decode JSON bytes written by :func:`json_body` (``json.loads`` without its sniffing)."""
    return _json_decode(body.decode("utf-8", "surrogatepass"))


def json_body(value: Any) -> bytes:
    """Encode a JSON value for storage, refusing anything JSON cannot hold (no pickle)."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    except (TypeError, ValueError) as exc:
        raise UncacheableValue(
            f"value of type {type(value).__name__} cannot be cached: {exc} "
            "(llmcache stores JSON only and never pickles)"
        ) from None


def _check_ttl(ttl: float | None) -> None:
    # An infinite TTL would be written as a header no reader accepts: None is "forever".
    if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a finite number > 0 of seconds, or None, got {ttl!r}")


def _cap(tier_ttl: float | None, ttl: float | None) -> float | None:
    if tier_ttl is None:
        return ttl
    return tier_ttl if ttl is None else min(tier_ttl, ttl)


class Cache:
    """Ordered cache tiers behind one read-through, write-through interface.

    Args:
        tiers: fastest first, e.g. ``[MemoryTier(), DiskTier(path), RedisTier(url)]``.
        namespace: default namespace of keys built from payloads.
        tenant: default tenant scope: entries of one tenant never match another's.
        ttl: default entry lifetime in seconds (``None`` = until evicted).
        single_flight: let concurrent misses of one key share one upstream call.
        lock_lease: seconds a cross-process lock (on a tier that grants leases, i.e. Redis)
            lasts if its holder dies; set it above your slowest upstream call.
        wait_timeout: longest wait for another process's result before calling upstream oneself
            (default: ``lock_lease``); callers in this process wait for their leader up to twice
            as long, since it may first wait that long itself.
        generation_refresh: seconds a namespace generation is trusted before it is read again.
    """

    _defaults: ClassVar[dict[Path, Cache]] = {}
    _defaults_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        tiers: Sequence[Tier],
        *,
        namespace: str = "default",
        tenant: str | None = None,
        ttl: float | None = None,
        single_flight: bool = True,
        lock_lease: float = 60.0,
        wait_timeout: float | None = None,
        generation_refresh: float = 1.0,
    ) -> None:
        if not tiers:
            raise ValueError("Cache needs at least one tier")
        for i, tier in enumerate(tiers):
            if not isinstance(tier, Tier):
                raise TypeError(f"Cache tiers[{i}] ({tier!r}) does not implement the Tier protocol")
        if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"Cache ttl must be a finite number > 0 or None, got {ttl}")
        if lock_lease <= 0:
            raise ValueError(f"Cache lock_lease must be > 0, got {lock_lease}")
        if wait_timeout is not None and wait_timeout <= 0:
            raise ValueError(f"Cache wait_timeout must be > 0 or None, got {wait_timeout}")
        if generation_refresh < 0:
            raise ValueError(f"Cache generation_refresh must be >= 0, got {generation_refresh}")
        self.tiers: tuple[Tier, ...] = tuple(tiers)
        self.namespace = validate_name("namespace", namespace)
        self.tenant = None if tenant is None else validate_name("tenant", tenant)
        self.ttl = ttl
        self.single_flight = single_flight
        self.lock_lease = lock_lease
        self.wait_timeout = lock_lease if wait_timeout is None else wait_timeout
        self.generation_refresh = generation_refresh
        # Most widely shared first: the generation is read from the first that answers.
        self._counter_tiers = [i for i, t in enumerate(tiers) if isinstance(t, CounterTier)][::-1]
        locks = [i for i, t in enumerate(tiers) if isinstance(t, LockTier)]
        self._lock_index = locks[-1] if locks else None
        self._inline = [isinstance(t, EntryTier) for t in tiers]
        self._all_inline = all(self._inline)
        self._fast_tier = self.tiers[0] if self._inline[0] else None
        # Any other first tier is read without a flow by the sync faces; by the async ones too
        # when its async reads run inline anyway (disk).
        first = self.tiers[0]
        self._sync_direct_tier = None if self._inline[0] else first
        self._direct_tier = (
            first
            if not self._inline[0] and getattr(type(first), "aget", None) is InlineAsync.aget
            else None
        )
        self._gens: dict[str, _Generation] = {}
        self._names: set[str] = {self.namespace}
        self._flights = Flights()
        self._counters = [_Counters() for _ in tiers]
        self._next_log = [0.0] * len(tiers)
        self._lookups = self._hits = self._upstream = self._coalesced = self._upstream_errors = 0

    @classmethod
    def default(cls) -> Cache:
        """The embedded default: memory + disk under ``LLMCACHE_DIR`` (else the user cache dir).

        One instance per directory is made on first use and shared by later calls, so every
        ``@cached`` function without an explicit cache shares one memory tier. When the
        directory cannot be opened, the default cache is memory only (and says so in the log).
        """
        directory = disk_cache_dir()
        with cls._defaults_lock:
            cache = cls._defaults.get(directory)
            if cache is None:
                try:
                    disk: list[Tier] = [DiskTier(directory)]
                except ValueError as exc:
                    # An unwritable directory must not fail every @cached call: memory only.
                    log.warning("%s; the default cache runs on memory only", exc)
                    disk = []
                cache = cls([MemoryTier(), *disk])
                cls._defaults[directory] = cache
            return cache

    def __repr__(self) -> str:
        return f"Cache({list(self.tiers)!r}, namespace={self.namespace!r})"

    # -- keys ---------------------------------------------------------------------------------

    def key(
        self, payload: object, *, namespace: str | None = None, tenant: str | None = None
    ) -> CacheKey:
        """Build the key of ``payload`` in this cache's (or the given) namespace and tenant.

        Raises:
            TypeError: the payload has a value with no canonical encoding (its path is named).
            ValueError: the namespace or tenant name is not valid.
        """
        if isinstance(payload, CacheKey):
            # A hand-made key must not bring a name that would break the key layout.
            for kind, name in (("namespace", payload.namespace), ("tenant", payload.tenant)):
                if name is not None and name not in self._names:
                    self._names.add(validate_name(kind, name))
            return payload
        ns = self.namespace if namespace is None else namespace
        if ns not in self._names:
            self._names.add(validate_name("namespace", ns))
        if tenant is None:
            tenant = self.tenant
        elif tenant not in self._names:
            self._names.add(validate_name("tenant", tenant))
        return make_key(payload, namespace=ns, tenant=tenant)

    def _tier_key(self, ck: CacheKey) -> Flow[str]:
        known = self._gens.get(ck.namespace)
        if known is not None and known[1] > time.monotonic():
            return ck.tier_key(known[0])
        tag = yield from self._read_generation(ck.namespace, known)
        return ck.tier_key(tag)

    def _read_generation(self, ns: str, known: _Generation | None) -> Flow[str]:
        # The tag is "<clear epoch>.<namespace generation>": clear() moves the first for every
        # namespace at once, invalidate_namespace() the second for one.
        for i in self._counter_tiers:
            epoch = yield TierCall(self.tiers[i], "counter", _gen_key(_EPOCH))
            if type(epoch) is not Failed:
                gen = yield TierCall(self.tiers[i], "counter", _gen_key(ns))
                if type(gen) is not Failed:
                    return self._remember(ns, epoch, gen)
                epoch = gen
            self._fault(i, epoch.exc)
            if known is not None:
                break  # keep the last value we had rather than a less shared tier's
        if known is not None:
            return self._remember(ns, known[2], known[3])
        return self._remember(ns, 0, 0)

    def _remember(self, ns: str, epoch: int, gen: int) -> str:
        tag = f"{epoch}.{gen}"
        self._gens[ns] = (tag, time.monotonic() + self.generation_refresh, epoch, gen)
        return tag

    # -- reading ------------------------------------------------------------------------------

    def _lookup(
        self, tkey: str, start: int = 0, *, recheck: bool = False
    ) -> Flow[tuple[int, Entry] | None]:
        """Read the tiers from ``start`` on; a hit is promoted into the faster ones.

        ``recheck`` marks the leader's second look after taking a lease (and its polls): those
        misses are not lookups of their own, so they are not counted.
        """
        now = time.time()
        for i in range(start, len(self.tiers)):
            tier, c = self.tiers[i], self._counters[i]
            entry = raw = None
            try:
                if self._inline[i]:
                    entry = tier.get_entry(tkey)  # type: ignore[attr-defined]
                else:
                    raw = yield TierCall(tier, "get", tkey)
                    if type(raw) is Failed:
                        if isinstance(raw.exc, CorruptEntry):
                            # Something under the key that is none of ours (a pickled or str
                            # diskcache row, a Redis list): a bad entry, not a failing tier.
                            raise raw.exc
                        self._fault(i, raw.exc)
                        continue
                    if raw is not None:
                        if type(raw) is not bytes:
                            raise CorruptEntry(f"tier returned {type(raw).__name__}, not bytes")
                        entry = decode(tkey, raw)
            except CorruptEntry as exc:
                c.corrupt += 1
                self._log(i, "corrupt entry %s in tier %s (%s); treated as a miss", tkey, exc)
                res = yield TierCall(tier, "delete", tkey)
                if type(res) is Failed:
                    self._fault(i, res.exc)
                continue
            except Exception as exc:  # an in-process tier that failed
                self._fault(i, exc)
                continue
            if entry is None:
                c.misses += not recheck
                continue
            remaining = entry.remaining(now)
            if remaining is not None and remaining <= 0:
                c.misses += not recheck
                continue
            c.hits += 1
            c.bytes_read += len(entry.body)
            if i:
                if raw is None:
                    raw = encode(tkey, entry.body, created=entry.created, ttl=entry.ttl)
                for j in range(i):
                    ttl = _cap(self.tiers[j].ttl, remaining)
                    if (yield from self._put(j, tkey, raw, entry, ttl)):
                        self._counters[j].promotions += 1
            return i, entry
        return None

    def _put(
        self, i: int, tkey: str, raw: bytes | None, entry: Entry, ttl: float | None
    ) -> Flow[bool]:
        """Write ``entry`` to tier ``i`` (``raw``: its envelope, built here if needed)."""
        tier = self.tiers[i]
        if self._inline[i]:
            return self._put_entry(i, tkey, entry, ttl)
        if raw is None:
            raw = encode(tkey, entry.body, created=entry.created, ttl=entry.ttl)
        res = yield TierCall(tier, "set", tkey, raw, ttl)
        if type(res) is Failed:
            self._fault(i, res.exc)
            return False
        return True

    def _put_entry(self, i: int, tkey: str, entry: Entry, ttl: float | None) -> bool:
        """Write ``entry`` to the in-process tier ``i`` (no flow: nothing to wait for)."""
        try:
            self.tiers[i].set_entry(tkey, entry, ttl)  # type: ignore[attr-defined]
        except Exception as exc:
            self._fault(i, exc)
            return False
        return True

    def _fast_entry(self, ck: CacheKey, sync: bool) -> tuple[str, Entry | None] | None:
        """Look ``ck`` up in the first tier without building a flow.

        Async callers (``sync`` false) read only a first tier that never blocks their loop
        (memory, disk).

        This is the hottest path. Returns ``(tier key, live entry)``; ``(tier key, None)`` when
        that tier has no live entry or failed (counted here as a miss or a fault: the flow then
        reads the other tiers only); or ``None`` when it could not look (a generation to
        refresh, a first tier an async caller must await, a corrupt entry): the full flow then
        handles and counts everything. Callers count a hit with :meth:`_fast_counted` once
        they have decoded it.
        """
        known = self._gens.get(ck.namespace)
        if known is None or known[1] <= time.monotonic():
            return None
        tier = self._fast_tier
        if tier is not None:
            tkey = ck.tier_key(known[0])
            try:
                entry: Entry | None = tier.get_entry(tkey)  # type: ignore[attr-defined]
            except Exception:
                return None
        else:
            tier = self._sync_direct_tier if sync else self._direct_tier
            if tier is None:
                return None
            tkey = ck.tier_key(known[0])
            try:
                raw = tier.get(tkey)
            except CorruptEntry:
                return None
            except Exception as exc:
                self._fault(0, exc)
                return tkey, None
            if raw is None:
                entry = None
            elif type(raw) is not bytes:
                return None
            else:
                try:
                    entry = decode(tkey, raw)
                except CorruptEntry:
                    return None
        if entry is None or (entry.ttl is not None and entry.created + entry.ttl <= time.time()):
            self._counters[0].misses += 1
            return tkey, None
        return tkey, entry

    def _fast_counted(self, entry: Entry) -> None:
        c = self._counters[0]
        c.hits += 1
        c.bytes_read += len(entry.body)
        self._lookups += 1
        self._hits += 1

    def _fast_hit(
        self, ck: CacheKey, dec: Callable[[bytes], Any], sync: bool
    ) -> Fetched[Any] | str | None:
        """A hit in the first tier; else the tier key when that tier missed, else ``None``."""
        found = self._fast_entry(ck, sync)
        if found is None:
            return None
        tkey, entry = found
        if entry is None:
            return tkey
        try:
            value = dec(entry.body)
        except Exception:
            return None  # the full flow counts it as corrupt
        self._fast_counted(entry)
        age = max(0.0, time.time() - entry.created)
        return Fetched(value, CacheInfo(hit=True, tier=self.tiers[0].name, key=tkey, age=age))

    def _fault(self, i: int, exc: Exception) -> None:
        if isinstance(exc, TierUnavailable):
            self._counters[i].skipped += 1
            return
        self._counters[i].errors += 1
        self._counters[i].last_error = f"{type(exc).__name__}: {exc}"
        self._log(i, "cache tier %s failed (%s); serving from the other tiers", None, exc)

    def _log(self, i: int, msg: str, tkey: str | None, exc: Exception) -> None:
        # Once a minute per tier: a dead tier must not flood the logs at every call.
        now = time.monotonic()
        if now < self._next_log[i]:
            return
        self._next_log[i] = now + _LOG_EVERY
        detail = f"{type(exc).__name__}: {exc}"
        if tkey is None:
            log.warning(msg, self.tiers[i].name, detail)
        else:
            log.warning(msg, tkey, self.tiers[i].name, detail)

    # -- writing ------------------------------------------------------------------------------

    def _store(self, tkey: str, body: bytes, ttl: float | None) -> Flow[bool]:
        ttl = self.ttl if ttl is None else ttl
        entry = Entry(body=body, created=time.time(), ttl=ttl)
        # The envelope only for tiers that hold bytes: an in-process tier keeps the entry.
        raw = None if self._all_inline else encode(tkey, body, created=entry.created, ttl=ttl)
        stored = False
        for i, tier in enumerate(self.tiers):
            tier_ttl = ttl if tier.ttl is None else _cap(tier.ttl, ttl)
            # An in-process tier is written here: a sub-flow per miss costs more than the write.
            if (
                self._put_entry(i, tkey, entry, tier_ttl)
                if self._inline[i]
                else (yield from self._put(i, tkey, raw, entry, tier_ttl))
            ):
                c = self._counters[i]
                c.stores += 1
                c.bytes_written += len(body) if self._inline[i] or raw is None else len(raw)
                stored = True
        return stored

    def _each_tier(self, method: str, *args: Any) -> Flow[None]:
        for i, tier in enumerate(self.tiers):
            res = yield TierCall(tier, method, *args)
            if type(res) is Failed:
                self._fault(i, res.exc)

    # -- the fetch flow -----------------------------------------------------------------------

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
            _check_ttl(ttl)
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

    def _begin_get(
        self, key: object, namespace: str | None, tenant: str | None, sync: bool
    ) -> bytes | Flow[bytes | None]:
        """The body of a fast hit, or the flow that reads the tiers."""
        ck = self.key(key, namespace=namespace, tenant=tenant)
        found = self._fast_entry(ck, sync)
        if found is None:
            return self._get(ck)
        if found[1] is None:
            return self._get(ck, first_missed=found[0])
        self._fast_counted(found[1])
        return found[1].body

    # -- public API: sync ---------------------------------------------------------------------

    def fetch(
        self,
        key: object,
        fn: Callable[[], T],
        *,
        namespace: str | None = None,
        tenant: str | None = None,
        ttl: float | None = None,
        no_cache: bool = False,
        no_store: bool = False,
        condition: Callable[[T], bool] | None = None,
        encode: Callable[[T], bytes] = json_body,
        decode: Callable[[bytes], T] = json_value,
    ) -> Fetched[T]:
        """Return the cached value of ``key``, or call ``fn()``, store and return its result.

        Args:
            key: a :class:`CacheKey` or any payload :func:`~llmcache.keys.canonical_json` encodes.
            fn: the upstream call, made at most once per key across concurrent callers.
            namespace: namespace of a payload key (default: the cache's).
            tenant: tenant scope of a payload key (default: the cache's).
            ttl: lifetime of a stored result in seconds (default: the cache's).
            no_cache: skip the read (always call ``fn``); the result is still stored.
            no_store: do not store the result.
            condition: store the result only when ``condition(result)`` is true.
            encode: result → JSON bytes (default: ``json.dumps``; pickle is never used).
            decode: JSON bytes → result on a hit (default: :func:`json_value`).

        Returns:
            :class:`Fetched` with the value and a :class:`CacheInfo` saying where it came from.

        Raises:
            Whatever ``fn`` raises (never cached), ``UncacheableValue`` when ``encode`` cannot
            encode the result, ``TypeError`` for a payload with no canonical form. Tier failures
            are never raised.
        """
        started = self._begin_fetch(
            key,
            fn,
            namespace=namespace,
            tenant=tenant,
            ttl=ttl,
            no_cache=no_cache,
            no_store=no_store,
            condition=condition,
            encode=encode,
            decode=decode,
            sync=True,
        )
        return started if isinstance(started, Fetched) else _flow.run(started)

    def get_or_set(self, key: object, fn: Callable[[], T], **options: Any) -> T:
        """:meth:`fetch`, returning only the value."""
        fetched: Fetched[T] = self.fetch(key, fn, **options)
        return fetched.value

    def get(
        self,
        key: object,
        default: Any = None,
        *,
        namespace: str | None = None,
        tenant: str | None = None,
    ) -> Any:
        """Return the JSON value cached under ``key``, or ``default``."""
        body = self.get_bytes(key, namespace=namespace, tenant=tenant)
        return default if body is None else json_value(body)

    def get_bytes(
        self, key: object, *, namespace: str | None = None, tenant: str | None = None
    ) -> bytes | None:
        """Return the stored JSON bytes under ``key`` (for callers with their own decoder)."""
        started = self._begin_get(key, namespace, tenant, sync=True)
        return started if isinstance(started, bytes) else _flow.run(started)

    def set(
        self,
        key: object,
        value: Any,
        *,
        namespace: str | None = None,
        tenant: str | None = None,
        ttl: float | None = None,
    ) -> None:
        """Store the JSON value ``value`` under ``key`` in every tier."""
        self.set_bytes(key, json_body(value), namespace=namespace, tenant=tenant, ttl=ttl)

    def set_bytes(
        self,
        key: object,
        body: bytes,
        *,
        namespace: str | None = None,
        tenant: str | None = None,
        ttl: float | None = None,
    ) -> None:
        """Store JSON bytes ``body`` under ``key`` in every tier."""
        _flow.run(self._set(self.key(key, namespace=namespace, tenant=tenant), body, ttl))

    def delete(
        self, key: object, *, namespace: str | None = None, tenant: str | None = None
    ) -> None:
        """Remove the entry of ``key`` from every tier."""
        _flow.run(self._delete(self.key(key, namespace=namespace, tenant=tenant)))

    def invalidate_namespace(self, namespace: str | None = None) -> int:
        """Make every entry of ``namespace`` stop matching, in O(1); return the new generation.

        Other processes sharing a counter tier (disk, Redis) see it within
        ``generation_refresh`` seconds.
        """
        return _flow.run(self._invalidate(namespace))

    def clear(self) -> None:
        """Remove every entry (all namespaces, all tenants) from every tier.

        Other processes stop matching what their own memory tiers hold within
        ``generation_refresh`` seconds.
        """
        _flow.run(self._clear())

    def close(self) -> None:
        """Close every tier."""
        _flow.run(self._each_tier("close"))

    def claim(
        self,
        key: object,
        *,
        decode: Callable[[bytes], T] = json_value,
        namespace: str | None = None,
        tenant: str | None = None,
        ttl: float | None = None,
        no_cache: bool = False,
        no_store: bool = False,
    ) -> Fetched[T] | Claim:
        """Return the cached value of ``key``, or a :class:`~llmcache.claim.Claim` to compute it.

        For results that arrive after the call returns (a stream read by the caller): the
        caller holding the claim ends it with ``publish(body)`` or ``abandon()``; callers that
        miss the same key meanwhile (here or through :meth:`fetch`) wait for it.

        Args:
            key: a :class:`CacheKey` or any payload :func:`~llmcache.keys.canonical_json` encodes.
            decode: JSON bytes → value on a hit.
            namespace: namespace of a payload key (default: the cache's).
            tenant: tenant scope of a payload key (default: the cache's).
            ttl: lifetime of the published result in seconds (default: the cache's).
            no_cache: skip the read (always claim).
            no_store: publish to waiters without storing.
        """
        started = self._begin_claim(
            key=key,
            decode=decode,
            namespace=namespace,
            tenant=tenant,
            ttl=ttl,
            no_cache=no_cache,
            no_store=no_store,
            sync=True,
        )
        return started if isinstance(started, Fetched | Claim) else _flow.run(started)

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
        _check_ttl(ttl)
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

    # -- public API: async --------------------------------------------------------------------

    async def afetch(
        self,
        key: object,
        fn: Callable[[], Awaitable[T]],
        *,
        namespace: str | None = None,
        tenant: str | None = None,
        ttl: float | None = None,
        no_cache: bool = False,
        no_store: bool = False,
        condition: Callable[[T], bool] | None = None,
        encode: Callable[[T], bytes] = json_body,
        decode: Callable[[bytes], T] = json_value,
    ) -> Fetched[T]:
        """Async :meth:`fetch`: ``fn`` returns an awaitable."""
        started = self._begin_fetch(
            key,
            fn,
            namespace=namespace,
            tenant=tenant,
            ttl=ttl,
            no_cache=no_cache,
            no_store=no_store,
            condition=condition,
            encode=encode,
            decode=decode,
            sync=False,
        )
        return started if isinstance(started, Fetched) else await _flow.arun(started)

    async def aclaim(
        self,
        key: object,
        *,
        decode: Callable[[bytes], T] = json_value,
        namespace: str | None = None,
        tenant: str | None = None,
        ttl: float | None = None,
        no_cache: bool = False,
        no_store: bool = False,
    ) -> Fetched[T] | Claim:
        """Async :meth:`claim` (end the claim with ``apublish`` or ``abandon``)."""
        started = self._begin_claim(
            key=key,
            decode=decode,
            namespace=namespace,
            tenant=tenant,
            ttl=ttl,
            no_cache=no_cache,
            no_store=no_store,
            sync=False,
        )
        return started if isinstance(started, Fetched | Claim) else await _flow.arun(started)

    async def aget_or_set(self, key: object, fn: Callable[[], Awaitable[T]], **options: Any) -> T:
        """Async :meth:`get_or_set`."""
        fetched: Fetched[T] = await self.afetch(key, fn, **options)
        return fetched.value

    async def aget(
        self,
        key: object,
        default: Any = None,
        *,
        namespace: str | None = None,
        tenant: str | None = None,
    ) -> Any:
        """Async :meth:`get`."""
        started = self._begin_get(key, namespace, tenant, sync=False)
        body = started if isinstance(started, bytes) else await _flow.arun(started)
        return default if body is None else json_value(body)

    async def aset(
        self,
        key: object,
        value: Any,
        *,
        namespace: str | None = None,
        tenant: str | None = None,
        ttl: float | None = None,
    ) -> None:
        """Async :meth:`set`."""
        ck = self.key(key, namespace=namespace, tenant=tenant)
        await _flow.arun(self._set(ck, json_body(value), ttl))

    async def adelete(
        self, key: object, *, namespace: str | None = None, tenant: str | None = None
    ) -> None:
        """Async :meth:`delete`."""
        await _flow.arun(self._delete(self.key(key, namespace=namespace, tenant=tenant)))

    async def ainvalidate_namespace(self, namespace: str | None = None) -> int:
        """Async :meth:`invalidate_namespace`."""
        return await _flow.arun(self._invalidate(namespace))

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await _flow.arun(self._clear())

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        await _flow.arun(self._each_tier("close"))

    # -- flows behind the simple operations ---------------------------------------------------

    def _get(self, ck: CacheKey, first_missed: str | None = None) -> Flow[bytes | None]:
        if first_missed is None:
            tkey = yield from self._tier_key(ck)
            start = 0
        else:  # the first tier was read (and missed, counted) on the fast path
            tkey, start = first_missed, 1
        self._lookups += 1
        found = (yield from self._lookup(tkey, start)) if start < len(self.tiers) else None
        if found is None:
            return None
        self._hits += 1
        return found[1].body

    def _set(self, ck: CacheKey, body: bytes, ttl: float | None) -> Flow[None]:
        _check_ttl(ttl)
        tkey = yield from self._tier_key(ck)
        yield from self._store(tkey, body, ttl)

    def _delete(self, ck: CacheKey) -> Flow[None]:
        tkey = yield from self._tier_key(ck)
        yield from self._each_tier("delete", tkey)

    def _invalidate(self, namespace: str | None) -> Flow[int]:
        ns = self.namespace if namespace is None else validate_name("namespace", namespace)
        known = self._gens.get(ns)
        epoch, new = (known[2], known[3] + 1) if known else (0, 1)
        # Bump every counter tier, so a fallback tier also moves on when the shared one is down.
        for i in self._counter_tiers:
            res = yield TierCall(self.tiers[i], "incr", _gen_key(ns))
            if type(res) is Failed:
                self._fault(i, res.exc)
            else:
                new = max(new, res)
        self._remember(ns, epoch, new)
        return new

    def _clear(self) -> Flow[None]:
        yield from self._each_tier("clear")
        # Tiers keep their counters through clear(), so the epoch only moves forward; other
        # processes see it within generation_refresh and stop matching what their memory holds.
        for i in self._counter_tiers:
            res = yield TierCall(self.tiers[i], "incr", _gen_key(_EPOCH))
            if type(res) is Failed:
                self._fault(i, res.exc)
        self._gens.clear()

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """Counters since this cache was made, for the cache and for each tier."""
        tiers = []
        for tier, c in zip(self.tiers, self._counters, strict=True):
            entries = size = None
            if isinstance(tier, SizedTier):
                try:
                    entries, size = tier.usage()
                except Exception:  # usage is informative only
                    log.debug("usage() of tier %s failed", tier.name, exc_info=True)
            tiers.append(
                TierStats(name=tier.name, entries=entries, size_bytes=size, **dataclasses.asdict(c))
            )
        return CacheStats(
            lookups=self._lookups,
            hits=self._hits,
            upstream_calls=self._upstream,
            coalesced=self._coalesced,
            upstream_errors=self._upstream_errors,
            tiers=tuple(tiers),
        )


def _gen_key(namespace: str) -> str:
    # "~" cannot appear in a namespace name, so this never collides with an entry key.
    return f"llmcache:v{KEY_SCHEMA}:~gen:{namespace}"
