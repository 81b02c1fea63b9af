"""A child process of the cross-process budget tests: threads spending against one budget.

Run as a script (``python tests/_budget_worker.py '<json>'``), never forked. It prints
``ready``, waits until the parent creates the ``go`` file (so every process starts spending
together), then each thread makes ``calls`` calls: reserve a random worst case between $0.005
and $0.03 (seeded), then release it (one call in five "fails") or settle an actual cost between
50% and 100% of it. Every outcome is one JSON line on stdout; amounts are strings (exact).
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from accounting import Attribution, BudgetExceeded
from accounting.budgets import (
    BudgetLimit,
    Budgets,
    BudgetStore,
    RedisBudgetStore,
    SQLiteBudgetStore,
)


def _store(kind: str, where: str) -> BudgetStore:
    if kind == "redis":
        # Generous timeouts: this test is about atomicity under contention, on a busy machine.
        return RedisBudgetStore(where, socket_timeout=10.0, connect_timeout=10.0)
    return SQLiteBudgetStore(where, timeout=30.0)


def main(options: dict[str, Any]) -> None:
    """Spend from ``options["threads"]`` threads; print one JSON line per outcome."""
    now = datetime.fromisoformat(options["now"])
    user = Attribution(user=options["user"])
    budgets = Budgets(
        store=_store(options["store"], options["where"]),
        limits=[BudgetLimit(scope="user", period="day", usd=Decimal(options["limit"]))],
        # A store error must surface, not let a call through unchecked: that would void the
        # guarantee this test checks. The test asserts there were none.
        on_store_error="refuse",
    )
    out_lock = threading.Lock()

    def emit(line: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(line) + "\n")

    def spend(thread: int) -> None:
        rng = random.Random(f"{options['seed']}:{options['proc']}:{thread}")
        for _ in range(options["calls"]):
            amount = Decimal(rng.randint(5_000, 30_000)).scaleb(-6)  # $0.005 .. $0.03
            fails = rng.random() < 0.2
            fraction = Decimal(rng.randint(50, 100)).scaleb(-2)
            try:
                reservation = budgets.reserve(user, amount, now=now)
            except BudgetExceeded as exc:
                emit(
                    {
                        "kind": "refused",
                        "spent": str(exc.spent),
                        "requested": str(exc.requested),
                        "limit": str(exc.limit),
                    }
                )
                continue
            except Exception as exc:
                emit({"kind": "error", "error": repr(exc)})
                continue
            if fails:
                budgets.release(reservation, now=now)
                emit({"kind": "released", "amount": str(amount)})
            else:
                actual = amount * fraction
                budgets.settle(reservation, actual, now=now)
                emit({"kind": "settled", "amount": str(amount), "actual": str(actual)})

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(options["threads"])]
    print("ready", flush=True)
    go = Path(options["go"])
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the parent never said go")
        time.sleep(0.001)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = budgets.stats()
    emit({"kind": "stats", "store_errors": stats.store_errors, "unchecked": stats.unchecked})
    budgets.close()
    sys.stdout.flush()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
