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

This module is the public face: :class:`Cache` (configuration, keys, the sync and async methods,
stats) and the default JSON codec. The machinery is in the private bases :class:`Cache` inherits:
:mod:`llmcache._reads` (tier plan, generations, lookup and promotion, the fast first-tier path,
failure counting, write-through) and :mod:`llmcache._fetch` (the single-flight fetch flow); the
claim flow is in :mod:`llmcache.claim`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from llmcache import _flow
from llmcache._exceptions import UncacheableValue
from llmcache._fetch import Fetch
from llmcache._reads import log
from llmcache.claim import Claim
from llmcache.fetched import CacheInfo, Fetched
from llmcache.keys import CacheKey, make_key, validate_name
from llmcache.paths import disk_cache_dir
from llmcache.stats import CacheStats, TierStats
from llmcache.tiers.base import SizedTier, Tier
from llmcache.tiers.disk import DiskTier
from llmcache.tiers.memory import MemoryTier

__all__ = ["Cache", "CacheInfo", "Fetched"]

T = TypeVar("T")
_json_decode = json.JSONDecoder().decode


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


class Cache(Fetch):
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
        self.tiers = tuple(tiers)
        self.namespace = validate_name("namespace", namespace)
        self.tenant = None if tenant is None else validate_name("tenant", tenant)
        self.ttl = ttl
        self.single_flight = single_flight
        self.lock_lease = lock_lease
        self.wait_timeout = lock_lease if wait_timeout is None else wait_timeout
        self.generation_refresh = generation_refresh
        self._names: set[str] = {self.namespace}
        # The tier plan and counters of the machinery (llmcache._reads, llmcache._fetch).
        super().__init__()

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
