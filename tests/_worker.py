"""Code that child processes run for the cross-process tests (spawned, never forked).

Not collected by pytest (no ``test_`` prefix). Each entry point takes the URL of the test's
private Redis server, builds its own :class:`~llmcache.Cache` on it and reports through that
same server: upstream calls are counted with INCR on :data:`UPSTREAM_CALLS`, results are pushed
as JSON onto :data:`RESULTS`. Keys used here start with ``test:``, never ``llmcache:``, so they
can never be mistaken for cache entries.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from typing import Any

import redis
import redis.asyncio

from llmcache import Cache, Fetched, MemoryTier, RedisTier

__all__ = [
    "HOLDING",
    "READY",
    "RESULTS",
    "UPSTREAM_CALLS",
    "async_callers",
    "hold_lock",
    "thread_callers",
    "wait_for_peers",
]

UPSTREAM_CALLS = "test:upstream-calls"
READY = "test:ready"
RESULTS = "test:results"
HOLDING = "test:holding"

# Generous timeouts: these tests are about single-flight, not latency. 50 callers opening their
# connections at once in a freshly spawned process on a busy machine can exceed the 0.25 s
# defaults, and a lock call that times out rightly sends its caller upstream.
TIMEOUTS = {"socket_timeout": 5.0, "connect_timeout": 5.0}


def wait_for_peers(client: redis.Redis, parties: int, timeout: float = 30.0) -> None:
    """A barrier across processes: return once ``parties`` processes have reached it."""
    client.incr(READY)
    deadline = time.monotonic() + timeout
    while int(client.get(READY) or 0) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {client.get(READY)!r} of {parties} processes got ready")
        time.sleep(0.001)


def _outcome(fetched: Fetched[Any], started: float) -> dict[str, Any]:
    info = fetched.info
    return {
        "value": fetched.value,
        "hit": info.hit,
        "tier": info.tier,
        "coalesced": info.coalesced,
        "started": started,
    }


def thread_callers(url: str, payload: dict[str, Any], callers: int, parties: int) -> None:
    """``callers`` threads fetch ``payload`` at once; the upstream call takes 0.5 s."""
    client = redis.Redis.from_url(url)
    cache = Cache([MemoryTier(), RedisTier(url, **TIMEOUTS)], lock_lease=10.0)

    def upstream() -> dict[str, Any]:
        client.incr(UPSTREAM_CALLS)
        time.sleep(0.5)  # a slow model: every caller of both processes arrives meanwhile
        return {"token": uuid.uuid4().hex, "pid": os.getpid(), "finished": time.time()}

    gate = threading.Barrier(callers)
    outcomes: list[dict[str, Any]] = []
    errors: list[str] = []

    def caller() -> None:
        gate.wait()
        started = time.time()
        try:
            outcomes.append(_outcome(cache.fetch(payload, upstream), started))
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    wait_for_peers(client, parties)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = {
        "pid": os.getpid(),
        "outcomes": outcomes,
        "errors": errors,
        "upstream_calls": cache.stats().upstream_calls,
    }
    client.rpush(RESULTS, json.dumps(report))
    cache.close()
    client.close()


def async_callers(url: str, payload: dict[str, Any], callers: int, parties: int) -> None:
    """``callers`` asyncio tasks fetch ``payload`` at once; the upstream call takes 0.5 s."""
    asyncio.run(_async_callers(url, payload, callers, parties))


async def _async_callers(url: str, payload: dict[str, Any], callers: int, parties: int) -> None:
    sync_client = redis.Redis.from_url(url)
    client = redis.asyncio.Redis.from_url(url)
    cache = Cache([MemoryTier(), RedisTier(url, **TIMEOUTS)], lock_lease=10.0)

    async def upstream() -> dict[str, Any]:
        await client.incr(UPSTREAM_CALLS)
        await asyncio.sleep(0.5)
        return {"token": uuid.uuid4().hex, "pid": os.getpid(), "finished": time.time()}

    errors: list[str] = []

    async def caller() -> dict[str, Any] | None:
        started = time.time()
        try:
            return _outcome(await cache.afetch(payload, upstream), started)
        except BaseException as exc:
            errors.append(repr(exc))
            return None

    wait_for_peers(sync_client, parties)
    results = await asyncio.gather(*(caller() for _ in range(callers)))
    report = {
        "pid": os.getpid(),
        "outcomes": [r for r in results if r is not None],
        "errors": errors,
        "upstream_calls": cache.stats().upstream_calls,
    }
    await client.rpush(RESULTS, json.dumps(report))
    await cache.aclose()
    await client.aclose()
    sync_client.close()


def hold_lock(url: str, payload: dict[str, Any], lease: float, fail_after: float | None) -> None:
    """Fetch ``payload`` with an upstream call that blocks (or fails after ``fail_after`` s).

    While blocked this process holds the cross-process lock of the key; it announces that by
    setting :data:`HOLDING`. The test SIGKILLs it, or lets the upstream call fail.
    """
    client = redis.Redis.from_url(url)
    cache = Cache([MemoryTier(), RedisTier(url, **TIMEOUTS)], lock_lease=lease)

    def upstream() -> str:
        client.incr(UPSTREAM_CALLS)
        client.set(HOLDING, os.getpid())
        if fail_after is None:
            time.sleep(120)  # until SIGKILL
            return "the holder's answer"
        time.sleep(fail_after)
        raise RuntimeError("the holder's upstream call failed")

    try:
        cache.fetch(payload, upstream)
    except RuntimeError as exc:
        client.rpush(RESULTS, json.dumps({"pid": os.getpid(), "errors": [repr(exc)]}))
    cache.close()
    client.close()
