"""The ledger: pure helpers, one contract for the SQLite and Redis stores, and the Ledger front.

Everything runs for real: SQLite files under ``tmp_path``, the session's private redis-server
(``redis_url``) or one of the test's own that it kills (``own_redis``), and child processes
(``tests/_ledger_worker.py``) that are SIGKILLed while they write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import platformdirs
import pytest
import redis
from conftest import RedisServer

from accounting import (
    Attribution,
    CacheOutcome,
    CallRecord,
    Cost,
    LedgerError,
    Status,
    TokenUsage,
)
from accounting.ledger import (
    DIMENSIONS,
    Ledger,
    LedgerStore,
    LedgerTotals,
    RedisStore,
    SQLiteStore,
    TotalsStore,
    counters,
    default_ledger,
    default_ledger_path,
    totals_of,
)
from accounting.ledger import sqlite as sqlite_store
from accounting.ledger.base import day_bounds, day_of, decode_record, encode_record
from accounting.ledger.spill import FileSpill, orphan_files, read_spill_file
from accounting.ledger.sqlite import DEFAULT_BUSY_TIMEOUT

WORKER = Path(__file__).with_name("_ledger_worker.py")
# Noon UTC on a fixed day, so records a few seconds apart share their day.
DAY = "2025-03-14"
T0 = dt.datetime(2025, 3, 14, 12, tzinfo=dt.UTC).timestamp()


def spend(**fields: Any) -> CallRecord:
    """A priced call that spent money (durable by default)."""
    base: dict[str, Any] = {
        "time": T0,
        "provider": "openai",
        "model_requested": "gpt-4o-mini",
        "model_served": "gpt-4o-mini-2024-07-18",
        "usage": TokenUsage(input=1000, cached_input=200, output=300, reasoning=100),
        "cost": Cost(
            input=Decimal("0.00012"),
            cached_input=Decimal("0.000015"),
            output=Decimal("0.00012"),
            reasoning=Decimal("0.00006"),
        ),
        "cache": CacheOutcome.MISS,
        "latency": 0.8,
        "attribution": Attribution(user="alice", feature="chat", task="answer"),
    }
    base.update(fields)
    return CallRecord(**base)


def hit(**fields: Any) -> CallRecord:
    """A cache hit: nothing spent, the original cost saved (batched by default)."""
    base: dict[str, Any] = {
        "time": T0,
        "provider": "openai",
        "model_requested": "gpt-4o-mini",
        "cache": CacheOutcome.HIT,
        "cache_tier": "memory",
        "cost": Cost(),
        "saved": Decimal("0.000315"),
        "attribution": Attribution(user="bob", feature="chat"),
    }
    base.update(fields)
    return CallRecord(**base)


def variety() -> list[CallRecord]:
    """Records of every kind, a few seconds apart on :data:`DAY`."""
    return [
        spend(time=T0),
        spend(time=T0 + 1, attribution=Attribution(user="alice", tags={"team": "search"})),
        spend(time=T0 + 2, cost=None, model_served=None, model_requested="mystery-model"),
        hit(time=T0 + 3),
        hit(time=T0 + 4, saved=None),
        spend(time=T0 + 5, status=Status.PROVIDER_ERROR, error_type="RateLimitError", cost=Cost()),
        spend(time=T0 + 6, status=Status.REFUSED, usage=TokenUsage(), cost=None),
        spend(
            time=T0 + 7,
            usage=TokenUsage(input=10, output=5, estimated=True),
            cost=Cost(input=Decimal("0.000000000001"), output=Decimal("123456.789012345678")),
            compression_tokens_saved=42,
            attribution=Attribution(user="carol", feature="search", task="rank"),
        ),
    ]


def by_id(records: Iterator[CallRecord] | list[CallRecord]) -> dict[str, CallRecord]:
    return {r.id: r for r in records}


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def ids_in(path: Path) -> set[str]:
    """Record ids in a SQLite ledger file, read by a fresh store."""
    store = SQLiteStore(path)
    try:
        return {r.id for r in store.records()}
    finally:
        store.close()


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(
        1 for r in caplog.records if r.name == "accounting.ledger" and text in r.getMessage()
    )


def ids(records: list[CallRecord]) -> list[str]:
    return [r.id for r in records]


def finishes_within(seconds: float, work: Callable[[], object]) -> bool:
    """Run ``work`` in a thread; whether it returned within ``seconds`` (it may go on after)."""
    done = threading.Event()

    def run() -> None:
        work()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


class GatedStore(SQLiteStore):
    """A real SQLite store whose batch writes stop at a gate while ``armed``.

    Each gated ``append_many`` puts its records on :attr:`entered`, then waits for one
    :meth:`open_once` before it writes: the test sees exactly which write is in progress, and
    decides when it ends. Nothing else differs from :class:`SQLiteStore`.
    """

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(path, **options)
        self.armed = False
        self.entered: queue.Queue[list[CallRecord]] = queue.Queue()
        self._proceed = threading.Semaphore(0)

    def append_many(self, records: Any) -> None:
        if self.armed:
            self.entered.put(list(records))
            if not self._proceed.acquire(timeout=30):
                raise LedgerError("the test never opened the gate", store=self.name)
        super().append_many(records)

    def next_write(self) -> list[CallRecord]:
        """The records of the next gated write, once it is waiting at the gate."""
        return self.entered.get(timeout=10)

    def open_once(self) -> None:
        self._proceed.release()

    def disarm(self) -> None:
        """No more gating; writes waiting at the gate go on."""
        self.armed = False
        for _ in range(100):
            self._proceed.release()


# -- pure helpers -----------------------------------------------------------------------------


def test_counters_of_a_spend_record_are_exact_picos() -> None:
    c = counters(spend())
    assert c == {
        "calls": 1,
        "input_tokens": 1000,
        "cached_input_tokens": 200,
        "output_tokens": 300,
        "reasoning_tokens": 100,
        "input_cost": 120_000_000,
        "cached_input_cost": 15_000_000,
        "output_cost": 120_000_000,
        "reasoning_cost": 60_000_000,
    }


def test_counters_of_hits_refusals_errors_and_unpriced_calls() -> None:
    assert counters(hit()) == {"calls": 1, "hits": 1, "saved": 315_000_000}
    assert counters(hit(saved=None)) == {"calls": 1, "hits": 1, "saved_unpriced": 1}
    refused = counters(spend(status=Status.REFUSED, usage=TokenUsage(), cost=None))
    assert refused == {"calls": 1, "refused": 1}  # not spent: not unpriced either
    assert counters(spend(cost=None))["unpriced"] == 1
    assert counters(spend(status=Status.PROVIDER_ERROR, cost=Cost()))["errors"] == 1
    assert counters(spend(usage=TokenUsage(input=3, estimated=True)))["estimated"] == 1


def test_a_fraction_of_a_pico_is_rounded_in_counters_only() -> None:
    record = spend(cost=Cost(input=Decimal("0.0000000000015")))
    assert counters(record)["input_cost"] == 2  # half-even: 1.5 -> 2
    assert decode_record(*encode_record(record)).cost == record.cost  # the record keeps it


def test_totals_round_trip_through_counters_and_add_exactly() -> None:
    records = variety()
    t = totals_of(records, DAY, by="all")["all"]
    assert LedgerTotals.from_counters(t.to_counters()) == t
    assert t.calls == 8 and t.hits == 2 and t.errors == 1 and t.refused == 1
    assert t.unpriced == 1 and t.saved_unpriced == 1 and t.estimated == 1
    assert t.tokens.estimated
    assert t.cost.total == Decimal("123456.789012345678") + Decimal("0.000000000001") + 2 * (
        Decimal("0.00012") + Decimal("0.000015") + Decimal("0.00012") + Decimal("0.00006")
    )
    assert t.saved == Decimal("0.000315")
    halves = (
        totals_of(records[:4], DAY, by="all")["all"] + totals_of(records[4:], DAY, by="all")["all"]
    )
    assert halves == t


def test_dimensions_name_attribution_model_served_and_unattributed() -> None:
    records = [
        spend(attribution=Attribution()),
        spend(model_served=None, model_requested="asked-for"),
    ]
    assert set(totals_of(records, DAY, by="user")) == {"unattributed", "alice"}
    assert set(totals_of(records, DAY, by="model")) == {"gpt-4o-mini-2024-07-18", "asked-for"}
    assert set(totals_of(records, DAY, by="all")) == {"all"}


def test_days_are_utc() -> None:
    midnight = dt.datetime(2025, 3, 15, tzinfo=dt.UTC).timestamp()
    assert day_of(midnight - 0.001) == "2025-03-14"
    assert day_of(midnight) == "2025-03-15"
    assert day_bounds(dt.date(2025, 3, 15)) == ("2025-03-15", midnight, midnight + 86400)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        day_bounds("14/03/2025")
    with pytest.raises(ValueError, match="datetime"):
        day_bounds(dt.datetime(2025, 3, 14, tzinfo=dt.UTC))


def test_stored_form_is_checked() -> None:
    text, checksum = encode_record(spend())
    assert decode_record(text.encode(), checksum.encode()) == decode_record(text, checksum)
    with pytest.raises(ValueError, match="checksum"):
        decode_record(text.replace("alice", "mallory"), checksum)


# -- one contract, both stores ------------------------------------------------------------------


@dataclasses.dataclass
class Backend:
    store: Any
    corrupt_one: Callable[[], str]  # stores a bad entry; returns the id its log line names


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "ledger.sqlite3"
        store: Any = SQLiteStore(path)

        def corrupt_sqlite() -> str:
            bad = spend(time=T0 + 0.5)
            store.append(bad)
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE calls SET record = '{\"v\": 1, trunc' WHERE id = ?", (bad.id,))
            conn.close()
            return bad.id

        yield Backend(store, corrupt_sqlite)
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisStore(url)
        client = redis.Redis.from_url(url)

        def corrupt_redis() -> str:
            return client.xadd(store.stream, {"r": b"\xff{not json", "h": "0"}).decode()

        yield Backend(store, corrupt_redis)
        client.close()
    store.close()


def test_is_a_ledger_store_with_totals(backend: Backend) -> None:
    assert isinstance(backend.store, LedgerStore)
    assert isinstance(backend.store, TotalsStore)


def test_records_read_back_equal_to_what_was_appended(backend: Backend) -> None:
    records = variety()
    for r in records[:3]:
        backend.store.append(r)
    backend.store.append_many(records[3:])
    assert by_id(backend.store.records()) == by_id(records)


def test_writing_records_again_adds_nothing(backend: Backend) -> None:
    records = variety()
    backend.store.append_many(records)
    late = spend(time=T0 + 8)
    # A replay after a crash, with a record not written yet; and one repeated in a batch.
    backend.store.append_many([records[0], late, records[3], late])
    backend.store.append(records[1])
    everything = [*records, late]
    assert sorted(r.id for r in backend.store.records()) == sorted(ids(everything))
    for by in DIMENSIONS:
        assert backend.store.totals(DAY, by=by) == totals_of(everything, DAY, by=by), by


def test_records_since_until_is_half_open(backend: Backend) -> None:
    records = variety()
    backend.store.append_many(records)
    got = list(backend.store.records(since=T0 + 2, until=T0 + 5))
    assert sorted(r.time for r in got) == [T0 + 2, T0 + 3, T0 + 4]
    assert len(list(backend.store.records(since=T0 + 7))) == 1
    assert len(list(backend.store.records(until=T0 + 1))) == 1
    assert list(backend.store.records(since=T0 + 100)) == []


def test_many_records_page_through(backend: Backend) -> None:
    records = [spend(time=T0 + i / 1000) for i in range(1234)]
    backend.store.append_many(records[:1000])
    for r in records[1000:]:
        backend.store.append(r)
    got = list(backend.store.records())
    assert len(got) == 1234
    assert {r.id for r in got} == {r.id for r in records}


def test_totals_per_dimension_match_the_records(backend: Backend) -> None:
    records = variety()
    other_day = spend(time=T0 + 86400, attribution=Attribution(user="alice"))
    backend.store.append_many([*records, other_day])
    for by in DIMENSIONS:
        assert backend.store.totals(DAY, by=by) == totals_of(records, DAY, by=by), by
    alice = backend.store.totals(dt.date(2025, 3, 14), by="user")["alice"]
    assert (alice.calls, alice.unpriced, alice.errors, alice.refused) == (5, 1, 1, 1)
    assert alice.cost.total == 2 * Decimal("0.000315")  # exact: two priced calls spent
    assert backend.store.totals("2025-03-15", by="user")["alice"].calls == 1
    assert backend.store.totals("2025-03-16", by="user") == {}


def test_totals_refuse_unknown_dimensions_and_days(backend: Backend) -> None:
    with pytest.raises(ValueError, match="by must be one of"):
        backend.store.totals(DAY, by="tenant")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        backend.store.totals("yesterday", by="user")


def test_a_corrupt_entry_is_skipped_counted_and_logged(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    good = variety()
    backend.store.append_many(good)
    bad_id = backend.corrupt_one()
    with caplog.at_level(logging.WARNING, logger="accounting.ledger"):
        got = list(backend.store.records())
    assert by_id(got) == by_id(good)
    assert backend.store.corrupt == 1
    assert warnings_about(caplog, bad_id) == 1


def test_a_closed_store_raises_ledger_error(backend: Backend) -> None:
    backend.store.close()
    backend.store.close()  # idempotent
    with pytest.raises(LedgerError):
        backend.store.append(spend())
    with pytest.raises(LedgerError):
        list(backend.store.records())


# -- SQLite ---------------------------------------------------------------------------------


def test_sqlite_is_wal_and_synchronous_is_an_option(tmp_path: Path) -> None:
    normal = SQLiteStore(tmp_path / "n.sqlite3")
    full = SQLiteStore(tmp_path / "f.sqlite3", synchronous="full")
    normal.append(spend())
    full.append(spend())
    assert normal._conn is not None and full._conn is not None
    assert normal._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert full._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with sqlite3.connect(tmp_path / "n.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    normal.close()
    full.close()
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(tmp_path / "x.sqlite3", synchronous="OFF")


def test_sqlite_construction_touches_no_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "ledger.sqlite3"
    store = SQLiteStore(path)
    assert not path.parent.exists()
    store.append(spend())
    assert path.exists()
    store.close()


def test_sqlite_columns_keep_money_exact_and_ids_unique(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path)
    records = variety()
    store.append_many(records)
    store.append(records[0])  # a replay of the same record keeps one row
    store.append_many(records[:2])
    store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT id, user, feature, task, model, status, cache, cost FROM calls ORDER BY seq"
        ).fetchall()
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert len(rows) == len(records)
    assert version == ("1",)
    last = rows[-1]
    assert last[1:7] == ("carol", "search", "rank", "gpt-4o-mini-2024-07-18", "ok", "miss")
    assert last[7] == "123456.789012345679"  # the exact Decimal total, as text
    assert rows[2][7] is None  # unpriced: NULL, never 0


def test_sqlite_refuses_a_newer_schema_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path)
    store.append(spend())
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(LedgerError, match="schema version 2") as info:
        SQLiteStore(path).append(spend())
    assert str(path) in str(info.value)
    # Through the Ledger the request path goes on, and the log says why.
    with caplog.at_level(logging.WARNING, logger="accounting.ledger"):
        ledger = Ledger(SQLiteStore(path))
        ledger.append(spend())
        assert ledger.stats().spilled == 1
        ledger.close()
    assert warnings_about(caplog, "schema version 2") == 1


def test_sqlite_refuses_a_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    conn.close()
    with pytest.raises(LedgerError, match="not an llmcache ledger"):
        SQLiteStore(path).append(spend())


@pytest.mark.slow
def test_sqlite_several_processes_write_one_new_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "--mode", "spend", "--path", str(path), "--count", "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    printed: set[str] = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        lines = out.splitlines()
        stats = json.loads(lines[-1].removeprefix("stats "))
        assert stats["failed"] == 0 and stats["spilled"] == 0 and stats["written"] == 300
        printed.update(lines[:-1])
    assert len(printed) == 900
    assert ids_in(path) == printed


# -- the Ledger front -------------------------------------------------------------------------


def test_spend_records_are_committed_before_append_returns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(SQLiteStore(path), batch_interval=60)
    records = [spend(), spend(status=Status.PROVIDER_ERROR), hit()]
    ledger.append(records[0])
    ledger.append(records[1])
    ledger.append(records[2], durable=True)  # a hit may be asked for durably too
    assert ids_in(path) == {r.id for r in records}
    s = ledger.stats()
    assert (s.written, s.batched, s.pending, s.failed) == (3, 0, 0, 0)
    ledger.close()


def test_hit_records_are_batched_by_count(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(SQLiteStore(path), batch_size=10, batch_interval=60)
    hits = [hit(time=T0 + i) for i in range(25)]
    for h in hits[:9]:
        ledger.append(h)
    assert ids_in(path) == set()
    assert ledger.stats().pending == 9
    ledger.append(hits[9])  # the tenth fills the batch: written before append returns
    assert ids_in(path) == {h.id for h in hits[:10]}
    for h in hits[10:]:
        ledger.append(h)
    s = ledger.stats()
    assert (s.written, s.batched, s.pending) == (20, 25, 5)
    ledger.close()  # writes the rest
    assert ids_in(path) == {h.id for h in hits}


def test_hit_records_are_batched_by_time(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(SQLiteStore(path), batch_size=1000, batch_interval=0.3)
    h = hit()
    ledger.append(h)
    assert ids_in(path) == set()
    # No further call: the background thread writes it once it is batch_interval old.
    wait_until(lambda: ids_in(path) == {h.id}, "the flusher thread to write the batch")
    assert ledger.stats().pending == 0
    ledger.close()


def test_flush_records_and_totals_go_through_the_front(tmp_path: Path) -> None:
    ledger = Ledger(SQLiteStore(tmp_path / "ledger.sqlite3"), batch_interval=60)
    records = variety()
    for r in records:
        ledger.append(r)
    assert ledger.stats().pending == 3  # two hits and a refusal: nothing spent, batched
    assert by_id(ledger.records()) == by_id(records)  # records() flushes first
    assert ledger.flush() is True
    assert ledger.totals(DAY, by="feature") == totals_of(records, DAY, by="feature")
    ledger.close()
    ledger.close()
    ledger.append(spend())  # after close: counted, never raised
    assert ledger.stats().dropped == 1


def test_many_threads_share_one_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(SQLiteStore(path), batch_size=16, batch_interval=0.05)
    per_thread = 200
    made: list[list[CallRecord]] = [
        [(spend if i % 3 else hit)(time=T0 + t + i / 1000) for i in range(per_thread)]
        for t in range(8)
    ]
    gate = threading.Barrier(len(made))

    def work(records: list[CallRecord]) -> None:
        gate.wait()
        for r in records:
            ledger.append(r)

    threads = [threading.Thread(target=work, args=(records,)) for records in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()
    s = ledger.stats()
    everything = {r.id for records in made for r in records}
    assert ids_in(path) == everything
    assert (s.failed, s.dropped, s.pending, s.spill_size) == (0, 0, 0, 0)
    # Hits that found a full batch waiting for a busy writer went through the spill.
    assert s.written + s.replayed == len(everything)
    assert s.spilled == s.overflowed == s.replayed
    assert s.batched + s.overflowed == sum(1 for records in made for r in records if not r.spent)


def test_hit_appends_never_wait_for_a_replay(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _make_ledger_file(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    store = GatedStore(path, busy_timeout=0.02)
    # retry_interval 60: the replay below is the one this test starts, not the flusher's.
    ledger = Ledger(
        store,
        batch_size=4,
        batch_interval=60,
        spill_dir=tmp_path / "spill",
        retry_interval=60,
        replay_batch=10,
    )
    spent = [spend(time=T0 + i) for i in range(30)]
    for r in spent:
        ledger.append(r)
    assert ledger.stats().spill_size == 30
    blocker.execute("COMMIT")
    blocker.close()
    store.armed = True
    replayed = threading.Event()
    replayer = threading.Thread(target=lambda: replayed.set() if ledger.flush() else None)
    replayer.start()
    try:
        first = store.next_write()  # the replay's first step, held at the gate
        assert ids(first) == ids(spent[: len(first)])
        hits = [hit(time=T0 + 100 + i) for i in range(4)]
        # The fourth hit completes a batch, due now: it must not wait for the replay
        # (before: it waited for the whole replay, here as long as the gate stayed shut).
        assert finishes_within(5, lambda: [ledger.append(h) for h in hits])
        assert ledger.stats().pending == 4
        assert len(first) == 1  # a store that was failing is tried with one record first
        # Between two replay steps the due batch is taken care of: the episode is not over
        # until the spill is empty, so it joins the spill, after the records already there.
        rest = spent[1:] + hits
        steps = [rest[i : i + 10] for i in range(0, len(rest), 10)]
        store.open_once()
        assert ids(store.next_write()) == ids(steps[0])
        s = ledger.stats()
        assert (s.pending, s.spill_size, s.failing) == (0, len(rest), True)
        for expected in steps[1:]:
            store.open_once()
            assert ids(store.next_write()) == ids(expected)
        store.open_once()
        replayer.join(10)
        assert replayed.is_set()
    finally:
        store.disarm()
        replayer.join(10)
    s = ledger.stats()
    assert (s.replayed, s.written, s.pending, s.spill_size, s.failing) == (34, 0, 0, 0, False)
    ledger.close()
    assert ids_in(path) >= set(ids(spent)) | set(ids(hits))


def test_hits_beyond_a_full_batch_go_to_the_spill_not_to_memory(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = GatedStore(path)
    ledger = Ledger(store, batch_size=8, batch_interval=60, spill_dir=tmp_path / "spill")
    first = [hit(time=T0 + i) for i in range(8)]
    more = [hit(time=T0 + 10 + i) for i in range(20)]
    burst = [hit(time=T0 + 100 + i) for i in range(50)]
    store.armed = True
    writer = threading.Thread(target=lambda: [ledger.append(h) for h in first])
    writer.start()  # its eighth append writes the batch, and stays at the gate
    try:
        assert ids(store.next_write()) == ids(first)
        # While that batch is being written, 8 more wait in memory; the rest go to the spill
        # file, the request path waiting for nothing (before: the batch grew without bound,
        # and each due append waited for the write in progress).
        assert finishes_within(5, lambda: [ledger.append(h) for h in more])
        s = ledger.stats()
        assert (s.pending, s.batched, s.overflowed, s.spilled, s.dropped) == (8, 16, 12, 12, 0)

        async def many_at_once() -> None:
            await asyncio.wait_for(asyncio.gather(*(ledger.aappend(h) for h in burst)), 5)

        asyncio.run(many_at_once())
        s = ledger.stats()
        assert (s.pending, s.overflowed, s.spill_size) == (8, 62, 62)
    finally:
        store.disarm()
        writer.join(10)
    assert ledger.flush() is True
    s = ledger.stats()
    assert (s.written + s.replayed, s.dropped, s.failed, s.episodes) == (78, 0, 0, 0)
    ledger.close()
    assert ids_in(path) == set(ids(first + more + burst))


def test_async_faces(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(SQLiteStore(path), batch_interval=60)
    records = [spend(), hit()]

    async def main() -> None:
        await ledger.aappend(records[0])
        assert ids_in(path) == {records[0].id}
        await ledger.aappend(records[1])
        assert await ledger.aflush() is True
        await ledger.aclose()

    asyncio.run(main())
    assert ids_in(path) == {r.id for r in records}


def test_default_ledger_path_and_constructor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMCACHE_DIR", raising=False)
    expected = Path(platformdirs.user_data_dir("llmcache", appauthor=False)) / "ledger.sqlite3"
    assert default_ledger_path() == expected
    monkeypatch.setenv("LLMCACHE_DIR", str(tmp_path / "home"))
    path = tmp_path / "home" / "ledger.sqlite3"
    assert default_ledger_path() == path
    ledger = default_ledger()
    assert ledger.spill_dir == tmp_path / "home" / "ledger.sqlite3-spill"
    assert not path.exists()  # nothing touched until the first record
    ledger.append(spend())
    ledger.close()
    assert path.exists() and len(ids_in(path)) == 1
    assert default_ledger() is not default_ledger()  # no singleton


# -- failures: contained, counted, logged once, replayed ---------------------------------------


def _make_ledger_file(path: Path) -> None:
    store = SQLiteStore(path)
    store.append(spend(time=T0 - 1))
    store.close()


def test_locked_sqlite_spills_to_a_file_and_replays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.sqlite3"
    _make_ledger_file(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file's write lock
    spill = tmp_path / "spill"
    records = [spend(time=T0 + i) for i in range(30)] + [hit(time=T0 + 30 + i) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="accounting.ledger"):
        ledger = Ledger(
            SQLiteStore(path, busy_timeout=0.02),
            batch_size=5,
            spill_dir=spill,
            retry_interval=0.05,
        )
        started = time.monotonic()
        for r in records:
            ledger.append(r)  # never raises
        elapsed = time.monotonic() - started
        s = ledger.stats()
        assert s.failing and s.episodes == 1 and s.spilled == 35 and s.written == 0
        assert s.failed >= 1 and "locked" in (s.last_error or "")
        # Only the first call waited for the lock; the rest went straight to the spill file.
        assert elapsed < 1.0
        assert len(list(spill.glob("spill-*.jsonl"))) == 1
        blocker.execute("COMMIT")
        blocker.close()
        wait_until(lambda: not ledger.stats().failing, "the spill to be replayed")
    s = ledger.stats()
    assert (s.replayed, s.spill_size, s.dropped) == (35, 0, 0)
    assert {r.id for r in records} <= ids_in(path)
    assert warnings_about(caplog, "is failing") == 1  # one per episode, not one per call
    assert warnings_about(caplog, "works again;") == 1
    ledger.close()
    assert list(spill.glob("spill-*")) == []  # an empty spill file is removed


def test_writes_queued_on_a_locked_file_wait_one_busy_timeout_in_all(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _make_ledger_file(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the file's write lock
    busy = 0.25
    store = SQLiteStore(path, busy_timeout=busy)
    ledger = Ledger(store, spill_dir=tmp_path / "spill", retry_interval=60)
    records = [spend(time=T0 + i) for i in range(8)]
    gate = threading.Barrier(len(records) + 2)
    took: list[float] = []
    errors: list[str] = []

    def through_the_ledger(record: CallRecord) -> None:
        gate.wait()
        started = time.monotonic()
        ledger.append(record)
        took.append(time.monotonic() - started)

    def to_the_store_alone() -> None:
        gate.wait()
        started = time.monotonic()
        with pytest.raises(LedgerError) as info:
            store.append(spend())
        took.append(time.monotonic() - started)
        errors.append(str(info.value))

    threads = [threading.Thread(target=through_the_ledger, args=(r,)) for r in records]
    threads += [threading.Thread(target=to_the_store_alone) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each write waits busy_timeout at most, however many queued on the connection before it
    # (before: the k-th queued write waited k timeouts, 0.25 s ... 2.5 s here).
    assert len(took) == 10 and max(took) < 2 * busy, sorted(took)
    assert len(errors) == 2 and all("locked" in e for e in errors), errors
    s = ledger.stats()
    assert (s.spilled, s.written, s.dropped, s.episodes) == (8, 0, 0, 1)
    blocker.execute("COMMIT")
    blocker.close()
    assert ledger.flush() is True  # and nothing is lost
    ledger.close()
    assert set(ids(records)) <= ids_in(path)


def test_sqlite_busy_timeout_defaults_to_half_a_second(tmp_path: Path) -> None:
    assert DEFAULT_BUSY_TIMEOUT == 0.5
    assert SQLiteStore(tmp_path / "l.sqlite3").busy_timeout == DEFAULT_BUSY_TIMEOUT
    ledger = default_ledger(tmp_path / "d.sqlite3")
    assert isinstance(ledger.store, SQLiteStore)
    assert ledger.store.busy_timeout == DEFAULT_BUSY_TIMEOUT
    ledger.close()


def test_unwritable_location_keeps_records_in_memory_then_replays(tmp_path: Path) -> None:
    in_the_way = tmp_path / "data"
    in_the_way.write_text("a file where the ledger's directory should be")
    path = in_the_way / "ledger.sqlite3"
    ledger = Ledger(SQLiteStore(path), retry_interval=0.05)  # no spill_dir: memory
    records = [spend(time=T0 + i) for i in range(10)]
    for r in records:
        ledger.append(r)
    s = ledger.stats()
    assert s.failing and s.spilled == 10 and s.spill_size == 10
    in_the_way.unlink()
    wait_until(lambda: not ledger.stats().failing, "the store to work again")
    assert ids_in(path) == {r.id for r in records}
    ledger.close()


def test_a_full_spill_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    in_the_way = tmp_path / "data"
    in_the_way.write_text("x")
    with caplog.at_level(logging.WARNING, logger="accounting.ledger"):
        ledger = Ledger(SQLiteStore(in_the_way / "l.sqlite3"), spill_limit=3, retry_interval=60)
        for i in range(5):
            ledger.append(spend(time=T0 + i))
    s = ledger.stats()
    assert (s.spilled, s.dropped, s.spill_size) == (3, 2, 3)
    assert warnings_about(caplog, "dropping records") == 1
    ledger.close()
    assert ledger.stats().dropped == 5  # the memory spill is lost at close, and counted


def test_a_spill_file_left_behind_is_adopted_and_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.sqlite3"
    spill = tmp_path / "spill"
    _make_ledger_file(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    first = Ledger(SQLiteStore(path, busy_timeout=0.01), spill_dir=spill, retry_interval=60)
    records = [spend(time=T0 + i) for i in range(20)]
    for r in records:
        first.append(r)
    first.close()  # the store still fails: the spill file stays
    assert first.stats().spill_size == 20 and first.stats().dropped == 0
    [left] = spill.glob("spill-*.jsonl")
    with left.open("ab") as f:
        f.write(b"0000 {torn line\n")  # a write cut short: skipped, not fatal
    blocker.execute("COMMIT")
    blocker.close()
    with caplog.at_level(logging.WARNING, logger="accounting.ledger"):
        second = Ledger(SQLiteStore(path), spill_dir=spill)
        assert second.flush() is True
    assert {r.id for r in records} <= ids_in(path)
    assert second.stats().replayed == 20
    assert not left.exists()
    assert warnings_about(caplog, "corrupt line") == 1
    second.close()


def test_file_spill_takes_back_what_it_holds(tmp_path: Path) -> None:
    spill = FileSpill(tmp_path, limit=5)
    records = [spend(time=T0 + i) for i in range(6)]
    assert [spill.add(r) for r in records] == [True] * 5 + [False]
    assert spill.take(2) == records[:2]
    spill.done()
    assert spill.size == 3
    assert spill.take(10) == records[2:5]
    spill.add(records[5])  # added while a replay is in flight: kept for the next one
    spill.done()
    assert spill.take(10) == [records[5]]
    spill.done()
    assert spill.size == 0
    assert spill.path.read_bytes().splitlines() == [b"#head %020d" % 27]  # emptied to its header
    spill.close()
    assert not spill.path.exists()


def test_a_closed_spill_file_keeps_only_what_was_not_replayed(tmp_path: Path) -> None:
    spill = FileSpill(tmp_path, limit=10)
    records = [spend(time=T0 + i) for i in range(3)]
    for r in records:
        spill.add(r)
    spill.take(1)
    spill.done()  # the first reached the store, then the store failed
    spill.close()  # the file is rewritten without it, so an adopter does not replay it twice
    adopted = [(path, read_spill_file(fd, path)) for path, fd in orphan_files(tmp_path, None)]
    assert adopted == [(spill.path, records[1:])]


def test_a_spill_file_keeps_its_progress_for_whoever_adopts_it(tmp_path: Path) -> None:
    spill = FileSpill(tmp_path, limit=10)
    records = [spend(time=T0 + i) for i in range(5)]
    for r in records:
        spill.add(r)
    spill.take(2)
    spill.done()
    # Were the process killed now (no close()), an adopter would start at the third record
    # (before: at the first, replaying two records the store has already).
    fd = os.open(spill.path, os.O_RDONLY)
    try:
        assert read_spill_file(fd, spill.path) == records[2:]
    finally:
        os.close(fd)
    spill.close()
    # An adopter keeps the file's progress too, so a replay cut short resumes where it was.
    assert [path for path, _ in orphan_files(tmp_path, None)] == [spill.path]
    adopted = FileSpill.adopt(spill.path, os.open(spill.path, os.O_RDWR))
    assert adopted.size == 3
    assert adopted.take(2) == records[2:4]
    assert adopted.done() == 2
    adopted.close()  # cut short: one record left in the file
    fd = os.open(spill.path, os.O_RDONLY)
    try:
        assert read_spill_file(fd, spill.path) == records[4:]
    finally:
        os.close(fd)


@pytest.mark.slow
def test_redis_killed_and_restarted(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(own_redis.url)
    ledger = Ledger(store, batch_size=8, spill_dir=tmp_path / "spill", retry_interval=0.05)
    before = [spend(time=T0 - 10 + i) for i in range(10)]
    for r in before:
        ledger.append(r)
    assert ledger.stats().written == 10
    own_redis.kill()
    during = [spend(time=T0 + i) for i in range(150)] + [hit(time=T0 + 200 + i) for i in range(50)]
    with caplog.at_level(logging.WARNING, logger="accounting.ledger"):
        started = time.monotonic()
        for r in during:
            ledger.append(r)  # never raises
        elapsed = time.monotonic() - started
        s = ledger.stats()
        assert s.failing and s.spilled + s.pending == 200 and s.dropped == 0
        assert elapsed < 2.0  # the dead server is tried once per episode, not per call
        own_redis.start()  # same port, empty (no persistence): what was written before is gone
        wait_until(lambda: not ledger.stats().failing, "the spill to be replayed into Redis")
        assert ledger.flush() is True
    assert warnings_about(caplog, "is failing") == 1
    got = by_id(store.records())
    assert set(got) == {r.id for r in during}
    totals = store.totals(DAY, by="all")["all"]
    assert totals == totals_of(during, DAY, by="all")["all"]
    assert totals.calls == 200 and totals.hits == 50
    ledger.close()


def test_redis_counts_each_record_once_after_adopting_a_half_replayed_spill(
    redis_url: str, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    proc = subprocess.run(
        [
            *(sys.executable, str(WORKER), "--mode", "replay-and-die", "--count", "20"),
            *("--spill-dir", str(spill), "--redis-url", redis_url, "--time", str(T0)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr  # it died in the middle of its replay
    records = []
    for line in proc.stdout.splitlines():
        _, checksum, text = line.split(" ", 2)
        records.append(decode_record(text, checksum))
    assert len(records) == 20
    adopter = RedisStore(redis_url)
    ledger = Ledger(adopter, spill_dir=spill)
    assert ledger.flush() is True  # adopts the dead process's spill file
    ledger.close()
    store = RedisStore(redis_url)
    for by in DIMENSIONS:  # each record counted once
        assert store.totals(DAY, by=by) == totals_of(records, DAY, by=by), by
    assert sorted(r.id for r in store.records()) == sorted(ids(records))
    # The file said where the replay was (the eleventh record), and the 3 records written
    # after that before the kill were recognised by their ids.
    assert (ledger.stats().replayed, adopter.duplicates) == (10, 3)
    assert list(spill.glob("spill-*")) == []
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(store.stream) == 20
    # The ids are remembered dedupe_retention after the last write (the day itself is past).
    ttl = client.pttl(store.seen_key(DAY)) / 1000
    assert store.dedupe_retention - 60 < ttl <= store.dedupe_retention
    assert client.scard(store.seen_key(DAY)) == 20
    client.close()
    store.close()


def test_redis_skips_records_it_has_and_counts_them(redis_url: str) -> None:
    store = RedisStore(redis_url, dedupe_retention=3600)
    records = [spend(time=T0 + i) for i in range(5)]
    store.append_many(records[:3])
    store.append_many(records)  # a batch partly written before: only the new two are added
    store.append(records[4])
    assert store.duplicates == 4
    assert store.totals(DAY, by="all") == totals_of(records, DAY, by="all")
    client = redis.Redis.from_url(redis_url)
    assert 3500 < client.pttl(store.seen_key(DAY)) / 1000 <= 3600
    client.close()
    # Batches past the script's 1,000 ids at a time, partly written before.
    many = [hit(time=T0 + i / 1000) for i in range(2500)]
    store.append_many(many[:1200])
    store.append_many(many)
    assert store.duplicates == 4 + 1200
    assert store.totals(DAY, by="all") == totals_of(records + many, DAY, by="all")
    with pytest.raises(ValueError, match="dedupe_retention"):
        RedisStore(redis_url, dedupe_retention=0)
    store.close()


def test_redis_prefix_maxlen_and_decoded_clients(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client=client, prefix="acct:{ledger}:", maxlen=100)
    records = [spend(time=T0 + i / 100) for i in range(600)]
    for r in records[:100]:
        store.append(r)
    store.append_many(records[100:])
    keys = set(client.scan_iter())
    assert keys and all(k.startswith("acct:{ledger}:") for k in keys)
    length = client.xlen(store.stream)
    assert 100 <= length < 600  # trimmed, approximately
    assert store.totals(DAY, by="user")["alice"].calls == 600  # counters are not trimmed
    got = list(store.records())
    assert len(got) == length and {r.id for r in got} <= {r.id for r in records}
    store.close()
    assert client.ping()  # a client passed in is not closed by the store
    client.close()
    with pytest.raises(ValueError, match="exactly one"):
        RedisStore()


# -- the done-when tests: SIGKILL while writing -----------------------------------------------


def _run_and_kill(args: list[str], kill_after: int) -> tuple[list[str], subprocess.Popen[str]]:
    """Start the worker, SIGKILL it once ``kill_after`` ids were read; every id it printed."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if len(seen) == kill_after:
            proc.kill()
            break
    # Lines the child wrote before it died are still in the pipe: those calls returned too.
    rest = proc.stdout.read().split("\n")
    seen.extend(rest[:-1])  # the last piece is "" or a line cut short by the kill
    proc.wait(timeout=30)
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert len(seen) >= kill_after, f"the worker ended early: {err}"
    assert proc.returncode == -9, err
    return seen, proc


@pytest.mark.slow
def test_sigkill_during_10000_calls_loses_no_spend_record(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    seen, _ = _run_and_kill(
        ["--mode", "spend", "--path", str(path), "--count", "10000"], kill_after=3000
    )
    stored = ids_in(path)
    missing = [i for i in seen if i not in stored]
    assert missing == [], f"{len(missing)} of {len(seen)} returned calls have no record"
    assert len(stored) < 10_000  # it was killed part-way


@pytest.mark.slow
def test_sigkill_loses_at_most_one_batch_of_hit_records(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    seen, _ = _run_and_kill(
        ["--mode", "hit", "--path", str(path), "--count", "10000", "--batch-size", "256"],
        kill_after=3000,
    )
    stored = ids_in(path)
    missing = [i for i in seen if i not in stored]
    assert len(missing) <= 256, f"{len(missing)} hit records lost, more than one batch"
    assert len(seen) - len(missing) >= 3000 - 256


@pytest.mark.slow
def test_sigkill_while_the_ledger_is_locked_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    spill = tmp_path / "spill"
    _make_ledger_file(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        seen, _ = _run_and_kill(
            [
                *("--mode", "spend", "--path", str(path), "--count", "10000"),
                *("--spill-dir", str(spill), "--busy-timeout", "0.01"),
            ],
            kill_after=1000,
        )
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert not set(seen) & ids_in(path)  # all went to the spill file
    ledger = Ledger(SQLiteStore(path), spill_dir=spill)
    assert ledger.flush() is True  # adopts the dead process's spill file
    ledger.close()
    assert set(seen) <= ids_in(path)
    assert list(spill.glob("spill-*")) == []


# -- reports during an outage; bounded Redis keys ---------------------------------------------


@pytest.mark.parametrize("spill_kind", ["file", "memory"])
def test_records_during_an_outage_include_the_spill_each_once(
    tmp_path: Path, spill_kind: str
) -> None:
    path = tmp_path / "ledger.sqlite3"
    before = spend(time=T0 - 1)
    store = SQLiteStore(path)
    store.append(before)
    store.close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file's write lock; reads work
    spill = tmp_path / "spill" if spill_kind == "file" else None
    ledger = Ledger(
        SQLiteStore(path, busy_timeout=0.02), batch_size=2, spill_dir=spill, retry_interval=0.05
    )
    records = [spend(time=T0 + i) for i in range(6)] + [hit(time=T0 + 10 + i) for i in range(3)]
    try:
        for r in records:
            ledger.append(r)
        assert ledger.stats().failing
        got = list(ledger.records())  # flushes the last hit: it goes to the spill too
        assert ids(got) == [before.id, *ids(records)]  # the store's, then the spill's in order
        assert by_id(got) == by_id([before, *records])
        # The money already spent is in the report, to the pico-dollar.
        assert totals_of(got, DAY, by="all") == totals_of([before, *records], DAY, by="all")
        ranged = list(ledger.records(since=T0 + 2, until=T0 + 11))
        assert ids(ranged) == ids(records[2:7])  # half-open on the spilled records too
        s = ledger.stats()
        assert s.failing and s.spill_size == 9 and s.replayed == 0  # nothing taken from it
        if spill is not None:
            assert len(list(spill.glob("spill-*.jsonl"))) == 1
        # The spill is read when records() is called, the store as it is iterated: let the
        # replay run in between, so every spilled record is in both when the store is read.
        pending = ledger.records()
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    wait_until(lambda: not ledger.stats().failing, "the spill to be replayed")
    assert ledger.stats().replayed == 9
    after = list(pending)
    assert sorted(ids(after)) == sorted(ids([before, *records]))  # each once, none twice
    assert ids(list(ledger.records())) == [before.id, *ids(records)]
    ledger.close()


@pytest.mark.parametrize("spill_kind", ["file", "memory"])
def test_totals_during_an_outage_include_the_spill_each_once(
    tmp_path: Path, spill_kind: str
) -> None:
    path = tmp_path / "ledger.sqlite3"
    before = spend(time=T0 - 1)
    store = SQLiteStore(path)
    store.append(before)
    store.close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file's write lock; reads work
    spill = tmp_path / "spill" if spill_kind == "file" else None
    ledger = Ledger(
        SQLiteStore(path, busy_timeout=0.02), batch_size=2, spill_dir=spill, retry_interval=0.05
    )
    records = [spend(time=T0 + i) for i in range(6)] + [hit(time=T0 + 10 + i) for i in range(3)]
    everything = [before, *records]
    try:
        for r in records:
            ledger.append(r)
        assert ledger.stats().failing
        for by in DIMENSIONS:
            assert ledger.totals(DAY, by=by) == totals_of(everything, DAY, by=by), by
        assert ledger.stats().spill_size == 9  # read, not taken
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    wait_until(lambda: not ledger.stats().failing, "the spill to be replayed")
    assert ledger.totals(DAY, by="all") == totals_of(everything, DAY, by="all")
    ledger.close()


def test_totals_count_a_record_once_when_it_is_both_stored_and_spilled(tmp_path: Path) -> None:
    # A write whose reply was lost: the store applied it, the ledger spilled it anyway.
    path = tmp_path / "ledger.sqlite3"
    setup = SQLiteStore(path)
    setup.append(spend(time=T0 - 3 * 86400))  # creates the schema; another day
    setup.close()
    ledger = Ledger(SQLiteStore(path, busy_timeout=0.02), batch_size=1, retry_interval=60)
    record = spend(time=T0)
    first = sqlite3.connect(path, isolation_level=None)
    first.execute("BEGIN IMMEDIATE")
    ledger.append(record)  # the store is locked: spilled
    first.execute(sqlite_store._INSERT, sqlite_store._row(record))
    first.execute("COMMIT")  # ... and stored too
    first.close()
    second = sqlite3.connect(path, isolation_level=None)
    second.execute("BEGIN IMMEDIATE")  # the replay cannot run; reads still work
    try:
        assert ledger.stats().spill_size == 1
        assert ledger.totals(DAY, by="all") == totals_of([record], DAY, by="all")
    finally:
        second.execute("COMMIT")
        second.close()
    assert ledger.totals(DAY, by="all") == totals_of([record], DAY, by="all")
    ledger.close()


def test_records_raise_when_the_store_cannot_be_read_even_with_a_spill(tmp_path: Path) -> None:
    in_the_way = tmp_path / "data"
    in_the_way.write_text("a file where the ledger's directory should be")
    ledger = Ledger(SQLiteStore(in_the_way / "l.sqlite3"), retry_interval=60)
    ledger.append(spend())
    assert ledger.stats().spill_size == 1
    with pytest.raises(LedgerError):
        list(ledger.records())  # a report is told, not handed the spill alone
    ledger.close()


def test_redis_aggregate_hashes_expire_after_their_retention(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(redis_url, aggregate_retention=3600)
    now = time.time()
    today = day_of(now)
    _, _, end = day_bounds(today)
    past = [spend(time=T0), hit(time=T0 + 1)]
    store.append_many([*past, spend(time=now)])  # one batch, two days
    for by in DIMENSIONS:
        # A past day is kept a retention after the write; today a retention after its end.
        assert 3590 < client.pttl(store.totals_key(DAY, by)) / 1000 <= 3600
        left = client.pttl(store.totals_key(today, by)) / 1000
        assert end - now + 3590 < left <= end - now + 3600
    totals_keys = list(client.scan_iter(match=f"{store.prefix}totals:*"))
    assert len(totals_keys) == 2 * len(DIMENSIONS)
    assert all(client.pttl(k) > 0 for k in totals_keys)  # no hash is left without an expiry
    assert store.totals(DAY, by="all") == totals_of(past, DAY, by="all")
    store.close()

    default = RedisStore(redis_url, prefix="default:")
    default.append(spend(time=T0))
    left = client.pttl(default.totals_key(DAY, "user")) / 1000
    assert 400 * 86400 - 60 < left <= 400 * 86400
    default.close()

    forever = RedisStore(redis_url, prefix="forever:", aggregate_retention=None)
    forever.append(spend(time=T0))
    assert all(client.pttl(forever.totals_key(DAY, by)) == -1 for by in DIMENSIONS)
    assert client.pttl(forever.seen_key(DAY)) > 0  # the id sets still expire
    forever.close()
    client.close()
    with pytest.raises(ValueError, match="aggregate_retention"):
        RedisStore(redis_url, aggregate_retention=0)


def test_redis_stream_stays_bounded_with_maxlen(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(redis_url, maxlen=50)
    records = [hit(time=T0 + i / 1000) for i in range(1000)]
    for start in range(0, 1000, 50):
        store.append_many(records[start : start + 50])
        # MAXLEN ~ trims whole stream nodes (100 entries by default): about maxlen, never 1000.
        assert client.xlen(store.stream) <= 50 + 2 * 100
    assert client.xlen(store.stream) >= 50
    assert store.totals(DAY, by="all")["all"].calls == 1000  # counters are not trimmed
    unbounded = RedisStore(redis_url, prefix="unbounded:")
    unbounded.append_many(records)
    assert client.xlen(unbounded.stream) == 1000  # the default keeps every record
    unbounded.close()
    store.close()
    client.close()
