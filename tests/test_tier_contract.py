"""One contract, every tier: memory, disk (real diskcache directory) and Redis (real server)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmcache import Cache, CounterTier, DiskTier, LockTier, MemoryTier, RedisTier, Tier


@pytest.fixture(params=["memory", "disk", "redis"])
def tier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        made: Any = MemoryTier()
    elif request.param == "disk":
        made = DiskTier(tmp_path / "disk")
    else:
        made = RedisTier(request.getfixturevalue("redis_url"))
    yield made
    made.close()


def test_is_a_tier_with_counters(tier: Any) -> None:
    assert isinstance(tier, Tier)
    assert isinstance(tier, CounterTier)


def test_get_set_delete(tier: Any) -> None:
    assert tier.get("k") is None
    tier.set("k", b"\x00value\xff", None)
    assert tier.get("k") == b"\x00value\xff"
    tier.set("k", b"other", None)
    assert tier.get("k") == b"other"
    tier.delete("k")
    assert tier.get("k") is None
    tier.delete("never-there")


def test_large_values_round_trip(tier: Any) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, past diskcache's file threshold
    tier.set("big", big, None)
    assert tier.get("big") == big


def test_ttl_expires_entries(tier: Any) -> None:
    tier.set("short", b"x", 0.05)
    tier.set("long", b"y", 60)
    assert tier.get("long") == b"y"
    deadline = time.monotonic() + 5
    while tier.get("short") is not None:
        assert time.monotonic() < deadline, "entry with a 50 ms TTL still there after 5 s"
        time.sleep(0.01)
    assert tier.get("long") == b"y"


def test_clear_removes_entries_but_keeps_counters(tier: Any) -> None:
    tier.set("llmcache:v1:a:0:-:1", b"1", None)
    tier.set("llmcache:v1:b:0:-:2", b"2", None)
    tier.incr("llmcache:v1:~gen:a")
    tier.clear()
    assert tier.get("llmcache:v1:a:0:-:1") is None
    assert tier.get("llmcache:v1:b:0:-:2") is None
    # A generation that went back to 0 would make invalidated entries match again.
    assert tier.counter("llmcache:v1:~gen:a") == 1


def test_counters(tier: Any) -> None:
    assert tier.counter("c") == 0
    assert tier.incr("c") == 1
    assert tier.incr("c") == 2
    assert tier.counter("c") == 2


def test_async_faces_match_sync(tier: Any) -> None:
    async def go() -> None:
        assert await tier.aget("ak") is None
        await tier.aset("ak", b"v", None)
        assert await tier.aget("ak") == b"v"
        assert tier.get("ak") == b"v"
        await tier.adelete("ak")
        assert await tier.aget("ak") is None
        assert await tier.aincr("ac") == 1
        assert await tier.acounter("ac") == 1
        await tier.aclose()

    asyncio.run(go())


def test_redis_clear_leaves_other_applications_keys(redis_url: str, redis_server: Any) -> None:
    other = redis_server.client()
    other.set("someone-else:key", b"keep me")
    tier = RedisTier(redis_url, prefix="app1:")
    tier.set("llmcache:v1:default:0:-:x", b"1", None)
    assert other.get("app1:llmcache:v1:default:0:-:x") == b"1"
    tier.clear()
    assert other.get("someone-else:key") == b"keep me"
    assert other.get("app1:llmcache:v1:default:0:-:x") is None
    tier.close()
    other.close()


def test_redis_ttl_is_set_on_the_server(redis_url: str, redis_server: Any) -> None:
    tier = RedisTier(redis_url, ttl=30)
    tier.set("k", b"v", 10)
    client = redis_server.client()
    assert 9_000 < client.pttl("k") <= 10_000
    tier.close()
    client.close()


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_lease_lock(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tier: Any = (
        DiskTier(tmp_path) if kind == "disk" else RedisTier(request.getfixturevalue("redis_url"))
    )
    assert isinstance(tier, LockTier)
    assert tier.acquire("L", "me", 5)
    assert not tier.acquire("L", "you", 5)
    tier.release("L", "you")  # not the holder: nothing happens
    assert not tier.acquire("L", "you", 5)
    tier.release("L", "me")
    assert tier.acquire("L", "you", 5)
    # A lease frees itself when its holder vanishes.
    assert tier.acquire("short", "dead-holder", 0.05)
    deadline = time.monotonic() + 5
    while not tier.acquire("short", "next", 5):
        assert time.monotonic() < deadline, "lease did not expire"
        time.sleep(0.01)
    tier.close()


def test_processes_sharing_only_a_disk_directory_share_one_upstream_call(tmp_path: Path) -> None:
    """Threads stand in for processes here: each has its own Cache and memory tier, so only the
    disk directory (and its lease) is shared; the multi-process proof is in test_multiprocess."""
    calls = [0]
    start = threading.Barrier(8)

    def slow() -> str:
        calls[0] += 1
        time.sleep(0.3)  # upstream latency, so that the callers overlap
        return "once"

    results: list[str] = []

    def caller() -> None:
        cache = Cache([MemoryTier(), DiskTier(tmp_path)])
        start.wait()
        results.append(cache.get_or_set({"q": 1}, slow))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["once"] * 8
    assert calls[0] == 1


def test_memory_tier_is_lru_bounded_by_entries_and_bytes() -> None:
    tier = MemoryTier(max_entries=3, max_bytes=10_000)
    for k in "abc":
        tier.set(k, b"1", None)
    assert tier.get("a") == b"1"  # a is now most recently used
    tier.set("d", b"1", None)
    assert tier.get("b") is None
    assert [tier.get(k) for k in "acd"] == [b"1"] * 3
    small = MemoryTier(max_bytes=1_000)
    for i in range(20):
        small.set(f"k{i}", b"x" * 200, None)
    entries, size = small.usage()
    assert size <= 1_000
    assert entries == size // (200 + 2 + 100) or entries < 5
    assert small.get("k19") == b"x" * 200
    small.set("huge", b"x" * 5_000, None)  # bigger than the tier: not kept, nothing evicted
    assert small.get("huge") is None
    assert small.get("k19") == b"x" * 200


@pytest.mark.parametrize("bad", [{"max_entries": 0}, {"max_bytes": 0}, {"ttl": 0}])
def test_memory_tier_rejects_bad_options(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="MemoryTier"):
        MemoryTier(**bad)


def test_redis_options_never_come_from_the_url(redis_url: str) -> None:
    with pytest.raises(ValueError, match="socket_timeout"):
        RedisTier(redis_url + "?socket_timeout=30")
    tier = RedisTier(redis_url + "?db=1", client_options={"client_name": "llmcache-test"})
    tier.set("k", b"v", None)
    assert tier._client.client_getname() == "llmcache-test"
    tier.close()


def test_redis_tier_rejects_bad_urls() -> None:
    with pytest.raises(ValueError, match=r"http://user:\*\*\*@host") as err:
        RedisTier("http://user:secret@host/0")
    assert "secret" not in str(err.value)
    with pytest.raises(ValueError, match="cluster"):
        RedisTier("unix:///tmp/redis.sock", cluster=True)


def test_disk_tier_refuses_pickle_both_ways(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path)
    with pytest.raises(TypeError):
        tier._cache.set("k", {"a": 1})  # diskcache would pickle a dict
    with pytest.raises(TypeError):
        tier._cache.set(("tuple", "key"), b"v")
    tier.close()
