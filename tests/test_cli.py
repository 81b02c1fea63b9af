"""The ``llmcache`` command run for real: a subprocess on a real directory and a real Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from openai import OpenAI

from llmcache import Cache, DiskTier, MemoryTier, RedisTier


def llmcache(
    *args: str, llmcache_dir: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m llmcache ARGS`` with ``LLMCACHE_DIR`` set and no Redis configured."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCACHE_")}
    environ["LLMCACHE_DIR"] = str(llmcache_dir)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "llmcache", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stderr == ""
    return result.stdout


def failed_in_one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def stats_json(*args: str, llmcache_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        ok(llmcache("stats", "--json", *args, llmcache_dir=llmcache_dir))
    )
    return doc


def tier(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in doc["tiers"] if t["name"] == name)
    return found


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return tmp_path / "llmcache"


@pytest.fixture
def app_cache(app_dir: Path) -> Iterator[Cache]:
    """What an application with the embedded default uses: memory + disk under LLMCACHE_DIR.

    ``generation_refresh=0`` so it sees another process's invalidation at its next call.
    """
    cache = Cache([MemoryTier(), DiskTier(app_dir / "cache")], generation_refresh=0)
    yield cache
    cache.close()


def fill(cache: Cache) -> None:
    for ns in ("one", "two"):
        cache.set({"q": 1}, f"{ns}-1", namespace=ns)
    cache.set({"q": 2}, "one-2", namespace="one")


# -- demo -----------------------------------------------------------------------------------------


def test_demo_shows_calls_saved_single_flight_and_disk_hits_the_same_way_every_run(
    app_dir: Path,
) -> None:
    for _ in range(2):
        out = ok(llmcache("demo", llmcache_dir=app_dir))
        assert re.search(r"first call .* ran the function", out), out
        assert re.search(r"second call .* memory hit", out), out
        # 24 questions, 4 distinct: the cache lets each run once; the rest share or hit.
        assert re.search(r"without the cache .* 24 calls ran", out), out
        with_cache = re.search(
            r"with the cache .* 4 calls ran, (\d+) shared .* (\d+) served from memory", out
        )
        assert with_cache, out
        assert int(with_cache[1]) >= 1  # single-flight: round one has four agents on one question
        assert int(with_cache[1]) + int(with_cache[2]) == 20
        restart = re.search(r"the same workload .* 0 calls ran, (\d+) served from disk", out)
        assert restart, out
        assert int(restart[1]) >= 4  # each distinct question comes from disk once memory is empty
        assert re.search(r"^\s+disk\s+\d+\s+0\s+100%$", out, re.MULTILINE), out
    assert (app_dir / "cache" / "cache.db").is_file()


# -- stats ----------------------------------------------------------------------------------------


def test_demo_runs_on_the_embedded_default_even_with_redis_configured(
    app_dir: Path, redis_url: str
) -> None:
    out = ok(llmcache("demo", llmcache_dir=app_dir, env={"LLMCACHE_REDIS_URL": redis_url}))
    assert "memory + disk" in out
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match="llmcache:*")) == []
    finally:
        client.close()


def test_stats_counts_what_an_application_stored_on_disk(app_dir: Path, app_cache: Cache) -> None:
    empty = tier(stats_json(llmcache_dir=app_dir), "disk")
    assert empty["entries"] == 0
    fill(app_cache)

    doc = stats_json(llmcache_dir=app_dir)
    assert [t["name"] for t in doc["tiers"]] == ["memory", "disk"]
    disk = tier(doc, "disk")
    assert disk["entries"] == 3
    assert disk["bytes"] > 0
    assert disk["where"] == str(app_dir / "cache")
    assert disk["error"] is None
    assert tier(doc, "memory")["entries"] is None  # another process's memory is not visible
    assert doc["counters"] == "per-process"

    text = ok(llmcache("stats", llmcache_dir=app_dir))
    assert re.search(rf"disk\s+{re.escape(str(app_dir / 'cache'))}\s+3\s", text), text
    assert "per process" in text


def test_stats_follows_cache_default_and_dir_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMCACHE_DIR", str(tmp_path / "default"))
    cache = Cache.default()
    cache.set("question", "answer")
    cache.close()

    assert tier(stats_json(llmcache_dir=tmp_path / "default"), "disk")["entries"] == 1
    other = tmp_path / "other"
    assert tier(stats_json(llmcache_dir=other), "disk")["entries"] == 0
    doc = stats_json("--dir", str(tmp_path / "default"), llmcache_dir=other)
    assert tier(doc, "disk")["entries"] == 1


def test_stats_with_redis_from_the_flag_or_the_environment(
    app_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    cache = Cache([MemoryTier(), RedisTier(redis_url)])
    cache.set("question", "answer")
    cache.close()

    by_flag = stats_json("--redis-url", redis_url, llmcache_dir=app_dir)
    by_env = json.loads(
        ok(llmcache("stats", "--json", llmcache_dir=app_dir, env={"LLMCACHE_REDIS_URL": redis_url}))
    )
    for doc in (by_flag, by_env):
        assert [t["name"] for t in doc["tiers"]] == ["memory", "disk", "redis"]
        assert tier(doc, "redis")["error"] is None
        assert tier(doc, "redis")["where"] == redis_url
    text = ok(llmcache("stats", "--redis-url", redis_url, llmcache_dir=app_dir))
    assert "redis" in text


def test_stats_reports_an_unreachable_redis_and_exits_2(app_dir: Path) -> None:
    url = f"redis://127.0.0.1:{unused_port()}/0"
    result = llmcache("stats", "--json", "--redis-url", url, llmcache_dir=app_dir)
    line = failed_in_one_line(result)
    assert "redis" in line
    assert "ConnectionError" in line
    assert tier(json.loads(result.stdout), "redis")["error"]


# -- clear ----------------------------------------------------------------------------------------


def test_clear_empties_the_disk_tier(app_dir: Path, app_cache: Cache) -> None:
    fill(app_cache)
    out = ok(llmcache("clear", llmcache_dir=app_dir))
    assert str(app_dir / "cache") in out

    assert tier(stats_json(llmcache_dir=app_dir), "disk")["entries"] == 0
    fresh = Cache([MemoryTier(), DiskTier(app_dir / "cache")])
    assert fresh.get({"q": 1}, namespace="one") is None
    assert fresh.get({"q": 1}, namespace="two") is None
    fresh.close()


def test_clear_reaches_the_memory_of_a_running_process(app_dir: Path, app_cache: Cache) -> None:
    fill(app_cache)
    assert app_cache.get({"q": 1}, namespace="two") == "two-1"  # now in this process's memory
    ok(llmcache("clear", llmcache_dir=app_dir))
    # The clear epoch is shared through the disk tier's counters: memory stops matching too.
    assert app_cache.get({"q": 1}, namespace="two") is None
    assert app_cache.get({"q": 1}, namespace="one") is None


def test_clear_empties_redis_too(app_dir: Path, tmp_path: Path, redis_url: str) -> None:
    # The application shares only Redis with the command (its disk is elsewhere).
    app = Cache([MemoryTier(), DiskTier(tmp_path / "elsewhere"), RedisTier(redis_url)])
    fill(app)
    app.close()
    client = redis.Redis.from_url(redis_url)
    try:
        assert len(client.keys("llmcache:*")) == 3
        client.set("someone-else", b"kept")

        ok(llmcache("clear", "--redis-url", redis_url, llmcache_dir=app_dir))

        # Entries are gone; the generation counters stay (they only move forward).
        assert all(b":~gen:" in key for key in client.keys("llmcache:*"))
        assert client.get("llmcache:v2:~gen:~epoch") == b"1"
        assert client.get("someone-else") == b"kept"  # never FLUSHDB
    finally:
        client.close()
    fresh = Cache([MemoryTier(), RedisTier(redis_url)])
    assert fresh.get({"q": 1}, namespace="one") is None
    fresh.close()


def test_clear_namespace_makes_only_that_namespace_stop_matching(
    app_dir: Path, app_cache: Cache
) -> None:
    fill(app_cache)
    assert app_cache.get({"q": 1}, namespace="one") == "one-1"  # in this process's memory

    out = ok(llmcache("clear", "--namespace", "one", llmcache_dir=app_dir))
    assert "'one' invalidated" in out

    # A running process: even its memory tier stops serving the namespace.
    assert app_cache.get({"q": 1}, namespace="one") is None
    assert app_cache.get({"q": 2}, namespace="one") is None
    assert app_cache.get({"q": 1}, namespace="two") == "two-1"
    # A new process: the same.
    fresh = Cache([MemoryTier(), DiskTier(app_dir / "cache")])
    assert fresh.get({"q": 1}, namespace="one") is None
    assert fresh.fetch({"q": 1}, lambda: "recomputed", namespace="two").info.tier == "disk"
    fresh.close()
    # O(1): nothing was deleted, the old entries just stopped matching.
    assert tier(stats_json(llmcache_dir=app_dir), "disk")["entries"] >= 3


def test_clear_namespace_through_redis_reaches_other_machines(
    app_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    # Another machine: its own memory and disk, only Redis in common with the command.
    app = Cache(
        [MemoryTier(), DiskTier(tmp_path / "elsewhere"), RedisTier(redis_url)],
        generation_refresh=0,
    )
    try:
        fill(app)
        ok(llmcache("clear", "--namespace", "one", "--redis-url", redis_url, llmcache_dir=app_dir))
        assert app.get({"q": 1}, namespace="one") is None
        assert app.get({"q": 1}, namespace="two") == "two-1"
    finally:
        app.close()


@pytest.mark.parametrize("command", [["clear"], ["clear", "--namespace", "one"], ["stats"]])
def test_a_bad_redis_url_is_one_line_and_exit_2(app_dir: Path, command: list[str]) -> None:
    result = llmcache(*command, "--redis-url", "http://127.0.0.1:6379/0", llmcache_dir=app_dir)
    line = failed_in_one_line(result)
    assert "http://127.0.0.1:6379/0" in line
    assert result.stdout == ""


def test_an_unreachable_redis_fails_clear_without_showing_the_password(app_dir: Path) -> None:
    url = f"redis://app:s3cret@127.0.0.1:{unused_port()}/0"
    for command in (["clear"], ["clear", "--namespace", "one"]):
        line = failed_in_one_line(llmcache(*command, "--redis-url", url, llmcache_dir=app_dir))
        assert "cannot be reached" in line
        assert "s3cret" not in line
        assert "redis://app:***@127.0.0.1" in line


@pytest.fixture
def read_only_redis(redis_server: Any, tmp_path: Path) -> Iterator[str]:
    """A redis-server that answers reads but refuses writes (a replica of a master that is gone)."""
    port = unused_port()
    proc = subprocess.Popen(
        [
            redis_server.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--replicaof", "127.0.0.1", str(unused_port()),
            "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "no read-only redis"
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.kill()
        proc.wait()


def test_a_tier_failing_during_clear_is_one_line_and_exit_2(
    app_dir: Path, read_only_redis: str
) -> None:
    # Reads work (so the reachability check passes); the invalidation's INCR is refused.
    command = ["clear", "--namespace", "one", "--redis-url", read_only_redis]
    line = failed_in_one_line(llmcache(*command, llmcache_dir=app_dir))
    assert line.startswith("llmcache clear: the redis tier")
    assert "ReadOnlyError" in line


def test_a_directory_that_cannot_be_created_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for command in (["clear"], ["stats"], ["demo"]):
        line = failed_in_one_line(llmcache(*command, llmcache_dir=blocker / "sub"))
        assert str(blocker / "sub") in line


def test_an_invalid_namespace_is_one_line_and_exit_2(app_dir: Path) -> None:
    line = failed_in_one_line(llmcache("clear", "--namespace", "no spaces", llmcache_dir=app_dir))
    assert "'no spaces'" in line


def test_no_command_prints_usage(app_dir: Path) -> None:
    result = llmcache(llmcache_dir=app_dir)
    assert result.returncode == 2
    assert "usage: llmcache" in result.stderr


# -- report ---------------------------------------------------------------------------------------


def _spend(ledger: Any, user: str | None, model: str, cost: str, *, hit: bool = False) -> None:
    from decimal import Decimal  # noqa: PLC0415

    from accounting import Attribution, CacheOutcome, CallRecord, Cost, TokenUsage  # noqa: PLC0415

    ledger.append(
        CallRecord(
            provider="openai",
            model_requested=model,
            usage=TokenUsage() if hit else TokenUsage(input=100, cached_input=40, output=10),
            cost=Cost() if hit else (None if cost == "unpriced" else Cost(input=Decimal(cost))),
            cache=CacheOutcome.HIT if hit else CacheOutcome.MISS,
            cache_tier="disk" if hit else None,
            saved=Decimal(cost) if hit else None,
            attribution=Attribution(user=user, feature="search"),
        )
    )


def test_report_reads_the_default_ledger(tmp_path: Path) -> None:
    from accounting.ledger import default_ledger  # noqa: PLC0415

    ledger = default_ledger(tmp_path / "ledger.sqlite3")
    _spend(ledger, "ann", "gpt-4o-mini", "0.000150")
    _spend(ledger, "ann", "gpt-4o-mini", "0.000150", hit=True)
    _spend(ledger, "bob", "gpt-4o", "0.0025")
    _spend(ledger, None, "acme-1", "unpriced")
    ledger.close()

    rows = json.loads(
        ok(llmcache("report", "--by", "user,model", "--format", "json", llmcache_dir=tmp_path))
    )
    by_user = {(r["user"], r["model"]): r for r in rows}
    assert by_user["ann", "gpt-4o-mini"]["cost_usd"] == "0.000150"
    assert by_user["ann", "gpt-4o-mini"]["saved_usd"] == "0.000150"
    assert by_user["ann", "gpt-4o-mini"]["hit_rate"] == 0.5
    assert by_user["bob", "gpt-4o"]["cached_input_tokens"] == 40
    assert by_user["unattributed", "acme-1"]["unpriced_calls"] == 1

    table = ok(llmcache("report", "--by", "feature", llmcache_dir=tmp_path))
    assert "search" in table and "+1 unpriced" in table and "TOTAL" in table
    csv_out = ok(llmcache("report", "--format", "csv", llmcache_dir=tmp_path))
    assert csv_out.splitlines()[0].startswith("user,calls,hits")


def test_report_without_a_ledger_and_with_bad_options(tmp_path: Path) -> None:
    empty = llmcache("report", llmcache_dir=tmp_path)
    assert empty.returncode == 0 and empty.stdout == "no calls recorded in this period\n"
    assert "no ledger at" in empty.stderr
    assert not (tmp_path / "ledger.sqlite3").exists()  # reading never creates one

    bad = llmcache("report", "--by", "colour", llmcache_dir=tmp_path)
    assert "unknown dimension 'colour'" in failed_in_one_line(bad)
    bad = llmcache("report", "--since", "last tuesday", llmcache_dir=tmp_path)
    assert "--since" in failed_in_one_line(bad)
    (tmp_path / "not-a-ledger.sqlite3").write_text("hello")
    bad = llmcache(
        "report", "--ledger", str(tmp_path / "not-a-ledger.sqlite3"), llmcache_dir=tmp_path
    )
    assert "not-a-ledger.sqlite3" in failed_in_one_line(bad)


def test_report_reads_a_shared_redis_ledger(tmp_path: Path, redis_url: str) -> None:
    from accounting.ledger import Ledger, RedisStore  # noqa: PLC0415

    ledger = Ledger(RedisStore(redis_url))
    _spend(ledger, "ann", "gpt-4o-mini", "0.5")
    _spend(ledger, "cy", "gpt-4o-mini", "0.25")
    ledger.close()
    rows = json.loads(
        ok(llmcache("report", "--ledger", redis_url, "--format", "json", llmcache_dir=tmp_path))
    )
    assert [(r["user"], r["cost_usd"]) for r in rows] == [("ann", "0.5"), ("cy", "0.25")]


def test_serve_runs_the_local_server_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmcache", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), line
        client = OpenAI(base_url=url, api_key="k", max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)  # also closes the pipes
    assert proc.returncode == 0, err
