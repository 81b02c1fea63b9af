"""Tiers under hostile or unlucky conditions, each against a real server or a real directory.

A probe of the Redis breaker that never reports back, a command the server refuses, a pool with
no free connection, a cluster down when the tier is made, event loops closed without
``asyncio.run``; a planted disk row naming a file outside the cache, another process holding
the disk's write lock; the memory tier's real footprint; secrets in URLs and client options
that would break the tier.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import diskcache.core
import pytest
import redis
import redis.exceptions
from conftest import RedisServer
from test_redis_cluster import Cluster

from llmcache import Cache, DiskTier, MemoryTier, RedisTier, TierUnavailable
from llmcache.codec import CorruptEntry, decode
from llmcache.tiers.redis import redact


def _wait_until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _open_breaker_then_restart(server: RedisServer, tier: RedisTier) -> None:
    """Kill the server, fail until the breaker opens, start the server again (same port)."""
    server.kill()
    while not tier.breaker.is_open:
        with pytest.raises(redis.exceptions.ConnectionError):
            tier.get("llmcache:any")
    server.start()


# -- 1. the breaker cannot be wedged open ---------------------------------------------------------


def test_a_cancelled_probe_does_not_keep_the_breaker_open(own_redis: RedisServer) -> None:
    tier = RedisTier(own_redis.url, cooldown=0.1)
    _open_breaker_then_restart(own_redis, tier)
    admin = own_redis.client()
    # The server is back but answers nothing for a while, so the probe hangs until cancelled
    # (as a caller's own deadline would cancel it).
    admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")

    async def cancel_a_probe() -> None:
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "no probe was let through"
            call = asyncio.ensure_future(tier.aget("llmcache:k"))
            await asyncio.sleep(0.05)
            if not call.done():  # let through, and now waiting on the paused server
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                return
            with pytest.raises(Exception):  # skipped (breaker open), or a probe that failed
                call.result()

    asyncio.run(cancel_a_probe())

    def serves() -> bool:
        # While the server is paused, probes time out and reopen the breaker; once it answers
        # again, the next probe closes it.
        try:
            tier.set("llmcache:after", b"ok", None)
        except (TierUnavailable, redis.exceptions.TimeoutError):
            return False
        return True

    _wait_until(serves, "the breaker to close after the server came back")
    assert not tier.breaker.is_open
    assert admin.get("llmcache:after") == b"ok"
    admin.close()
    tier.close()


@pytest.mark.parametrize("refusal", ["WRONGTYPE", "OOM"])
def test_a_refused_command_is_a_reply_that_closes_the_breaker(
    own_redis: RedisServer, refusal: str
) -> None:
    tier = RedisTier(own_redis.url, cooldown=0.1)
    _open_breaker_then_restart(own_redis, tier)
    admin = own_redis.client()
    if refusal == "WRONGTYPE":
        admin.rpush("llmcache:k", b"someone else's list")
        expected: type[Exception] = CorruptEntry  # how the tier reports WRONGTYPE

        def call() -> object:
            return tier.get("llmcache:k")
    else:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        expected = redis.exceptions.OutOfMemoryError  # a ResponseError

        def call() -> object:
            return tier.set("llmcache:k", b"v", None)

    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline, "no probe was let through"
        try:
            call()
        except TierUnavailable:
            time.sleep(0.01)
            continue
        except expected:
            break
        pytest.fail(f"the server did not refuse the command ({refusal})")
    # The server answered: it is up, whatever it said.
    assert not tier.breaker.is_open
    assert tier.breaker.allow()
    admin.close()
    tier.close()


# -- 2. a full pool is not a dead server ---------------------------------------------------------


def _blocked_clients(server: redis.Redis) -> int:
    return sum(1 for c in server.client_list() if c["cmd"] == "blpop")


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_no_free_pooled_connection_does_not_open_the_breaker(redis_url: str, mode: str) -> None:
    # The pool's only connection is busy (a BLPOP); every other caller waits connect_timeout
    # for it and gets redis-py's "No connection available.": a limit of this process.
    tier = RedisTier(redis_url, max_connections=1, connect_timeout=0.05, socket_timeout=10)
    server = redis.Redis.from_url(redis_url)
    calls = 2 * tier.breaker.threshold
    if mode == "threads":
        holder = threading.Thread(target=lambda: tier._client.blpop(["llmcache:wake"], timeout=5))
        holder.start()
        _wait_until(lambda: _blocked_clients(server) == 1, "the pool's connection to block")
        for _ in range(calls):
            with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
                tier.get("llmcache:k")
        assert not tier.breaker.is_open
        server.rpush("llmcache:wake", b"1")
        holder.join()
        assert tier.get("llmcache:k") is None
    else:

        async def main() -> None:
            client = await tier._aclient()
            holder = asyncio.ensure_future(client.blpop(["llmcache:wake"], timeout=5))
            deadline = time.monotonic() + 10
            while _blocked_clients(server) != 1:
                assert time.monotonic() < deadline, "the pool's connection did not block"
                await asyncio.sleep(0.01)
            for _ in range(calls):
                with pytest.raises(
                    redis.exceptions.ConnectionError, match="No connection available"
                ):
                    await tier.aget("llmcache:k")
            assert not tier.breaker.is_open
            server.rpush("llmcache:wake", b"1")
            await holder
            assert await tier.aget("llmcache:k") is None
            await tier.aclose()

        asyncio.run(main())
    assert not tier.breaker.is_open
    server.close()
    tier.close()


# -- 5. a cluster tier is made without touching the network ------------------------------------


@pytest.mark.slow
def test_a_get_that_times_out_mid_reply_never_hands_its_late_reply_to_the_next(
    redis_url: str,
) -> None:
    # RedisTier.get speaks to a pooled connection directly (the hot path), not through
    # Redis.get: a GET cut off by its timeout must still drop that connection (redis-py's
    # read_response does, and the tier must not undo it), or the late reply would answer the
    # next GET on the one pooled connection.
    tier = RedisTier(redis_url, socket_timeout=0.1, max_connections=1)
    tier.set("a", b"value of a", None)
    tier.set("b", b"value of b", None)
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("CLIENT", "PAUSE", 500, "ALL")
    with pytest.raises(redis.exceptions.TimeoutError):
        tier.get("a")
    _wait_until(admin.ping, "the pause to end")
    assert tier.get("b") == b"value of b"
    assert tier.get("a") == b"value of a"
    admin.close()
    tier.close()


def test_cluster_tier_made_while_the_cluster_is_down(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)  # ports chosen, nothing started yet

    class Counting(RedisTier):
        made = 0

        def _make_client(self) -> Any:
            Counting.made += 1
            return super()._make_client()

    tier = Counting(cluster.url, cluster=True, cooldown=0.1)  # must not raise
    assert Counting.made == 0
    cache = Cache([MemoryTier(), tier])
    cache.set({"q": 1}, "in memory at least")
    assert cache.get({"q": 1}) == "in memory at least"
    stats = next(t for t in cache.stats().tiers if t.name == "redis")
    assert stats.errors >= 1  # counted failures of the tier, not an exception
    with pytest.raises(Exception):
        tier.get("llmcache:k")
    with pytest.raises(Exception):
        tier.get("llmcache:k")
    assert tier.breaker.is_open  # "cannot reach the cluster" is the server being down
    try:
        cluster.start()
        cluster.form(use_cli=True)

        def serves() -> bool:
            try:
                tier.set("llmcache:k", b"v", None)
            except Exception:
                return False
            return True

        _wait_until(serves, "the tier to reach the cluster once it is up", timeout=20)
        # Many threads at first use of a fresh tier: one client is made, shared by all.
        fresh = Counting(cluster.url, cluster=True)
        Counting.made = 0
        start = threading.Barrier(8)
        results: list[bytes | None] = []

        def first_use() -> None:
            start.wait()
            results.append(fresh.get("llmcache:k"))

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [b"v"] * 8
        assert Counting.made == 1
        fresh.close()
        tier.close()
    finally:
        cluster.stop()
    gc.collect()


# -- 7. event loops closed without asyncio.run -------------------------------------------------


def test_loops_closed_without_asyncio_run_do_not_keep_their_clients(redis_url: str) -> None:
    tier = RedisTier(redis_url)
    server = redis.Redis.from_url(redis_url)
    before = {c["id"] for c in server.client_list()}
    # The dropped clients' sockets close when the garbage collector frees them, with the
    # ResourceWarnings asyncio gives for transports of a loop closed with them open.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(10):  # a worker that runs each job on a loop of its own
            loop = asyncio.new_event_loop()
            loop.run_until_complete(tier.aset("llmcache:k", b"v", None))
            loop.close()
        del loop
        assert len(tier._aclients) == 1  # each new loop's client drops the closed loops' ones
        tier.close()  # and close() drops the last
        assert len(tier._aclients) == 0
        gc.collect()
        gc.collect()

        def gone() -> bool:
            return not [c for c in server.client_list() if c["id"] not in before]

        _wait_until(gone, "the closed loops' connections to go", timeout=5)
    server.close()


# -- 8 and 9. URLs and client options ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:p@ssw0rd@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:p@ss@host/0", "redis://:***@host/0"),
        ("rediss://user:pa:ss@host/1", "rediss://user:***@host/1"),
        ("unix://user:s3cret@/tmp/redis.sock?db=2", "unix://user:***@/tmp/redis.sock?db=2"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("user:s3cret@host", "***@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host/0", "redis://user@host/0"),
    ],
)
def test_redact_hides_the_whole_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_rejected_url_never_shows_its_password() -> None:
    with pytest.raises(ValueError) as err:
        RedisTier("redis://user:p@ssw0rd@host/0?socket_timeout=1")
    assert "ssw0rd" not in str(err.value)
    assert "redis://user:***@host/0" in str(err.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("decode_responses", True),
        ("retry", None),
        ("retry_on_error", []),
        ("retry_on_timeout", True),
        ("connection_pool", None),
        ("single_connection_client", True),
    ],
)
def test_client_options_that_would_break_the_tier_are_refused(
    redis_url: str, option: str, value: object
) -> None:
    with pytest.raises(ValueError, match=rf"client_options\['{option}'\]"):
        RedisTier(redis_url, client_options={option: value})


def test_other_client_options_still_reach_redis_py(redis_url: str) -> None:
    tier = RedisTier(redis_url, client_options={"client_name": "hardening"})
    tier.set("llmcache:k", b"bytes stay bytes", None)
    assert tier.get("llmcache:k") == b"bytes stay bytes"
    assert tier._client.client_getname() == "hardening"
    tier.close()


# -- 3. disk rows naming files outside the cache ------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A file of the user's, outside the cache directory, in a directory of its own."""
    folder = tmp_path / "victim" / "cd"
    folder.mkdir(parents=True)
    path = folder / ("0" * 28 + ".val")
    path.write_bytes(b"user data\n")
    yield path
    assert path.read_bytes() == b"user data\n", "the victim file was changed"


def _plant(directory: Path, key: str, filename: str) -> None:
    """Point the row of ``key`` at ``filename``, as a hostile writer of the directory could."""
    with sqlite3.connect(directory / "cache.db") as db:
        db.execute(
            "UPDATE Cache SET mode = ?, filename = ?, value = NULL WHERE key = ?",
            (diskcache.core.MODE_BINARY, filename, key),
        )
    db.close()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "own-database"])
@pytest.mark.parametrize("operation", ["delete", "clear", "cache"])
def test_a_planted_row_never_reads_or_removes_a_file_outside_the_cache(
    tmp_path: Path, victim: Path, kind: str, operation: str
) -> None:
    directory = tmp_path / "cache"
    tier = DiskTier(directory)
    cache = Cache([tier])
    cache.set({"q": 1}, "v")
    [key] = _keys(directory)
    if kind == "absolute":
        filename = str(victim)
    elif kind == "dotdot":
        filename = os.path.relpath(victim, directory)
    elif kind == "symlink":
        (directory / "ab").symlink_to(victim.parent.parent, target_is_directory=True)
        filename = os.path.join("ab", "cd", victim.name)
    else:
        filename = "cache.db"
    _plant(directory, key, filename)

    if operation == "cache":
        reader = Cache([DiskTier(directory)])
        assert reader.get({"q": 1}) is None  # treated as a corrupt entry, then deleted
        assert reader.stats().tiers[0].corrupt == 1
        reader.close()
    else:
        with pytest.raises(CorruptEntry):
            tier.get(key)
        if operation == "delete":
            tier.delete(key)
        else:
            tier.clear()
    assert (directory / "cache.db").exists()
    assert tier.get(key) is None  # the row itself is gone
    cache.set({"q": 2}, "the cache still works")
    assert cache.get({"q": 2}) == "the cache still works"
    cache.close()


def _keys(directory: Path) -> list[str]:
    with sqlite3.connect(directory / "cache.db") as db:
        keys = [row[0] for row in db.execute("SELECT key FROM Cache")]
    db.close()
    return keys


def test_large_values_in_files_of_the_cache_still_round_trip(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path)
    big = os.urandom(200_000)  # past diskcache's file threshold: stored as xx/yy/<hex>.val
    tier.set("big", big, None)
    assert tier.get("big") == big
    assert any(tmp_path.glob("*/*/*.val"))
    tier.delete("big")
    assert not any(tmp_path.glob("*/*/*.val"))
    tier.close()


# -- 4. a disk write waiting for SQLite's lock does not stall the event loop -----------------


def test_a_disk_write_waiting_for_the_lock_leaves_the_event_loop_running(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, timeout=2.0)
    tier.set("warm", b"1", None)
    other = diskcache.Cache(str(tmp_path))  # another process's use of the directory
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with other.transact():
            other.set("theirs", b"x")
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    assert locked.wait(10)

    async def main() -> None:
        write = asyncio.ensure_future(tier.aset("mine", b"v", None))
        await asyncio.sleep(0)  # the write starts, and waits for the lock
        # This line runs while the lock is still held: the loop was not blocked by the write.
        assert not write.done()
        assert await tier.aget("warm") == b"1"  # reads go on meanwhile (WAL)
        release.set()
        await write

    try:
        asyncio.run(main())
    finally:
        release.set()
        holder.join()
    assert tier.get("mine") == b"v"

    async def the_other_writes() -> None:
        assert await tier.aincr("c") == 1
        assert await tier.aacquire("lease", "me", 5.0)
        await tier.arelease("lease", "me")
        await tier.adelete("mine")
        await tier.aclear()

    asyncio.run(the_other_writes())
    assert tier.get("mine") is None
    assert tier.counter("c") == 1
    other.close()
    tier.close()


# -- 6. the memory tier's byte bound is the memory it holds ----------------------------------


def test_memory_tier_holds_no_more_than_max_bytes() -> None:
    tier = MemoryTier(max_bytes=8 * 2**20)
    cache = Cache([tier])
    values = ["x" * 100_000 + str(i) for i in range(200)]  # 20 MB of values for an 8 MiB tier
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i, value in enumerate(values):
            cache.set({"i": i}, value)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    entries, size = tier.usage()
    assert size <= tier.max_bytes
    assert 70 < entries < 90  # ~100 kB each: the tier is full
    assert held < 1.1 * tier.max_bytes, f"{held / 2**20:.1f} MiB held for {size / 2**20:.1f}"


def test_memory_tier_keeps_one_form_of_each_entry() -> None:
    tier = MemoryTier()
    cache = Cache([tier])
    cache.set({"q": 1}, "v" * 1000)
    tkey = next(iter(tier._data))
    raw = tier.get(tkey)  # the envelope, rebuilt from the decoded entry
    assert raw is not None
    entry = tier.get_entry(tkey)
    assert entry is not None
    assert decode(tkey, raw) == entry
    # Plain set() keeps the bytes; the first get_entry() swaps them for the decoded entry.
    tier.set("plain", raw.replace(tkey.encode(), b"plain"), None)
    _, before = tier.usage()
    assert tier.get_entry("plain") == entry
    _, after = tier.usage()
    assert after < before
    assert tier.get("plain") is not None
    assert decode("plain", tier.get("plain") or b"") == entry
