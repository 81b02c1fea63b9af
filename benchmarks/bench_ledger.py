"""What the ledger costs the request path: a durable spend record, and batched hit records.

Run::

    python benchmarks/bench_ledger.py            # table
    python benchmarks/bench_ledger.py --json     # the same figures as JSON

For the SQLite store (the embedded default) and the Redis store, through the
:class:`accounting.ledger.Ledger` front, as the request path calls it:

* durable: ``ledger.append(spend_record)`` — the record of a call that spent money, committed
  before the call returns. Timed one call at a time; p50 and p99 in µs.
  Target (SQLite): p50 <= 100 µs.
* batched: ``ledger.append(hit_record)`` — cache hits, written 256 at a time by one
  ``append_many`` — over many calls, plus the final ``flush()``; records per second.
  Target: >= 20,000 records/s.

Beside each durable figure, its floor, timed interleaved with it: the record's JSON
(``encode_record``) and then, for SQLite, a raw ``sqlite3`` INSERT of it in autocommit mode on a
WAL file (``synchronous=NORMAL``); for Redis, a raw redis-py ``XADD`` of it (one round trip).
The ratio is the price of what the ledger adds: its indexed columns, the per-day counters, the
front's lock and bookkeeping. Informational: SQLite with
``synchronous=FULL`` (an fsync per record: survives power loss), and the store alone without
the front.

Also informational, the request path during an outage of the SQLite store (its file locked by
another connection): a spend record's ``append`` while it goes to the spill file, and then a hit
record's ``append`` while the spill (``--replay-records``, 20,000 by default) is written back;
the hits are paced (one every 0.2 ms) so that the replay keeps ahead of them.

Each record is fresh (a new id; building it is not timed): the SQLite store keeps one row per
id, so re-appending one record would measure an ignored insert. Files go to a temporary
directory under ``--dir`` (default: the system's temporary directory; the file system is
printed, since an fsync on tmpfs costs nothing). Unless ``--redis-url`` is given, the program
starts its own ``redis-server`` on a free loopback port with persistence off and stops it at
the end; it never talks to a server on port 6379.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from _bench import FORBIDDEN_PORT, private_redis, redis_port, summary

from accounting import Attribution, CacheOutcome, CallRecord, Cost, TokenUsage
from accounting.ledger import Ledger, RedisStore, SQLiteStore
from accounting.ledger.base import encode_record
from accounting.record import new_record_id

DURABLE_TARGET_US = 100.0  # SQLite, p50
BATCHED_TARGET = 20_000.0  # records/s
BATCH_SIZE = 256
pc = time.perf_counter_ns

USERS = [f"user-{i}" for i in range(20)]
FEATURES = ["chat", "search", "summarize", "classify"]


# -- records ------------------------------------------------------------------------------------

SPEND = CallRecord(
    provider="openai",
    operation="chat",
    model_requested="gpt-4o-mini",
    model_served="gpt-4o-mini-2024-07-18",
    usage=TokenUsage(input=1312, cached_input=1024, output=214),
    cost=Cost(
        input=Decimal("0.0000432"), cached_input=Decimal("0.0000768"), output=Decimal("0.0001284")
    ),
    cache=CacheOutcome.MISS,
    latency=0.84,
    attribution=Attribution(user="user-1", feature="chat", task="answer", tags={"team": "support"}),
)
HIT = dataclasses.replace(
    SPEND,
    usage=TokenUsage(),
    cost=Cost(),
    cache=CacheOutcome.HIT,
    cache_tier="memory",
    saved=Decimal("0.0002484"),
    latency=0.0004,
)


def fresh(template: CallRecord, n: int) -> CallRecord:
    """``template`` with a new id and time, charged to one of a few users and features."""
    return dataclasses.replace(
        template,
        id=new_record_id(),
        time=time.time(),
        attribution=Attribution(
            user=USERS[n % len(USERS)], feature=FEATURES[n % len(FEATURES)], task="answer"
        ),
    )


# -- measuring ----------------------------------------------------------------------------------


Prepare = Callable[[int], Any]
Call = Callable[[Any], Any]


def interleaved(
    fns: dict[str, tuple[Prepare, Call]], seconds: float, warmup: float
) -> dict[str, list[int]]:
    """Time each ``call(prepare(n))`` one call at a time, taking turns, for ``seconds``.

    ``prepare`` makes the call's argument (a fresh record) before the clock starts. The calls
    take turns (their order flips every round), so a slow spell of the machine falls on all of
    them alike.
    """
    names = list(fns)
    pairs = [fns[n] for n in names]
    n = 0
    end = time.monotonic() + warmup
    while time.monotonic() < end:
        for prepare, call in pairs:
            call(prepare(n))
            n += 1
    gc.collect()
    samples: list[list[int]] = [[] for _ in pairs]
    order = list(range(len(pairs)))
    deadline = pc() + int(seconds * 1e9)
    while pc() < deadline:
        for i in order:
            prepare, call = pairs[i]
            arg = prepare(n)
            t0 = pc()
            call(arg)
            samples[i].append(pc() - t0)
            n += 1
        order.reverse()
    return dict(zip(names, samples, strict=True))


def throughput(ledger: Ledger, seconds: float) -> dict[str, Any]:
    """Hit records per second through ``ledger.append`` (batched), the final flush included."""
    chunk = 5000
    total = 0
    spent_ns = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        records = [fresh(HIT, total + i) for i in range(chunk)]  # not timed
        append = ledger.append
        t0 = pc()
        for r in records:
            append(r)
        spent_ns += pc() - t0
        total += chunk
    t0 = pc()
    flushed = ledger.flush()
    spent_ns += pc() - t0
    stats = ledger.stats()
    assert flushed and stats.failed == 0 and stats.pending == 0, stats
    return {
        "records": total,
        "overflowed": stats.overflowed,
        "seconds": round(spent_ns / 1e9, 3),
        "records_per_s": round(total / (spent_ns / 1e9)),
        "per_record_us": round(spent_ns / total / 1000.0, 2),
        "target_records_per_s": BATCHED_TARGET,
        "pass": total / (spent_ns / 1e9) >= BATCHED_TARGET,
    }


# -- SQLite -------------------------------------------------------------------------------------


def bench_sqlite(
    directory: Path, seconds: float, warmup: float, replay_records: int
) -> dict[str, Any]:
    """Durable and batched figures of the SQLite store, with a raw INSERT as the floor."""
    ledger = Ledger(SQLiteStore(directory / "ledger.sqlite3"), batch_size=BATCH_SIZE)
    store_only = SQLiteStore(directory / "store-only.sqlite3")
    raw = sqlite3.connect(directory / "floor.sqlite3", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    raw.execute("CREATE TABLE t (id TEXT NOT NULL UNIQUE, time REAL, record TEXT, sum TEXT)")
    raw.execute("CREATE INDEX t_time ON t (time)")

    def spend(n: int) -> CallRecord:
        return fresh(SPEND, n)

    def floor(record: CallRecord) -> None:
        # The least a durable SQLite record costs: its JSON, then one autocommit INSERT.
        text, checksum = encode_record(record)
        raw.execute(
            "INSERT INTO t (id, time, record, sum) VALUES (?, ?, ?, ?)",
            (record.id, record.time, text, checksum),
        )

    times = interleaved(
        {
            "front": (spend, ledger.append),
            "store": (spend, store_only.append),
            "floor": (spend, floor),
        },
        seconds,
        warmup,
    )
    durable = summary(times["front"])
    floor_s = summary(times["floor"])
    full = Ledger(SQLiteStore(directory / "full.sqlite3", synchronous="FULL"))
    full_times = interleaved({"full": (spend, full.append)}, seconds / 3, 0.1)
    full.close()
    batched = throughput(ledger, seconds)
    ledger.close()
    store_only.close()
    raw.close()
    outage = bench_outage(directory, replay_records)
    return {
        "store": "sqlite",
        "durable": {
            **durable,
            "target_p50_us": DURABLE_TARGET_US,
            "pass": durable["p50_us"] <= DURABLE_TARGET_US,
        },
        "durable_floor": {"what": "record JSON + raw sqlite3 autocommit INSERT (WAL, NORMAL)"}
        | floor_s,
        "durable_ratio_p50": round(durable["p50_us"] / floor_s["p50_us"], 2),
        "store_only": summary(times["store"]),
        "durable_full": summary(full_times["full"]),
        "batched": batched,
        "outage": outage,
    }


def bench_outage(directory: Path, records: int) -> dict[str, Any]:
    """The request path during an outage: spend records to the spill, hits during the replay."""
    path = directory / "outage.sqlite3"
    first = SQLiteStore(path)
    first.append(fresh(SPEND, 0))
    first.close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another connection holds the file's write lock
    ledger = Ledger(
        SQLiteStore(path, busy_timeout=0.01),
        batch_size=BATCH_SIZE,
        spill_dir=directory / "outage-spill",
        retry_interval=0.05,
    )
    spilled: list[int] = []
    for n in range(records):
        record = fresh(SPEND, n)
        t0 = pc()
        ledger.append(record)
        spilled.append(pc() - t0)
    assert ledger.stats().spill_size == records, ledger.stats()
    blocker.execute("COMMIT")
    blocker.close()
    during: list[int] = []
    started = time.monotonic()
    n = 0
    while True:
        stats = ledger.stats()
        if stats.spill_size == 0 and not stats.failing:
            break
        record = fresh(HIT, n)
        t0 = pc()
        ledger.append(record)
        during.append(pc() - t0)
        n += 1
        time.sleep(0.0002)  # pacing, so that the replay keeps ahead of the hits
    replay_s = time.monotonic() - started
    flushed = ledger.flush()
    stats = ledger.stats()
    ledger.close()
    assert flushed and stats.dropped == 0, stats
    return {
        "spend_to_spill": {"what": "spend record appended to the spill file (no fsync)"}
        | summary(spilled[1:]),  # the first one waited busy_timeout for the lock
        "replayed": stats.replayed,
        "replay_seconds": round(replay_s, 3),
        "hit_during_replay": summary(during),
    }


# -- Redis --------------------------------------------------------------------------------------


def bench_redis(url: str, prefix: str, seconds: float, warmup: float) -> dict[str, Any]:
    """Durable and batched figures of the Redis store, with a raw XADD as the floor."""
    store = RedisStore(url, prefix=prefix, maxlen=200_000)
    ledger = Ledger(store, batch_size=BATCH_SIZE)
    raw = redis.Redis.from_url(url)
    floor_stream = prefix + "floor"

    def spend(n: int) -> CallRecord:
        return fresh(SPEND, n)

    def floor(record: CallRecord) -> None:
        # The least a durable Redis record costs: its JSON, then one XADD (one round trip).
        text, checksum = encode_record(record)
        raw.xadd(floor_stream, {"r": text, "h": checksum}, maxlen=200_000, approximate=True)

    times = interleaved({"front": (spend, ledger.append), "floor": (spend, floor)}, seconds, warmup)
    durable = summary(times["front"])
    floor_s = summary(times["floor"])
    batched = throughput(ledger, seconds)
    stats = ledger.stats()
    ledger.close()
    # Leave nothing behind on a server that is not ours.
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)
    client.close()
    raw.close()
    return {
        "store": "redis",
        "durable": durable,
        "durable_floor": {"what": "record JSON + raw redis-py XADD (one round trip)"} | floor_s,
        "durable_ratio_p50": round(durable["p50_us"] / floor_s["p50_us"], 2),
        "batched": batched,
        "failed": stats.failed,
    }


# -- a private redis-server ---------------------------------------------------------------------


def filesystem(path: Path) -> str:
    """The file system type ``path`` is on (from /proc/mounts), or ``unknown``."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                mount, fstype = parts[1], parts[2]
                if str(path).startswith(mount) and len(mount) > len(best):
                    best, kind = mount, fstype
    except OSError:
        pass
    return kind


# -- output -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(report: dict[str, Any]) -> None:
    """The human-readable report."""
    env = report["environment"]
    print(
        f"accounting.ledger · Python {env['python']} · {env['machine']} · {env['cpus']} CPUs · "
        f"SQLite {env['sqlite']} · redis-server {env['redis_server']} · redis-py {env['redis_py']}"
    )
    before, after = env["loadavg_1min"]
    print(
        f"files on {env['filesystem']} ({env['dir']}) · {env['seconds']:g} s per figure · "
        f"load average (1 min) {before:.2f} before, {after:.2f} after"
    )
    print()
    print("durable spend record: Ledger.append(record) returns after the commit (µs per call)")
    head = (
        f"{'store':<7} {'p50':>8} {'p99':>8} {'floor p50':>10} {'floor p99':>10} "
        f"{'ratio':>6} {'target p50':>11}  {'':<4} {'n':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in report["stores"]:
        d, f = r["durable"], r["durable_floor"]
        target = f"<= {d['target_p50_us']:.0f}" if "target_p50_us" in d else "none"
        mark = verdict(d["pass"]) if "pass" in d else ""
        print(
            f"{r['store']:<7} {d['p50_us']:>8.1f} {d['p99_us']:>8.1f} {f['p50_us']:>10.1f} "
            f"{f['p99_us']:>10.1f} {r['durable_ratio_p50']:>5.2f}x {target:>11}  {mark:<4} "
            f"{d['n']:>7}"
        )
    print("floors:")
    for r in report["stores"]:
        print(f"  {r['store']:<7} {r['durable_floor']['what']}")
    sq = next(r for r in report["stores"] if r["store"] == "sqlite")
    so, full = sq["store_only"], sq["durable_full"]
    print(
        f"  sqlite store alone (no front): p50 {so['p50_us']:.1f} µs, p99 {so['p99_us']:.1f} µs; "
        f"synchronous=FULL (fsync per record): p50 {full['p50_us']:.1f} µs, "
        f"p99 {full['p99_us']:.1f} µs"
    )
    print()
    print(f"batched hit records: Ledger.append(hit) x N + flush(), batches of {BATCH_SIZE}")
    head = (
        f"{'store':<7} {'records/s':>10} {'µs/record':>10} {'records':>8} {'overflowed':>10} "
        f"{'target':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in report["stores"]:
        b = r["batched"]
        print(
            f"{r['store']:<7} {b['records_per_s']:>10,} {b['per_record_us']:>10.2f} "
            f"{b['records']:>8} {b['overflowed']:>10} "
            f"{'>= ' + format(int(b['target_records_per_s']), ','):>10}  {verdict(b['pass'])}"
        )
    o = sq["outage"]
    sp, hd = o["spend_to_spill"], o["hit_during_replay"]
    print()
    print("sqlite store locked by another connection (µs per call):")
    print(
        f"  spend record to the spill file: p50 {sp['p50_us']:.1f}, p99 {sp['p99_us']:.1f}, "
        f"max {sp['max_us']:.1f} (n {sp['n']})"
    )
    print(
        f"  hit record while {o['replayed']:,} records are replayed ({o['replay_seconds']:.2f} s): "
        f"p50 {hd['p50_us']:.1f}, p99 {hd['p99_us']:.1f}, max {hd['max_us']:.1f} (n {hd['n']})"
    )


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-call cost of a durable ledger record and batched throughput."
    )
    parser.add_argument(
        "--redis-url",
        help="use this Redis instead of starting a private redis-server (never port 6379); "
        "keys are written under a unique prefix and deleted afterwards",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per figure")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per figure")
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    parser.add_argument(
        "--replay-records",
        type=int,
        default=20_000,
        help="spend records spilled during the outage, then replayed",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.redis_url is not None and redis_port(args.redis_url) == FORBIDDEN_PORT:
        parser.error(f"refusing to use a Redis on port {FORBIDDEN_PORT}; give another URL")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="llmcache-bench-ledger-", dir=args.dir))
    try:
        with contextlib.ExitStack() as stack:
            if args.redis_url is None:
                (work / "redis").mkdir()
                url, server_version = stack.enter_context(private_redis(work / "redis"))
            else:
                url = args.redis_url
                probe = redis.Redis.from_url(url)
                server_version = str(probe.info("server")["redis_version"])
                probe.close()
            prefix = f"llmcache-bench-{uuid.uuid4().hex[:12]}:"
            (work / "sqlite").mkdir()
            gc.collect()
            gc.freeze()
            stores = [
                bench_sqlite(work / "sqlite", args.seconds, args.warmup, args.replay_records),
                bench_redis(url, prefix, args.seconds, args.warmup),
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "command": "python benchmarks/bench_ledger.py" + (" --json" if args.json else ""),
        "environment": {
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "redis_server": server_version,
            "redis_py": redis.__version__,
            "dir": str(work.parent),
            "filesystem": filesystem(work.parent),
            "seconds": args.seconds,
            "warmup": args.warmup,
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "stores": stores,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
