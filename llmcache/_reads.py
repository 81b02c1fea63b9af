"""The tier side of :class:`~llmcache.cache.Cache`: generations, reads with promotion, writes.

:class:`Reads` is the base :class:`~llmcache.cache.Cache` builds on. It holds the tier plan
(which tiers keep entries in process, keep counters, answer the fast path) and the counters
behind :meth:`Cache.stats`, and the flows that talk to the tiers:

* namespace generations: the tag every tier key carries, read from the most widely shared
  counter tier at most once per ``generation_refresh`` seconds, bumped by ``invalidate_namespace``
  and ``clear``;
* the read side: a lookup through the tiers, fastest first, a hit copied into the faster ones
  with its remaining TTL; and the fast path that reads the first tier without building a flow;
* the write side: a write through to every tier;
* failure counting and logging: a failing tier is counted, logged at most once a minute and
  served around, never raised.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmcache._exceptions import TierUnavailable
from llmcache._flow import Failed, Flow, TierCall
from llmcache.codec import CorruptEntry, Entry, decode, encode
from llmcache.fetched import CacheInfo, Fetched
from llmcache.keys import KEY_SCHEMA, CacheKey, validate_name
from llmcache.stats import _Counters
from llmcache.tiers.base import CounterTier, EntryTier, InlineAsync, Tier

__all__ = ["Reads", "cap_ttl", "check_ttl"]

log = logging.getLogger("llmcache")
# namespace -> (tag used in keys, monotonic time it must be re-read, clear epoch, generation)
_Generation = tuple[str, float, int, int]
# Counter of clear() calls; "~" never appears in a namespace name.
_EPOCH = "~epoch"
_LOG_EVERY = 60.0


def check_ttl(ttl: float | None) -> None:
    """Refuse a per-call TTL that is not a finite number of seconds above zero (or ``None``)."""
    # An infinite TTL would be written as a header no reader accepts: None is "forever".
    if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a finite number > 0 of seconds, or None, got {ttl!r}")


def cap_ttl(tier_ttl: float | None, ttl: float | None) -> float | None:
    """The TTL an entry gets in a tier whose own TTL is ``tier_ttl`` (the shorter of the two)."""
    if tier_ttl is None:
        return ttl
    return tier_ttl if ttl is None else min(tier_ttl, ttl)


def _gen_key(namespace: str) -> str:
    # "~" cannot appear in a namespace name, so this never collides with an entry key.
    return f"llmcache:v{KEY_SCHEMA}:~gen:{namespace}"


class Reads:
    """The tiers of a cache, the flows that read and write them, and their counters.

    :class:`~llmcache.cache.Cache` sets the configuration declared here, then calls
    ``super().__init__()``, which derives the tier plan from ``self.tiers``.
    """

    # Set by Cache.__init__ before this class's __init__ runs.
    tiers: tuple[Tier, ...]
    namespace: str
    ttl: float | None
    generation_refresh: float

    if TYPE_CHECKING:

        def key(
            self, payload: object, *, namespace: str | None = None, tenant: str | None = None
        ) -> CacheKey:
            """Defined by :class:`~llmcache.cache.Cache`."""

    def __init__(self) -> None:
        tiers = self.tiers
        # Most widely shared first: the generation is read from the first that answers.
        self._counter_tiers = [i for i, t in enumerate(tiers) if isinstance(t, CounterTier)][::-1]
        self._inline = [isinstance(t, EntryTier) for t in tiers]
        self._all_inline = all(self._inline)
        self._fast_tier = tiers[0] if self._inline[0] else None
        # Any other first tier is read without a flow by the sync faces; by the async ones too
        # when its async reads run inline anyway (disk).
        first = tiers[0]
        self._sync_direct_tier = None if self._inline[0] else first
        self._direct_tier = (
            first
            if not self._inline[0] and getattr(type(first), "aget", None) is InlineAsync.aget
            else None
        )
        self._gens: dict[str, _Generation] = {}
        self._counters = [_Counters() for _ in tiers]
        self._next_log = [0.0] * len(tiers)
        self._lookups = self._hits = 0

    # -- namespace generations ----------------------------------------------------------------

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
                    ttl = cap_ttl(self.tiers[j].ttl, remaining)
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
        that tier has no live entry, failed or held a corrupt entry (counted here as a miss, a
        fault or a corrupt entry: the flow then reads the other tiers only); or ``None`` when it
        could not look (a generation to refresh, a first tier an async caller must await, a
        corrupt entry met by an async caller, whose deletion must not block its loop): the full
        flow then handles and counts everything. Callers count a hit with :meth:`_fast_counted` once
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
                if raw is None:
                    entry = None
                elif type(raw) is not bytes:
                    raise CorruptEntry(f"tier returned {type(raw).__name__}, not bytes")
                else:
                    entry = decode(tkey, raw)
            except CorruptEntry as exc:
                return self._fast_corrupt(tier, tkey, exc) if sync else None
            except Exception as exc:
                self._fault(0, exc)
                return tkey, None
        if entry is None or (entry.ttl is not None and entry.created + entry.ttl <= time.time()):
            self._counters[0].misses += 1
            return tkey, None
        return tkey, entry

    def _fast_corrupt(self, tier: Tier, tkey: str, exc: CorruptEntry) -> tuple[str, None]:
        """A corrupt entry met on the sync fast path: counted, logged and deleted there, so
        the flow goes on from the second tier without reading this one again."""
        self._counters[0].corrupt += 1
        self._log(0, "corrupt entry %s in tier %s (%s); treated as a miss", tkey, exc)
        try:
            tier.delete(tkey)
        except Exception as fault:
            self._fault(0, fault)
        return tkey, None

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

    # -- failures -----------------------------------------------------------------------------

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
            tier_ttl = ttl if tier.ttl is None else cap_ttl(tier.ttl, ttl)
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

    def _set(self, ck: CacheKey, body: bytes, ttl: float | None) -> Flow[None]:
        check_ttl(ttl)
        tkey = yield from self._tier_key(ck)
        yield from self._store(tkey, body, ttl)

    def _delete(self, ck: CacheKey) -> Flow[None]:
        tkey = yield from self._tier_key(ck)
        yield from self._each_tier("delete", tkey)

    def _each_tier(self, method: str, *args: Any) -> Flow[None]:
        for i, tier in enumerate(self.tiers):
            res = yield TierCall(tier, method, *args)
            if type(res) is Failed:
                self._fault(i, res.exc)
