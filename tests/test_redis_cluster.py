"""RedisTier on a real Redis Cluster: three master redis-server processes on free ports.

The cluster is formed with ``redis-cli --cluster create`` when redis-cli is installed, else with
redis-py alone (CLUSTER ADDSLOTSRANGE on each node, CLUSTER MEET, then wait for
``cluster_state:ok`` everywhere); ``test_cluster_formed_with_redis_py_alone`` always exercises
the second way too. Tests never touch any server but these.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
from _cluster import Cluster

from llmcache import Cache, MemoryTier, RedisTier


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-master cluster for this module; formed with redis-cli when it is installed."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        c.form(use_cli=True)
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster_url(cluster: Cluster) -> str:
    """URL of one node of the cluster, every node emptied first."""
    cluster.flush()
    return cluster.url


def _per_node_keys(cluster: Cluster) -> list[int]:
    counts = []
    for node in cluster.nodes():
        with node:
            counts.append(int(node.dbsize()))
    return counts


def _entries_left(cluster: Cluster) -> list[bytes]:
    """llmcache keys on any node, namespace counters aside (clear() keeps those)."""
    left = []
    for node in cluster.nodes():
        with node:
            left += [k for k in node.scan_iter(match="llmcache:*") if b":~gen:" not in k]
    return left


def _key(i: int) -> str:
    return f"llmcache:v1:test:0:-:{i:032x}"


# -- the tier ----------------------------------------------------------------------------------


def test_tier_sync_operations(cluster: Cluster, cluster_url: str) -> None:
    tier = RedisTier(cluster_url, cluster=True)
    keys = [_key(i) for i in range(60)]
    for i, key in enumerate(keys):
        tier.set(key, b"value %d" % i, None if i % 2 else 30.0)
    assert [tier.get(key) for key in keys] == [b"value %d" % i for i in range(60)]
    # The keys really are spread over the three masters.
    assert all(n > 0 for n in _per_node_keys(cluster)), _per_node_keys(cluster)
    assert tier.get(_key(999)) is None

    with redis.cluster.RedisCluster.from_url(cluster_url) as direct:
        assert 0 < direct.pttl(keys[0]) <= 30_000  # TTL set on the server
        assert direct.pttl(keys[1]) == -1
        direct.set("other-app:data", b"not ours")

        tier.delete(keys[0])
        assert tier.get(keys[0]) is None

        assert tier.counter("llmcache:v1:~gen:a") == 0
        assert [tier.incr("llmcache:v1:~gen:a") for _ in range(3)] == [1, 2, 3]
        assert tier.counter("llmcache:v1:~gen:a") == 3

        lock = "llmcache:v1:test:0:-:abc:lock"
        assert tier.acquire(lock, "first", 5.0)
        assert not tier.acquire(lock, "second", 5.0)
        tier.release(lock, "second")  # not the holder: nothing happens
        assert direct.get(lock) == b"first"
        assert 0 < direct.pttl(lock) <= 5000
        tier.release(lock, "first")
        assert direct.get(lock) is None
        assert tier.acquire(lock, "second", 5.0)

        tier.clear()
        assert all(tier.get(key) is None for key in keys)
        assert _entries_left(cluster) == []
        assert tier.counter("llmcache:v1:~gen:a") == 3  # counters only move forward
        # Only llmcache's entries went: another application's data is untouched.
        assert direct.get("other-app:data") == b"not ours"
        assert sum(_per_node_keys(cluster)) == 2
    assert not tier.breaker.is_open
    tier.close()


def test_tier_async_operations(cluster: Cluster, cluster_url: str) -> None:
    tier = RedisTier(cluster_url, cluster=True)
    keys = [_key(i) for i in range(60)]

    async def main() -> None:
        for i, key in enumerate(keys):
            await tier.aset(key, b"async %d" % i, 30.0)
        assert [await tier.aget(key) for key in keys] == [b"async %d" % i for i in range(60)]
        assert all(n > 0 for n in _per_node_keys(cluster))
        await tier.adelete(keys[0])
        assert await tier.aget(keys[0]) is None
        assert await tier.acounter("llmcache:v1:~gen:b") == 0
        assert await tier.aincr("llmcache:v1:~gen:b") == 1
        assert await tier.acounter("llmcache:v1:~gen:b") == 1
        lock = "llmcache:v1:test:0:-:def:lock"
        assert await tier.aacquire(lock, "first", 5.0)
        assert not await tier.aacquire(lock, "second", 5.0)
        await tier.arelease(lock, "second")
        assert not await tier.aacquire(lock, "second", 5.0)
        await tier.arelease(lock, "first")
        assert await tier.aacquire(lock, "second", 5.0)
        await tier.aclear()
        assert _entries_left(cluster) == []
        assert await tier.acounter("llmcache:v1:~gen:b") == 1
        await tier.aclose()

    asyncio.run(main())
    assert not tier.breaker.is_open
    tier.close()
    gc.collect()  # an unclosed cluster connection would fail the test here


# -- the cache on a cluster -----------------------------------------------------------------------


def test_cache_round_trip_and_invalidate_namespace(cluster: Cluster, cluster_url: str) -> None:
    cache = Cache([MemoryTier(), RedisTier(cluster_url, cluster=True)])
    # Another process on the same cluster, reading the namespace generation at every call.
    other = Cache([MemoryTier(), RedisTier(cluster_url, cluster=True)], generation_refresh=0)
    calls: list[str] = []

    def upstream(text: str) -> Any:
        def call() -> str:
            calls.append(text)
            return text

        return call

    prompts = [{"prompt": i} for i in range(20)]
    for i, p in enumerate(prompts):
        fetched = cache.fetch(p, upstream(f"v1-{i}"))
        assert (fetched.info.hit, fetched.info.stored) == (False, True)
    assert all(n > 0 for n in _per_node_keys(cluster))
    for i, p in enumerate(prompts):
        fetched = other.fetch(p, upstream("unexpected"))
        assert (fetched.value, fetched.info.tier) == (f"v1-{i}", "redis")
    cache.set({"kept": "ns"}, "in another namespace", namespace="kept")
    assert len(calls) == 20

    assert cache.invalidate_namespace() == 1
    fetched = other.fetch(prompts[0], upstream("v2-0"))
    assert (fetched.value, fetched.info.hit) == ("v2-0", False)
    fetched = cache.fetch(prompts[1], upstream("v2-1"))
    assert (fetched.value, fetched.info.hit) == ("v2-1", False)
    assert other.get({"kept": "ns"}, namespace="kept") == "in another namespace"

    cache.delete(prompts[1])
    assert other.get(prompts[1]) is None
    stats = [t for c in (cache, other) for t in c.stats().tiers if t.name == "redis"]
    assert [(t.errors, t.skipped, t.corrupt) for t in stats] == [(0, 0, 0), (0, 0, 0)]

    cache.clear()
    assert _entries_left(cluster) == []
    assert other.get({"kept": "ns"}, namespace="kept") is None
    cache.close()
    other.close()


def test_cache_async_round_trip_and_invalidate_namespace(
    cluster: Cluster, cluster_url: str
) -> None:
    async def answer(value: str) -> str:
        return value

    async def main() -> None:
        cache = Cache([MemoryTier(), RedisTier(cluster_url, cluster=True)])
        other = Cache([MemoryTier(), RedisTier(cluster_url, cluster=True)], generation_refresh=0)
        first = await cache.afetch({"prompt": "a"}, lambda: answer("one"))
        assert (first.value, first.info.stored) == ("one", True)
        hit = await other.afetch({"prompt": "a"}, lambda: answer("unexpected"))
        assert (hit.value, hit.info.tier) == ("one", "redis")
        assert await cache.ainvalidate_namespace() == 1
        fresh = await other.afetch({"prompt": "a"}, lambda: answer("two"))
        assert (fresh.value, fresh.info.hit) == ("two", False)
        await cache.aset({"prompt": "b"}, [1, 2])
        assert await other.aget({"prompt": "b"}) == [1, 2]
        await other.adelete({"prompt": "b"})
        assert await other.aget({"prompt": "b"}, "gone") == "gone"
        await cache.aclear()
        assert _entries_left(cluster) == []
        await cache.aclose()
        await other.aclose()
        cache.close()
        other.close()

    asyncio.run(main())
    gc.collect()


def test_single_flight_lock_on_a_cluster(cluster_url: str) -> None:
    cache = Cache([MemoryTier(), RedisTier(cluster_url, cluster=True)])
    calls = 0

    def upstream() -> int:
        nonlocal calls
        calls += 1
        return 42

    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: cache.get_or_set("one key", upstream), range(16)))
    assert values == [42] * 16
    assert calls == 1
    redis_stats = next(t for t in cache.stats().tiers if t.name == "redis")
    assert (redis_stats.errors, redis_stats.skipped) == (0, 0)
    cache.close()


# -- forming the cluster without redis-cli --------------------------------------------------------


@pytest.mark.slow
def test_cluster_formed_with_redis_py_alone(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start()
        c.form(use_cli=False)
        cache = Cache([MemoryTier(), RedisTier(c.url, cluster=True)])
        for i in range(30):
            cache.set({"i": i}, i)
        assert all(n > 0 for n in _per_node_keys(c))
        reader = Cache([MemoryTier(), RedisTier(c.url, cluster=True)])
        assert [reader.get({"i": i}) for i in range(30)] == list(range(30))
        cache.close()
        reader.close()
    finally:
        c.stop()
