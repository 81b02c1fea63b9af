"""Cache behaviour on real tiers: read-through, promotion, TTLs, controls, invalidation, stats."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from llmcache import Cache, CacheKey, DiskTier, MemoryTier, RedisTier, UncacheableValue
from llmcache.codec import Entry


def counting(value: Any) -> tuple[list[int], Any]:
    calls = [0]

    def fn() -> Any:
        calls[0] += 1
        return value

    return calls, fn


@pytest.fixture
def two_tier(tmp_path: Path) -> Cache:
    return Cache([MemoryTier(), DiskTier(tmp_path / "disk")])


def test_miss_then_hit_from_the_fastest_tier(two_tier: Cache) -> None:
    calls, fn = counting({"answer": 42})
    first = two_tier.fetch({"q": "life"}, fn)
    assert first.value == {"answer": 42}
    assert not first.info.hit
    assert first.info.stored
    second = two_tier.fetch({"q": "life"}, fn)
    assert second.value == {"answer": 42}
    assert second.info.hit
    assert second.info.tier == "memory"
    assert second.info.age is not None
    assert calls[0] == 1


def test_write_through_and_promotion_from_a_slower_tier(tmp_path: Path, redis_url: str) -> None:
    disk = tmp_path / "disk"
    writer = Cache([MemoryTier(), DiskTier(disk), RedisTier(redis_url)])
    writer.set({"q": 1}, "one", ttl=100)
    for tier in writer.tiers:
        assert tier.get(writer.fetch({"q": 1}, lambda: "x").info.key) is not None

    # A new process on the same machine: empty memory, the disk has it.
    reader = Cache([MemoryTier(), DiskTier(disk), RedisTier(redis_url)])
    got = reader.fetch({"q": 1}, lambda: "recomputed")
    assert (got.value, got.info.tier) == ("one", "disk")
    assert reader.fetch({"q": 1}, lambda: "recomputed").info.tier == "memory"
    stats = reader.stats()
    assert stats.tiers[0].promotions == 1
    assert stats.tiers[2].hits == 0  # never reached Redis

    # Another host: only Redis has it; both faster tiers get filled.
    remote = Cache([MemoryTier(), DiskTier(tmp_path / "other-host"), RedisTier(redis_url)])
    assert remote.fetch({"q": 1}, lambda: "recomputed").info.tier == "redis"
    assert remote.fetch({"q": 1}, lambda: "recomputed").info.tier == "memory"
    assert remote.stats().tiers[1].promotions == 1


def test_promotion_keeps_the_remaining_ttl_not_a_fresh_one(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    Cache([DiskTier(disk)]).set({"q": 1}, "v", ttl=100)
    memory = MemoryTier()
    reader = Cache([memory, DiskTier(disk)])
    info = reader.fetch({"q": 1}, lambda: "x").info
    expires = memory._data[info.key][1]
    remaining = expires - time.monotonic()
    assert 0 < remaining <= 100
    # And the envelope keeps the original creation time, so its age grows from the first store.
    assert reader.fetch({"q": 1}, lambda: "x").info.age is not None


def test_tier_ttl_caps_entry_ttl(tmp_path: Path) -> None:
    memory = MemoryTier(ttl=2)
    cache = Cache([memory, DiskTier(tmp_path)], ttl=1000)
    info = cache.fetch({"q": 1}, lambda: 1).info
    assert memory._data[info.key][1] - time.monotonic() <= 2
    disk_expiry = cache.tiers[1]._cache.get(info.key, expire_time=True)[1]  # type: ignore[attr-defined]
    assert disk_expiry - time.time() > 900


def test_expired_entries_are_misses(tmp_path: Path) -> None:
    cache = Cache([MemoryTier(), DiskTier(tmp_path)])
    calls, fn = counting("v")
    cache.fetch({"q": 1}, fn, ttl=0.05)
    deadline = time.monotonic() + 5
    while cache.fetch({"q": 1}, fn, no_store=True).info.hit is not False:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert calls[0] == 2


def test_no_cache_skips_the_read_but_stores(two_tier: Cache) -> None:
    two_tier.set({"q": 1}, "old")
    got = two_tier.fetch({"q": 1}, lambda: "new", no_cache=True)
    assert (got.value, got.info.hit, got.info.stored) == ("new", False, True)
    assert two_tier.get({"q": 1}) == "new"


def test_no_store_skips_the_write(two_tier: Cache) -> None:
    got = two_tier.fetch({"q": 1}, lambda: "v", no_store=True)
    assert not got.info.stored
    assert two_tier.get({"q": 1}) is None
    assert all(t.stores == 0 for t in two_tier.stats().tiers)


def test_condition_decides_what_is_stored(two_tier: Cache) -> None:
    two_tier.fetch({"q": 1}, lambda: {"ok": False}, condition=lambda r: r["ok"])
    assert two_tier.get({"q": 1}) is None
    two_tier.fetch({"q": 1}, lambda: {"ok": True}, condition=lambda r: r["ok"])
    assert two_tier.get({"q": 1}) == {"ok": True}


def test_namespaces_and_tenants_keep_entries_apart(two_tier: Cache) -> None:
    two_tier.set({"q": 1}, "default")
    two_tier.set({"q": 1}, "ns-a", namespace="a")
    two_tier.set({"q": 1}, "tenant-x", tenant="x")
    assert two_tier.get({"q": 1}) == "default"
    assert two_tier.get({"q": 1}, namespace="a") == "ns-a"
    assert two_tier.get({"q": 1}, tenant="x") == "tenant-x"
    assert two_tier.get({"q": 1}, tenant="y") is None
    with pytest.raises(ValueError, match="namespace"):
        two_tier.get({"q": 1}, namespace="bad name")


def test_invalidate_namespace_is_o1_and_leaves_others(two_tier: Cache) -> None:
    for i in range(50):
        two_tier.set({"q": i}, i, namespace="a")
    two_tier.set({"q": 0}, "b", namespace="b")
    entries_before = two_tier.tiers[1].usage()[0]  # type: ignore[attr-defined]
    assert two_tier.invalidate_namespace("a") == 1
    assert all(two_tier.get({"q": i}, namespace="a") is None for i in range(50))
    assert two_tier.get({"q": 0}, namespace="b") == "b"
    # Nothing was scanned or deleted: the old entries just stop matching.
    assert two_tier.tiers[1].usage()[0] == entries_before  # type: ignore[attr-defined]
    two_tier.set({"q": 0}, "fresh", namespace="a")
    assert two_tier.get({"q": 0}, namespace="a") == "fresh"


def peer(disk: Path, redis_url: str) -> Cache:
    """A process on another host: its own memory and disk, only Redis in common."""
    return Cache([MemoryTier(), DiskTier(disk), RedisTier(redis_url)], generation_refresh=0)


def test_invalidation_reaches_other_processes_through_the_shared_tier(
    tmp_path: Path, redis_url: str
) -> None:
    a, b = peer(tmp_path / "host-a", redis_url), peer(tmp_path / "host-b", redis_url)
    a.set({"q": 1}, "v")
    assert b.get({"q": 1}) == "v"  # now also in b's memory
    a.invalidate_namespace()
    assert b.get({"q": 1}) is None


def test_clear_reaches_other_processes_and_never_revives_old_entries(
    tmp_path: Path, redis_url: str
) -> None:
    a, b = peer(tmp_path / "host-a", redis_url), peer(tmp_path / "host-b", redis_url)
    a.set({"q": 1}, "before")
    assert b.get({"q": 1}) == "before"  # b's memory holds it now
    a.clear()
    assert b.get({"q": 1}) is None  # b's memory entry no longer matches
    # Invalidate, then clear: the namespace generation must not fall back to an older value.
    a.set({"q": 2}, "old")
    a.invalidate_namespace()
    a.clear()
    assert a.invalidate_namespace() == 2
    assert b.get({"q": 2}) is None


def test_delete_and_clear(tmp_path: Path, redis_url: str) -> None:
    cache = Cache([MemoryTier(), DiskTier(tmp_path), RedisTier(redis_url)])
    cache.set({"q": 1}, 1)
    cache.set({"q": 2}, 2, namespace="other")
    cache.delete({"q": 1})
    assert cache.get({"q": 1}) is None
    assert cache.get({"q": 2}, namespace="other") == 2
    cache.clear()
    assert cache.get({"q": 2}, namespace="other") is None
    fresh = Cache([MemoryTier(), DiskTier(tmp_path), RedisTier(redis_url)])
    assert fresh.get({"q": 2}, namespace="other") is None


def test_stats_per_tier(two_tier: Cache) -> None:
    two_tier.get_or_set({"q": 1}, lambda: "v")
    two_tier.get_or_set({"q": 1}, lambda: "v")
    two_tier.get({"q": 2})
    stats = two_tier.stats()
    memory, disk = stats.tiers
    assert (stats.lookups, stats.hits, stats.upstream_calls) == (3, 1, 1)
    assert (memory.hits, memory.misses, memory.stores) == (1, 2, 1)
    # The miss leader reads the disk once more after taking its lease (another process may
    # have stored the value in between); that re-check is not a lookup of its own.
    assert (disk.hits, disk.misses, disk.stores) == (0, 2, 1)
    # The memory tier holds values, the disk tier envelopes (a header before the value).
    assert disk.bytes_written > memory.bytes_written == memory.bytes_read > 0
    assert memory.entries == 1
    assert disk.entries == 1
    assert memory.hit_rate == pytest.approx(1 / 3)
    assert stats.as_dict()["tiers"][0]["name"] == "memory"


def test_upstream_errors_reach_the_caller_and_are_never_cached(two_tier: Cache) -> None:
    def boom() -> str:
        raise RuntimeError("provider says no")

    with pytest.raises(RuntimeError, match="provider says no"):
        two_tier.get_or_set({"q": 1}, boom)
    assert two_tier.get({"q": 1}) is None
    assert two_tier.get_or_set({"q": 1}, lambda: "ok") == "ok"
    assert two_tier.stats().upstream_errors == 1


def test_values_with_no_json_form_are_refused(two_tier: Cache) -> None:
    with pytest.raises(UncacheableValue, match="never pickles"):
        two_tier.get_or_set({"q": 1}, object)
    with pytest.raises(UncacheableValue):
        two_tier.get_or_set({"q": 2}, lambda: float("nan"))


def test_a_value_the_decoder_rejects_is_a_counted_miss(two_tier: Cache) -> None:
    two_tier.set({"q": 1}, {"shape": "old"})

    def strict(body: bytes) -> dict[str, str]:
        raise ValueError("schema changed")

    got = two_tier.fetch({"q": 1}, lambda: {"shape": "new"}, decode=strict)
    assert got.value == {"shape": "new"}
    assert not got.info.hit
    assert two_tier.stats().tiers[0].corrupt == 1


class BrokenTier:
    """A user-written tier whose storage fails on every call (a full disk, say)."""

    name = "broken"
    ttl = None

    def _fail(self, *args: Any) -> Any:
        raise OSError(28, "No space left on device")

    get = set = delete = clear = close = counter = incr = _fail

    async def aget(self, *args: Any) -> Any:
        self._fail()

    aset = adelete = aclear = aclose = acounter = aincr = aget


def test_a_failing_tier_never_reaches_the_caller(tmp_path: Path, caplog: Any) -> None:
    cache = Cache([MemoryTier(), BrokenTier(), DiskTier(tmp_path)])  # type: ignore[list-item]
    assert cache.get_or_set({"q": 1}, lambda: "v") == "v"
    fresh = Cache([MemoryTier(), BrokenTier(), DiskTier(tmp_path)])  # type: ignore[list-item]
    got = fresh.fetch({"q": 1}, lambda: "recomputed")
    assert (got.value, got.info.tier) == ("v", "disk")
    fresh.invalidate_namespace()
    fresh.clear()
    broken = fresh.stats().tiers[1]
    assert broken.errors >= 4
    # Logged, but once a minute per tier, not once per call.
    assert sum("broken failed" in r.getMessage() for r in caplog.records) <= 2

    async def go() -> None:
        assert (await fresh.afetch({"q": 9}, _async_value)).value == "async"

    asyncio.run(go())


async def _async_value() -> str:
    return "async"


def test_single_flight_across_threads(two_tier: Cache) -> None:
    calls = [0]
    release = threading.Event()

    def slow() -> list[int]:
        calls[0] += 1
        release.wait(5)
        return [1, 2, 3]

    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(two_tier.get_or_set({"q": 1}, slow)))
        for _ in range(32)
    ]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join()
    assert calls[0] == 1
    assert results == [[1, 2, 3]] * 32
    # Waiters decode their own copy: no caller can change another's result.
    assert len({id(r) for r in results}) == 32


def test_single_flight_across_tasks_and_threads_together(two_tier: Cache) -> None:
    calls = [0]
    started = threading.Event()

    async def slow() -> str:
        calls[0] += 1
        started.set()
        await asyncio.sleep(0.2)
        return "shared"

    thread_results: list[str] = []

    def in_thread() -> None:
        started.wait(5)
        thread_results.append(two_tier.get_or_set({"q": 1}, lambda: "thread computed"))

    async def main() -> list[str]:
        threads = [threading.Thread(target=in_thread) for _ in range(4)]
        for t in threads:
            t.start()
        got = await asyncio.gather(*(two_tier.aget_or_set({"q": 1}, slow) for _ in range(50)))
        for t in threads:
            t.join()
        return got

    assert asyncio.run(main()) == ["shared"] * 50
    assert thread_results == ["shared"] * 4
    assert calls[0] == 1
    assert two_tier.stats().coalesced + two_tier.stats().hits >= 53


def test_single_flight_shares_an_error_then_forgets_it(two_tier: Cache) -> None:
    calls = [0]

    async def failing() -> str:
        calls[0] += 1
        await asyncio.sleep(0.05)
        raise ConnectionError("upstream down")

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(two_tier.aget_or_set({"q": 1}, failing) for _ in range(10)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert calls[0] == 1
    assert all(isinstance(r, ConnectionError) for r in results)
    assert two_tier.get_or_set({"q": 1}, lambda: "recovered") == "recovered"


def test_a_cancelled_leader_does_not_strand_its_waiters(two_tier: Cache) -> None:
    async def slow() -> str:
        await asyncio.sleep(10)
        return "never"

    async def quick() -> str:
        return "waiter computed"

    async def main() -> str:
        leader = asyncio.create_task(two_tier.aget_or_set({"q": 1}, slow))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(two_tier.aget_or_set({"q": 1}, quick))
        await asyncio.sleep(0.05)
        leader.cancel()
        return await asyncio.wait_for(waiter, 5)

    assert asyncio.run(main()) == "waiter computed"


def test_default_cache_lives_under_llmcache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMCACHE_DIR", str(tmp_path))
    cache = Cache.default()
    assert cache is Cache.default()
    assert [t.name for t in cache.tiers] == ["memory", "disk"]
    cache.set({"q": 1}, "v")
    assert (tmp_path / "cache" / "cache.db").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ttl": 0}, "ttl"),
        ({"lock_lease": 0}, "lock_lease"),
        ({"wait_timeout": -1}, "wait_timeout"),
        ({"namespace": "a b"}, "namespace"),
        ({"tenant": ""}, "tenant"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Cache([MemoryTier()], **kwargs)


def test_hand_made_keys_with_bad_names_are_refused(two_tier: Cache) -> None:
    with pytest.raises(ValueError, match="namespace"):
        two_tier.get(CacheKey(namespace="a:b", digest="00"))
    with pytest.raises(ValueError, match="tenant"):
        two_tier.get(CacheKey(namespace="ok", digest="00", tenant="x y"))
    assert two_tier.get(CacheKey(namespace="ok", digest="00")) is None


def test_non_tiers_are_refused() -> None:
    with pytest.raises(TypeError, match=r"tiers\[1\]"):
        Cache([MemoryTier(), {"not": "a tier"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one tier"):
        Cache([])


@pytest.mark.parametrize("ttl", [0, -1, float("nan")])
def test_bad_per_call_ttl_is_refused(two_tier: Cache, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        two_tier.fetch({"q": 1}, lambda: 1, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        two_tier.set({"q": 1}, 1, ttl=ttl)


def test_unopenable_default_directory_falls_back_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LLMCACHE_DIR", str(blocker))
    cache = Cache.default()
    assert [t.name for t in cache.tiers] == ["memory"]
    assert cache.get_or_set({"q": 1}, lambda: "served") == "served"


def test_lease_rechecks_are_not_counted_as_misses(two_tier: Cache) -> None:
    two_tier.get_or_set({"q": 1}, lambda: "v")
    memory, disk = two_tier.stats().tiers
    assert (memory.misses, disk.misses) == (1, 1)  # one lookup, one miss per tier


def test_an_entry_dated_in_the_future_lives_no_longer_than_its_ttl() -> None:
    entry = Entry(body=b"1", created=time.time() + 3600, ttl=10)
    remaining = entry.remaining(time.time())
    assert remaining is not None
    assert remaining <= 10


def test_a_cancelled_leader_hands_over_to_one_waiter(two_tier: Cache) -> None:
    calls = [0]

    async def upstream() -> str:
        calls[0] += 1
        await asyncio.sleep(0.2)
        return "answer"

    async def main() -> list[str]:
        leader = asyncio.create_task(two_tier.aget_or_set({"q": 1}, upstream))
        await asyncio.sleep(0.05)
        waiters = [asyncio.create_task(two_tier.aget_or_set({"q": 1}, upstream)) for _ in range(50)]
        await asyncio.sleep(0.05)
        leader.cancel()
        return await asyncio.gather(*waiters)

    assert asyncio.run(main()) == ["answer"] * 50
    # The cancelled leader's call, then one waiter's: the other 49 share it.
    assert calls[0] == 2
    assert two_tier.stats().coalesced == 49


def test_waiters_in_a_process_outlast_wait_timeout_when_no_other_process_is_involved(
    tmp_path: Path,
) -> None:
    cache = Cache([MemoryTier()], wait_timeout=0.1)  # wait_timeout is about other processes
    calls = [0]
    start = threading.Barrier(20)

    def slow() -> str:
        calls[0] += 1
        time.sleep(0.5)  # upstream latency: five times wait_timeout
        return "once"

    results: list[str] = []

    def caller() -> None:
        start.wait()
        results.append(cache.get_or_set({"q": 1}, slow))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["once"] * 20
    assert calls[0] == 1


def test_a_sync_call_on_the_async_leaders_own_thread_does_not_block_its_loop(
    two_tier: Cache,
) -> None:
    leader_may_finish = asyncio.Event()

    async def upstream() -> str:
        await leader_may_finish.wait()
        return "async"

    async def main() -> tuple[str, bool, str]:
        leader = asyncio.create_task(two_tier.aget_or_set({"q": 1}, upstream))
        await asyncio.sleep(0.05)
        # A sync call made from a coroutine of the same loop: waiting would freeze the loop, so
        # the leader could never finish. It must compute for itself at once instead.
        mine = two_tier.get_or_set({"q": 1}, lambda: "sync")
        leader_still_pending = not leader.done()
        leader_may_finish.set()
        return mine, leader_still_pending, await leader

    assert asyncio.run(main()) == ("sync", True, "async")


def test_stats_counters_stay_exact_under_threads() -> None:
    cache = Cache([MemoryTier()])
    cache.set({"q": 1}, 1)
    cache.get({"q": 1})  # the generation is known: later hits take the lock-free fast path

    def hammer() -> None:
        for _ in range(5_000):
            cache.get({"q": 1})

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert stats.hits == stats.tiers[0].hits == 1 + 16 * 5_000
    assert stats.lookups == 1 + 16 * 5_000


class FailingReadsDisk(DiskTier):
    """A real disk tier whose reads fail (an I/O error on a dying disk)."""

    def get(self, key: str) -> bytes | None:
        raise OSError(5, "Input/output error")


def test_a_disk_first_tier_is_read_once_per_lookup_and_counted_once(
    tmp_path: Path, redis_url: str
) -> None:
    cache = Cache([DiskTier(tmp_path / "d"), RedisTier(redis_url)])
    calls, fn = counting("v")
    assert cache.fetch({"q": 1}, fn).info.hit is False
    got = cache.fetch({"q": 1}, fn)
    assert (got.value, got.info.tier, calls[0]) == ("v", "disk", 1)
    assert cache.get({"q": 2}) is None
    assert cache.fetch({"q": 3}, fn).info.hit is False
    disk, red = cache.stats().tiers
    # One miss per missing lookup in each tier (the leader's re-check after its lease is not one).
    assert (disk.hits, disk.misses, red.hits, red.misses) == (1, 3, 0, 3)
    assert (cache.stats().lookups, calls[0]) == (4, 2)


def test_a_corrupt_entry_in_a_disk_first_tier_is_one_counted_miss(tmp_path: Path) -> None:
    disk = DiskTier(tmp_path / "d")
    cache = Cache([disk])
    cache.set({"q": 1}, "v")
    (tkey,) = [k for k in disk._cache.iterkeys() if ":~gen:" not in k]
    disk._cache.set(tkey, b"\x00garbage")
    assert cache.get({"q": 1}) is None
    assert cache.get({"q": 1}) is None
    (stats,) = cache.stats().tiers
    assert (stats.corrupt, stats.misses, stats.hits) == (1, 1, 0)


def test_a_disk_first_tier_failing_reads_is_a_counted_fault_and_the_next_tier_serves(
    tmp_path: Path, redis_url: str
) -> None:
    Cache([DiskTier(tmp_path / "d"), RedisTier(redis_url)]).set({"q": 1}, "v")
    cache = Cache([FailingReadsDisk(tmp_path / "d"), RedisTier(redis_url)])
    got = cache.fetch({"q": 1}, lambda: "recomputed")
    assert (got.value, got.info.tier) == ("v", "redis")
    disk, red = cache.stats().tiers
    assert (disk.errors, disk.misses, red.hits) == (1, 0, 1)
    assert "Input/output error" in (disk.last_error or "")

    async def go() -> None:
        assert await cache.aget({"q": 1}) == "v"

    asyncio.run(go())
    assert cache.stats().tiers[0].errors == 2


def test_a_dead_redis_first_tier_is_skipped_and_the_disk_serves(tmp_path: Path) -> None:
    Cache([DiskTier(tmp_path / "d")]).set({"q": 1}, "v")
    dead = RedisTier(f"redis://127.0.0.1:{free_port()}/0", failure_threshold=2)
    cache = Cache([dead, DiskTier(tmp_path / "d")])
    for _ in range(20):
        assert cache.get({"q": 1}) == "v"
        assert cache.fetch({"q": 1}, lambda: "recomputed").info.tier == "disk"

    async def go() -> None:
        assert await cache.aget({"q": 1}) == "v"

    asyncio.run(go())
    red, disk = cache.stats().tiers
    assert (red.hits, red.misses, disk.hits) == (0, 0, 41)
    # The breaker opened after two failed attempts: the other lookups skipped the tier.
    assert red.errors <= 3
    assert red.skipped >= 41 - red.errors
