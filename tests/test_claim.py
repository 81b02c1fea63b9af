"""Cache.claim: single-flight for results published after the call returned."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from llmcache import Cache, DiskTier, MemoryTier
from llmcache.claim import Claim


def _cache(tmp_path: Path) -> Cache:
    return Cache([MemoryTier(), DiskTier(tmp_path / "disk")])


def test_claim_then_publish_stores_and_hits(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    got = cache.claim("k")
    assert isinstance(got, Claim)
    assert got.publish(b'"v"')
    hit = cache.claim("k")
    assert not isinstance(hit, Claim)
    assert hit.value == "v" and hit.info.hit
    stats = cache.stats()
    assert stats.upstream_calls == 1


def test_waiters_get_the_published_result(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    leader = cache.claim("k")
    assert isinstance(leader, Claim)
    results: list[object] = []

    def waiter() -> None:
        results.append(cache.claim("k"))

    threads = [threading.Thread(target=waiter) for _ in range(8)]
    for t in threads:
        t.start()
    # A fetch() of the same key waits on the same flight.
    fetched: list[object] = []
    fetcher = threading.Thread(
        target=lambda: fetched.append(cache.fetch("k", lambda: "computed").value)
    )
    fetcher.start()
    leader.publish(b'"streamed"')
    for t in [*threads, fetcher]:
        t.join(10)
    assert fetched == ["streamed"]
    assert len(results) == 8
    for r in results:
        assert not isinstance(r, Claim)
        assert r.value == "streamed"
    assert cache.stats().upstream_calls == 1


def test_abandoned_claim_lets_a_waiter_compute(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    leader = cache.claim("k")
    assert isinstance(leader, Claim)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(cache.claim("k")))
    waiter.start()
    leader.abandon()
    waiter.join(10)
    (second,) = got
    assert isinstance(second, Claim)  # the waiter now computes itself
    second.publish(b"1")
    assert cache.get("k") == 1
    leader.abandon()  # idempotent
    assert not leader.publish(b"2")  # and final


def test_claim_error_reaches_waiters() -> None:
    # Memory only, in one event loop: the waiter is parked on the flight after one yield.
    cache = Cache([MemoryTier()])

    async def never() -> str:
        raise AssertionError("the waiter must not compute")

    async def main() -> None:
        leader = await cache.aclaim("k")
        assert isinstance(leader, Claim)
        waiter = asyncio.create_task(cache.afetch("k", never))
        await asyncio.sleep(0)
        leader.abandon(RuntimeError("provider said no"))
        with pytest.raises(RuntimeError, match="provider said no"):
            await waiter

    asyncio.run(main())
    assert cache.get("k") is None


def test_publish_without_store(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    leader = cache.claim("k", no_store=True)
    assert isinstance(leader, Claim)
    assert not leader.publish(b"1")
    claim = cache.claim("k")
    assert isinstance(claim, Claim)
    assert not claim.publish(b"2", store=False)
    assert cache.get("k") is None


def test_aclaim() -> None:
    cache = Cache([MemoryTier()])  # no tier I/O: the waiter parks on the flight at once

    async def main() -> None:
        leader = await cache.aclaim("k", ttl=60)
        assert isinstance(leader, Claim)
        waiter = asyncio.create_task(cache.aclaim("k"))
        await asyncio.sleep(0)
        assert await leader.apublish(b'{"a":1}')
        got = await waiter
        assert not isinstance(got, Claim)
        assert got.value == {"a": 1} and got.info.coalesced

    asyncio.run(main())
    with pytest.raises(ValueError, match="ttl"):
        cache.claim("k", ttl=0)


def test_infinite_ttl_is_refused_not_stored_unreadable(tmp_path: Path) -> None:
    # inf would be written into the envelope header, which every reader rejects as corrupt.
    with pytest.raises(ValueError, match="finite"):
        Cache([MemoryTier()], ttl=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        _cache(tmp_path).fetch("k", lambda: 1, ttl=float("inf"))
