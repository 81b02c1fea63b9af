"""A child process for the ledger tests: appends records, printing each id once ``append`` returns.

Not collected by pytest (no ``test_`` prefix). Run as a script::

    python tests/_ledger_worker.py --mode spend --path ledger.sqlite3 --count 10000

A printed id is a call that "returned to its caller": the test SIGKILLs this process at some
point and then checks the ledger for every id it read. ``--mode spend`` appends records of money
spent (durable), ``--mode hit`` cache hits (batched). At the end (when not killed) the ledger's
stats are printed as one JSON line starting with ``stats ``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from decimal import Decimal

from accounting import Attribution, CacheOutcome, CallRecord, Cost, TokenUsage
from accounting.ledger import Ledger, SQLiteStore


def make(mode: str, i: int) -> CallRecord:
    """The ``i``-th record a worker appends: a priced spend, or a hit that saved money."""
    who = Attribution(user=f"user-{i % 7}", feature="worker", task=mode)
    if mode == "hit":
        return CallRecord(
            provider="openai",
            model_requested="gpt-4o-mini",
            cache=CacheOutcome.HIT,
            cache_tier="memory",
            cost=Cost(),
            saved=Decimal("0.000165"),
            attribution=who,
        )
    return CallRecord(
        provider="openai",
        model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini-2024-07-18",
        usage=TokenUsage(input=300, output=200),
        cost=Cost(input=Decimal("0.000045"), output=Decimal("0.00012")),
        cache=CacheOutcome.MISS,
        attribution=who,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["spend", "hit"], required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--spill-dir", default=None)
    parser.add_argument("--busy-timeout", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

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
