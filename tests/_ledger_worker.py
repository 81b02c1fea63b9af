"""A child process for the ledger tests: appends records, printing each id once ``append`` returns.

Not collected by pytest (no ``test_`` prefix). Run as a script::

    python tests/_ledger_worker.py --mode spend --path ledger.sqlite3 --count 10000

A printed id is a call that "returned to its caller": the test SIGKILLs this process at some
point and then checks the ledger for every id it read. ``--mode spend`` appends records of money
spent (durable), ``--mode hit`` cache hits (batched). At the end (when not killed) the ledger's
stats are printed as one JSON line starting with ``stats ``.

``--mode replay-and-die`` is a process that dies while replaying its spill into Redis: it
spills ``--count`` records (spend and hit, at ``--time``) to a spill file in ``--spill-dir``,
printing each as ``record <checksum> <json>``, writes the first half to the Redis store at
``--redis-url`` as a replay does, then one more batch of 3 whose replay is not marked done,
and SIGKILLs itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path

from accounting import Attribution, CacheOutcome, CallRecord, Cost, TokenUsage
from accounting.ledger import Ledger, RedisStore, SQLiteStore
from accounting.ledger.base import encode_record
from accounting.ledger.spill import FileSpill


def make(mode: str, i: int, when: float | None = None) -> CallRecord:
    """The ``i``-th record a worker appends: a priced spend, or a hit that saved money."""
    who = Attribution(user=f"user-{i % 7}", feature="worker", task=mode)
    at = time.time() if when is None else when
    if mode == "hit":
        return CallRecord(
            time=at,
            provider="openai",
            model_requested="gpt-4o-mini",
            cache=CacheOutcome.HIT,
            cache_tier="memory",
            cost=Cost(),
            saved=Decimal("0.000165"),
            attribution=who,
        )
    return CallRecord(
        time=at,
        provider="openai",
        model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini-2024-07-18",
        usage=TokenUsage(input=300, output=200),
        cost=Cost(input=Decimal("0.000045"), output=Decimal("0.00012")),
        cache=CacheOutcome.MISS,
        attribution=who,
    )


def replay_and_die(spill_dir: str, redis_url: str, count: int, when: float) -> None:
    """Spill ``count`` records, replay half of them and one batch more, then SIGKILL itself."""
    store = RedisStore(redis_url)
    spill = FileSpill(Path(spill_dir), limit=count)
    out = sys.stdout
    for i in range(count):
        record = make("hit" if i % 3 == 0 else "spend", i, when + i)
        spill.add(record)
        text, checksum = encode_record(record)
        out.write(f"record {checksum} {text}\n")
    out.flush()
    store.append_many(spill.take(count // 2))
    spill.done()
    store.append_many(spill.take(3))  # written; the process dies before done() records it
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["spend", "hit", "replay-and-die"], required=True)
    parser.add_argument("--path")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--spill-dir", default=None)
    parser.add_argument("--busy-timeout", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--redis-url")
    parser.add_argument("--time", type=float, default=None)
    args = parser.parse_args()
    if args.mode == "replay-and-die":
        replay_and_die(args.spill_dir, args.redis_url, args.count, args.time)
        return 1  # not reached
    if args.path is None:
        parser.error("--path is needed")

    store = SQLiteStore(args.path, busy_timeout=args.busy_timeout)
    ledger = Ledger(store, batch_size=args.batch_size, spill_dir=args.spill_dir)
    out = sys.stdout
    for i in range(args.count):
        record = make(args.mode, i)
        ledger.append(record)
        # The call has returned to its caller: say so, and make sure the parent can see it.
        out.write(record.id + "\n")
        out.flush()
    ledger.close()
    out.write("stats " + json.dumps(dataclasses.asdict(ledger.stats())) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
