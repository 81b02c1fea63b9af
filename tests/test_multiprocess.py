"""Single-flight across processes that share a Redis tier, lease takeover, errors never cached.

Child processes are started with the "spawn" method and run code from ``tests/_worker.py``;
they count their upstream calls with INCR on the test's private Redis server and report their
results through it. Nothing here is mocked: real processes, a real redis-server, real leases.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _worker
import pytest
import redis

from llmcache import Cache, DiskTier, MemoryTier, RedisTier

SpawnFn = Callable[..., Any]


@pytest.fixture
def spawn() -> Iterator[SpawnFn]:
    """Start child processes with the spawn method; kill any still running at teardown."""
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []

    def start(target: Callable[..., None], *args: Any) -> Any:
        proc = ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        proc.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the test's private server, for counting and inspecting."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def _entry_keys(r: redis.Redis) -> list[bytes]:
    """Keys llmcache wrote (entries, leases, counters), as opposed to the tests' own."""
    return sorted(r.scan_iter(match="llmcache:*"))


# -- one upstream call for 2 processes x 50 callers ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_two_processes_100_callers_one_cold_key_one_upstream_call(
    mode: str, redis_url: str, r: redis.Redis, spawn: SpawnFn
) -> None:
    target = _worker.thread_callers if mode == "threads" else _worker.async_callers
    payload = {"model": "m", "messages": [{"role": "user", "content": f"cold key ({mode})"}]}
    procs = [spawn(target, redis_url, payload, 50, 2) for _ in range(2)]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0, f"worker exited with {proc.exitcode}"

    reports = [json.loads(raw) for raw in r.lrange(_worker.RESULTS, 0, -1)]
    assert len(reports) == 2
    assert [rep["errors"] for rep in reports] == [[], []]
    outcomes = [o for rep in reports for o in rep["outcomes"]]
    assert len(outcomes) == 100

    # Exactly one upstream call in all, counted on the server and by the caches themselves.
    assert int(r.get(_worker.UPSTREAM_CALLS) or 0) == 1
    assert sum(rep["upstream_calls"] for rep in reports) == 1

    values = {json.dumps(o["value"], sort_keys=True) for o in outcomes}
    assert len(values) == 1, f"callers got {len(values)} different values"
    value = outcomes[0]["value"]
    # The callers really overlapped: every one of the 100 began before the one call ended.
    latest_start = max(o["started"] for o in outcomes)
    assert latest_start < value["finished"], "some caller started after the upstream call ended"

    computed_in = next(rep for rep in reports if rep["upstream_calls"] == 1)
    other = next(rep for rep in reports if rep["upstream_calls"] == 0)
    assert value["pid"] == computed_in["pid"]
    # The other process got the value through Redis (its leader read it there; the rest of its
    # callers shared that read).
    assert any(o["tier"] == "redis" for o in other["outcomes"])


# -- lease takeover and waiters that time out ---------------------------------------------------


def _held_lock(r: redis.Redis) -> tuple[bytes, bytes]:
    """Wait for the holder to be inside its upstream call; return (lock key, its token)."""
    _wait_until(lambda: r.get(_worker.HOLDING), 20, "the holder to start its upstream call")
    keys = _entry_keys(r)
    assert len(keys) == 1, f"expected only the holder's lock in Redis, found {keys}"
    token = r.get(keys[0])
    assert token is not None
    return keys[0], token


@pytest.mark.slow
def test_lock_holder_killed_caller_takes_over_after_lease(
    redis_url: str, r: redis.Redis, spawn: SpawnFn
) -> None:
    payload = {"prompt": "the holder of this key dies"}
    holder = spawn(_worker.hold_lock, redis_url, payload, 1.0, None)
    lock_key, holder_token = _held_lock(r)

    holder.kill()
    holder.join(timeout=10)
    assert holder.exitcode is not None and holder.exitcode < 0  # died by the signal
    lease_left = r.pttl(lock_key) / 1000
    assert lease_left > 0, "the dead holder's lease should still be there"

    cache = Cache([MemoryTier(), RedisTier(redis_url)], lock_lease=0.5, wait_timeout=5.0)
    tokens_seen: list[bytes | None] = []

    def upstream() -> str:
        tokens_seen.append(r.get(lock_key))
        return "computed after the takeover"

    t0 = time.monotonic()
    fetched = cache.fetch(payload, upstream)
    elapsed = time.monotonic() - t0

    assert fetched.value == "computed after the takeover"
    assert not fetched.info.hit
    assert len(tokens_seen) == 1
    # It computed under a lease of its own, taken once the dead holder's lease ran out, and
    # not because it gave up waiting (wait_timeout is 5 s).
    assert tokens_seen[0] is not None and tokens_seen[0] != holder_token
    assert elapsed >= lease_left - 0.05
    assert elapsed < 4.0
    assert r.exists(lock_key) == 0, "the lease must be released after the call"
    # The result is stored: the next caller anywhere reads it.
    fresh = Cache([MemoryTier(), RedisTier(redis_url)])
    again = fresh.fetch(payload, lambda: pytest.fail("should be a hit"))
    assert (again.value, again.info.tier) == ("computed after the takeover", "redis")
    cache.close()
    fresh.close()


@pytest.mark.slow
def test_waiter_of_a_slow_live_holder_calls_upstream_after_wait_timeout(
    redis_url: str, r: redis.Redis, spawn: SpawnFn
) -> None:
    payload = {"prompt": "the holder of this key is alive but slow"}
    holder = spawn(_worker.hold_lock, redis_url, payload, 30.0, None)
    lock_key, holder_token = _held_lock(r)

    cache = Cache([MemoryTier(), RedisTier(redis_url)], lock_lease=30.0, wait_timeout=0.5)
    t0 = time.monotonic()
    fetched = cache.fetch(payload, lambda: "computed by the waiter")
    elapsed = time.monotonic() - t0

    assert fetched.value == "computed by the waiter"
    assert 0.5 <= elapsed < 3.0
    assert holder.is_alive()
    # The waiter neither stole nor freed the live holder's lock.
    assert r.get(lock_key) == holder_token
    assert int(r.get(_worker.UPSTREAM_CALLS) or 0) == 1  # the holder's call, still running
    cache.close()


@pytest.mark.slow
def test_callers_of_one_process_outwaited_by_another_process_still_make_one_call(
    redis_url: str, r: redis.Redis, spawn: SpawnFn
) -> None:
    payload = {"prompt": "another process holds this key for a long time"}
    spawn(_worker.hold_lock, redis_url, payload, 30.0, None)
    _held_lock(r)

    cache = Cache([MemoryTier(), RedisTier(redis_url)], lock_lease=30.0, wait_timeout=0.5)
    calls: list[int] = []
    start = threading.Barrier(10)
    results: list[str] = []

    def upstream() -> str:
        calls.append(1)
        return "computed here"

    def caller() -> None:
        start.wait()
        results.append(cache.get_or_set(payload, upstream))

    threads = [threading.Thread(target=caller) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # The local leader gave up on the other process after wait_timeout; its waiters did not
    # give up with it but took its result.
    assert results == ["computed here"] * 10
    assert len(calls) == 1
    cache.close()


def test_waiter_of_a_slow_thread_in_this_process_calls_upstream_after_wait_timeout(
    redis_url: str,
) -> None:
    # In-process waiters wait for wait_timeout + lock_lease (the leader's longest legitimate
    # run); both small here.
    cache = Cache([MemoryTier(), RedisTier(redis_url)], wait_timeout=0.3, lock_lease=0.3)
    release = threading.Event()
    entered = threading.Event()
    holder_result: list[str] = []

    def slow() -> str:
        entered.set()
        release.wait(10)
        return "slow answer"

    holder = threading.Thread(target=lambda: holder_result.append(cache.get_or_set("k", slow)))
    holder.start()
    try:
        assert entered.wait(10)
        t0 = time.monotonic()
        fetched = cache.fetch("k", lambda: "waiter's answer")
        elapsed = time.monotonic() - t0
    finally:
        release.set()
        holder.join(10)
    assert fetched.value == "waiter's answer"
    assert 0.3 <= elapsed < 3.0
    assert holder_result == ["slow answer"]
    assert cache.stats().upstream_calls == 2
    cache.close()


# -- upstream errors are never cached ----------------------------------------------------------


class UpstreamDown(Exception):
    pass


def test_upstream_error_is_not_cached_and_not_stored_in_redis(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    disk = DiskTier(tmp_path / "disk")
    cache = Cache([MemoryTier(), disk, RedisTier(redis_url)])
    calls: list[str] = []

    def failing() -> str:
        calls.append("fail")
        raise UpstreamDown("provider returned 503")

    for _ in range(2):
        with pytest.raises(UpstreamDown, match="503"):
            cache.fetch({"q": 1}, failing)
    assert calls == ["fail", "fail"], "a failed call must not be served from the cache"
    assert _entry_keys(r) == [], "neither the error nor a lease may remain in Redis"
    assert disk.usage()[0] == 0
    assert cache.stats().upstream_errors == 2

    fetched = cache.fetch({"q": 1}, lambda: "ok now")
    assert (fetched.value, fetched.info.hit, fetched.info.stored) == ("ok now", False, True)
    assert r.exists(fetched.info.key) == 1
    hit = cache.fetch({"q": 1}, lambda: pytest.fail("should be a hit"))
    assert (hit.value, hit.info.hit) == ("ok now", True)
    cache.close()


def test_concurrent_callers_share_an_upstream_error_and_the_next_call_retries(
    redis_url: str, r: redis.Redis
) -> None:
    cache = Cache([MemoryTier(), RedisTier(redis_url)])
    calls = 0
    gate = threading.Barrier(10)

    def failing() -> str:
        nonlocal calls
        calls += 1
        time.sleep(0.2)  # slow enough that the others wait on this flight
        raise UpstreamDown("rate limited")

    errors: list[BaseException] = []

    def caller() -> None:
        gate.wait()
        try:
            cache.fetch("shared", failing)
        except UpstreamDown as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 10
    assert calls == 1
    assert _entry_keys(r) == []
    assert cache.fetch("shared", lambda: "recovered").value == "recovered"
    cache.close()


@pytest.mark.slow
def test_holder_whose_upstream_fails_frees_the_lock_at_once(
    redis_url: str, r: redis.Redis, spawn: SpawnFn
) -> None:
    payload = {"prompt": "the holder's upstream call fails"}
    spawn(_worker.hold_lock, redis_url, payload, 30.0, 0.3)
    lock_key, _ = _held_lock(r)

    # The lease is 30 s and so is the wait: only the holder's release lets this caller in early.
    cache = Cache([MemoryTier(), RedisTier(redis_url)], lock_lease=30.0)

    def upstream() -> str:
        r.incr(_worker.UPSTREAM_CALLS)
        return "recomputed"

    t0 = time.monotonic()
    fetched = cache.fetch(payload, upstream)
    elapsed = time.monotonic() - t0

    assert fetched.value == "recomputed"
    assert not fetched.info.hit
    assert elapsed < 5.0
    _wait_until(lambda: r.llen(_worker.RESULTS), 10, "the holder's report")
    report = json.loads(r.lindex(_worker.RESULTS, 0))
    assert report["errors"] == ['RuntimeError("the holder\'s upstream call failed")']
    assert int(r.get(_worker.UPSTREAM_CALLS) or 0) == 2  # the holder's failed call, then ours
    assert r.exists(lock_key) == 0
    stored = Cache([MemoryTier(), RedisTier(redis_url)])
    assert stored.get(payload) == "recomputed"
    stored.close()
    cache.close()
