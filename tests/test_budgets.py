"""Budgets: the pure decision core, configuration, both stores (one contract), failures, load.

Real components only: SQLite files under ``tmp_path``, the session's private redis-server
(``redis_url``), a redis-server of the test's own that is killed or stopped (``own_redis``),
and child processes started with ``subprocess`` (never forked) running
``tests/_budget_worker.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer, free_port

from accounting import Attribution, BudgetExceeded, ConfigError, attribute
from accounting.budgets import (
    BudgetConfig,
    BudgetLimit,
    Budgets,
    BudgetStore,
    BudgetStoreError,
    RedisBudgetStore,
    Reservation,
    SQLiteBudgetStore,
    ThresholdCrossed,
    load_budget_config,
    worst_case_cost,
)
from accounting.budgets.core import (
    LimitTable,
    ceil_picos,
    counter_key,
    crossed,
    first_refusal,
    fits,
    period_end,
    period_key,
    utc,
)
from accounting.budgets.deferred import DRAIN_BATCH, Deferred, PendingSettle
from accounting.budgets.limits import MAX_LIMIT
from accounting.money import PICO

D = Decimal
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ALICE = Attribution(user="alice")
BOB = Attribution(user="bob")
WORKER = Path(__file__).with_name("_budget_worker.py")


def user_day(usd: str, name: str | None = None) -> BudgetLimit:
    return BudgetLimit(scope="user", name=name, period="day", usd=D(usd))


def glob(period: str, usd: str) -> BudgetLimit:
    return BudgetLimit(scope="global", period=period, usd=D(usd))  # type: ignore[arg-type]


# -- the pure core ------------------------------------------------------------------------------


def test_period_keys_are_utc_calendar_periods() -> None:
    assert period_key("day", NOW) == "day:2026-11-23"
    assert period_key("month", NOW) == "month:2026-11"
    assert period_key("total", NOW) == "total"
    # 20:30 in New York on the 23rd is 01:30 UTC on the 24th: the UTC day counts.
    evening = datetime(2026, 11, 23, 20, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert period_key("day", evening) == "day:2026-11-24"
    assert period_end("day", NOW) == datetime(2026, 11, 24, tzinfo=UTC)
    assert period_end("month", datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert period_end("total", NOW) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        period_key("day", datetime(2026, 11, 23, 12, 0))
    assert utc(None).tzinfo is UTC


def test_counter_keys_escape_names() -> None:
    assert counter_key("user", "alice", "day:2026-11-23") == "user:alice:day:2026-11-23"
    assert counter_key("global", None, "total") == "global:total"
    # A name holding the separator cannot collide with another subject's key.
    assert counter_key("user", "a:day", "total") == "user:a%3Aday:total"
    assert counter_key("user", "a b/ü", "total") == "user:a%20b%2F%C3%BC:total"


def test_applicable_limits_generic_named_and_missing_dimensions() -> None:
    table = LimitTable(
        [
            user_day("1"),  # each user
            user_day("5", "alice"),  # alice's day limit overrides the generic one
            BudgetLimit(scope="user", period="month", usd=D("20")),  # still applies to alice
            BudgetLimit(scope="feature", name="search", period="total", usd=D("100")),
            glob("month", "1000"),
        ]
    )

    def shape(attribution: Attribution) -> list[tuple[str, str | None, str, Decimal]]:
        return [
            (a.limit.scope, a.name, a.limit.period, a.limit.usd)
            for a in table.applicable(attribution, NOW)
        ]

    assert shape(ALICE) == [
        ("user", "alice", "day", D("5")),
        ("user", "alice", "month", D("20")),
        ("global", None, "month", D("1000")),
    ]
    assert shape(BOB) == [
        ("user", "bob", "day", D("1")),
        ("user", "bob", "month", D("20")),
        ("global", None, "month", D("1000")),
    ]
    # No user: not subject to per-user limits; global ones still apply.
    assert shape(Attribution(feature="search")) == [
        ("feature", "search", "total", D("100")),
        ("global", None, "month", D("1000")),
    ]
    assert shape(Attribution(feature="chat")) == [("global", None, "month", D("1000"))]
    keys = [a.key for a in table.applicable(BOB, NOW)]
    assert keys == ["user:bob:day:2026-11-23", "user:bob:month:2026-11", "global:month:2026-11"]
    assert LimitTable([]).applicable(ALICE, NOW) == ()


def test_fits_at_the_limit_and_not_one_pico_more() -> None:
    assert fits(limit=100, settled=60, reserved=30, amount=10)
    assert not fits(limit=100, settled=60, reserved=30, amount=11)
    assert fits(limit=D("1"), settled=D("0.5"), reserved=D("0.25"), amount=D("0.25"))
    assert not fits(limit=D("1"), settled=D("0.5"), reserved=D("0.25"), amount=D("0.25") + PICO)
    assert first_refusal([(0, 0), (90, 5), (99, 0)], [100, 100, 100], 5) == 2
    assert first_refusal([(0, 0), (90, 6)], [100, 100], 5) == 1
    assert first_refusal([(0, 0)], [100], 100) is None


def test_thresholds_crossed() -> None:
    thresholds = (D("0.5"), D("0.8"), D("1"))
    assert crossed(D("10"), D("4.99"), thresholds) == []
    assert crossed(D("10"), D("5"), thresholds) == [D("0.5")]
    assert crossed(D("10"), D("12"), thresholds) == list(thresholds)
    # Nothing spent reaches nothing, even under a $0 limit; any spend reaches all of it.
    assert crossed(D("0"), D("0"), thresholds) == []
    assert crossed(D("0"), PICO, thresholds) == list(thresholds)


def test_worst_case_cost_is_exact() -> None:
    # 1,234 prompt tokens at $2.50/M + 4,096 output tokens at $10/M.
    cost = worst_case_cost(1234, 4096, D("2.50"), D("10"))
    assert cost == D("0.003085") + D("0.04096")
    assert worst_case_cost(0, 0, D("2.5"), D("10")) == 0
    # A price with many digits stays exact (no float, no rounding).
    assert worst_case_cost(3, 7, D("0.0375"), D("0.15")) == D("0.0000011625")
    with pytest.raises(TypeError, match="Decimal"):
        worst_case_cost(1, 1, 2.5, D("10"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        worst_case_cost(1.0, 1, D("2.5"), D("10"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        worst_case_cost(-1, 1, D("2.5"), D("10"))
    with pytest.raises(ValueError, match="finite"):
        worst_case_cost(1, 1, D("2.5"), D("NaN"))


def test_ceil_picos_never_undercounts() -> None:
    assert ceil_picos(D("0.000000000001")) == 1
    assert ceil_picos(D("0.0000000000001")) == 1
    assert ceil_picos(D("1.0000000000011")) == 1_000_000_000_002
    assert ceil_picos(D("0")) == 0


# -- configuration ------------------------------------------------------------------------------


def test_limit_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="scope") as info:
        BudgetLimit(scope="team", period="day", usd=D("1"))  # type: ignore[arg-type]
    assert info.value.where == "BudgetLimit.scope"
    with pytest.raises(ConfigError, match="global limit has no name"):
        BudgetLimit(scope="global", name="x", period="day", usd=D("1"))
    with pytest.raises(ConfigError, match="period"):
        BudgetLimit(scope="user", period="week", usd=D("1"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="string, int or Decimal"):
        BudgetLimit(scope="user", period="day", usd=0.1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="between 0"):
        BudgetLimit(scope="user", period="day", usd=D("-1"))
    with pytest.raises(ConfigError, match="between 0"):
        BudgetLimit(scope="user", period="day", usd=MAX_LIMIT + 1)
    with pytest.raises(ConfigError, match="non-empty"):
        BudgetLimit(scope="user", name="", period="day", usd=D("1"))
    limit = BudgetLimit(scope="user", period="day", usd="1.50")  # type: ignore[arg-type]
    assert limit.usd == D("1.50")
    with pytest.raises(ConfigError, match="repeats limits\\[0\\]"):
        BudgetConfig(limits=(user_day("1"), user_day("2")))
    with pytest.raises(ConfigError, match="in \\(0, 1\\]") as info:
        BudgetConfig(thresholds=(D("1.5"),))
    assert info.value.where == "thresholds[0]"
    with pytest.raises(ConfigError, match="'allow' or 'refuse'"):
        BudgetConfig(on_store_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seconds > 0"):
        BudgetConfig(reservation_ttl=0)


def test_load_toml_reads_amounts_exactly(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(
        """
on_store_error = "refuse"
reservation_ttl = 120
thresholds = [0.8, 0.5]

[[budgets]]
scope = "user"
period = "day"
usd = 0.1

[[budgets]]
scope = "user"
name = "alice"
period = "day"
usd = "5.00"

[[budgets]]
scope = "global"
period = "month"
usd = 2000
""",
        encoding="utf-8",
    )
    config = load_budget_config(path)
    assert [(x.scope, x.name, x.period, x.usd) for x in config.limits] == [
        ("user", None, "day", D("0.1")),  # exactly ten cents: parsed as Decimal, not float
        ("user", "alice", "day", D("5.00")),
        ("global", None, "month", D("2000")),
    ]
    assert config.thresholds == (D("0.5"), D("0.8"))
    assert config.reservation_ttl == 120.0
    assert config.on_store_error == "refuse"
    assert config.on_unpriced == "refuse"


def test_load_json_and_mapping(tmp_path: Path) -> None:
    path = tmp_path / "budgets.json"
    path.write_text(
        json.dumps({"budgets": [{"scope": "task", "name": "t", "period": "total", "usd": 3}]})
    )
    (limit,) = load_budget_config(path).limits
    assert (limit.scope, limit.name, limit.period, limit.usd) == ("task", "t", "total", D(3))
    path.write_text('{"budgets": [{"scope": "global", "period": "day", "usd": 0.3}]}')
    assert load_budget_config(path).limits[0].usd == D("0.3")
    config = load_budget_config({"budgets": [{"scope": "user", "period": "day", "usd": "2"}]})
    assert config.limits == (user_day("2"),)
    with pytest.raises(ConfigError, match="string, int or Decimal"):
        load_budget_config({"budgets": [{"scope": "user", "period": "day", "usd": 0.3}]})


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            '[[budgets]]\nscope="user"\nperiod="day"\nusd="1"\n'
            '[[budgets]]\nscope="user"\nperiod="day"\nusd="-2"\n',
            "budgets[1].usd",
            "'-2'",
        ),
        ('[[budgets]]\nscope="team"\nperiod="day"\nusd="1"\n', "budgets[0].scope", "'team'"),
        ('[[budgets]]\nscope="user"\nperiod="day"\n', "budgets[0].usd", "required"),
        (
            '[[budgets]]\nscope="user"\nperiod="day"\nusd=1\nlimit=2\n',
            "budgets[0].limit",
            "unknown",
        ),
        ("budget = []\n", "budget", "unknown key"),
        ("thresholds = [0, 0.8]\n", "thresholds[0]", "(0, 1]"),
        ('on_unpriced = "maybe"\n', "on_unpriced", "'maybe'"),
        (
            '[[budgets]]\nscope="global"\nperiod="day"\nusd=1\n'
            '[[budgets]]\nscope="global"\nperiod="day"\nusd=2\n',
            "budgets[1]",
            "repeats",
        ),
        ("budgets = [", "", "cannot parse"),
    ],
)
def test_config_errors_name_file_key_and_value(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_budget_config(path)
    expected_where = f"{path}: {where}" if where else str(path)
    assert info.value.where == expected_where
    assert message in str(info.value)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_budget_config(tmp_path / "missing.toml")
    assert info.value.where == str(tmp_path / "missing.toml")
    other = tmp_path / "budgets.yaml"
    other.write_text("budgets: []")
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        load_budget_config(other)


# -- one contract, both stores ------------------------------------------------------------------

StoreFactory = Callable[[], BudgetStore]


@pytest.fixture(params=["sqlite", "redis"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes stores on one shared backing (as separate processes would have)."""
    made: list[BudgetStore] = []
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")

        def make() -> BudgetStore:
            made.append(RedisBudgetStore(url))
            return made[-1]
    else:
        path = tmp_path / "budgets.db"

        def make() -> BudgetStore:
            made.append(SQLiteBudgetStore(path))
            return made[-1]

    yield make
    for store in made:
        store.close()


def status_map(budgets: Budgets, of: Any, now: datetime = NOW) -> dict[str, tuple[Decimal, ...]]:
    return {
        f"{s.scope}:{s.name}:{s.period}": (s.spent, s.reserved, s.remaining)
        for s in budgets.status(of, now=now)
    }


def test_store_satisfies_the_protocol(new_store: StoreFactory) -> None:
    assert isinstance(new_store(), BudgetStore)


def test_reserve_settle_release_and_status(new_store: StoreFactory) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1"), glob("month", "100")])
    r1 = budgets.reserve(ALICE, D("0.40"), now=NOW)
    r2 = budgets.reserve(ALICE, D("0.30"), now=NOW)
    assert isinstance(r1, Reservation)
    assert r1.keys == ("user:alice:day:2026-11-23", "global:month:2026-11")
    assert r1.expires_at == NOW + timedelta(minutes=10)
    assert status_map(budgets, ALICE) == {
        "user:alice:day": (D(0), D("0.7"), D("0.3")),
        "global:None:month": (D(0), D("0.7"), D("99.3")),
    }
    budgets.settle(r1, D("0.25"), now=NOW)
    budgets.release(r2, now=NOW)
    assert status_map(budgets, ALICE) == {
        "user:alice:day": (D("0.25"), D(0), D("0.75")),
        "global:None:month": (D("0.25"), D(0), D("99.75")),
    }
    stats = budgets.stats()
    assert (stats.reserved, stats.settled, stats.released, stats.store_errors) == (2, 1, 1, 0)


def test_refusal_is_all_or_nothing_and_names_the_limit(new_store: StoreFactory) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1"), glob("day", "0.5")])
    held = budgets.reserve(BOB, D("0.30"), now=NOW)
    # Alice's own limit has room, the global one does not: nothing is reserved anywhere.
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(ALICE, D("0.25"), now=NOW)
    exc = info.value
    assert (exc.scope, exc.name, exc.period) == ("global", None, "day")
    assert (exc.limit, exc.spent, exc.requested) == (D("0.5"), D("0.3"), D("0.25"))
    assert status_map(budgets, ALICE)["user:alice:day"] == (D(0), D(0), D(1))
    # The user limit is reported before the global one when both would be crossed.
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(BOB, D("0.75"), now=NOW)
    assert (info.value.scope, info.value.name, info.value.spent) == ("user", "bob", D("0.3"))
    # Exactly up to the limit fits.
    budgets.reserve(ALICE, D("0.20"), now=NOW)
    budgets.settle(held, D("0.30"), now=NOW)
    assert status_map(budgets, None)["global:None:day"] == (D("0.3"), D("0.2"), D(0))
    assert budgets.stats().refused == 2


def test_settle_and_release_are_idempotent(new_store: StoreFactory) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1")])
    r = budgets.reserve(ALICE, D("0.5"), now=NOW)
    budgets.settle(r, D("0.4"), now=NOW)
    budgets.settle(r, D("0.4"), now=NOW)
    budgets.release(r, now=NOW)
    assert status_map(budgets, ALICE) == {"user:alice:day": (D("0.4"), D(0), D("0.6"))}
    r = budgets.reserve(ALICE, D("0.5"), now=NOW)
    budgets.release(r, now=NOW)
    budgets.release(r, now=NOW)
    budgets.settle(r, D("0.1"), now=NOW)  # after release: a no-op
    assert status_map(budgets, ALICE) == {"user:alice:day": (D("0.4"), D(0), D("0.6"))}
    stats = budgets.stats()
    assert (stats.settled, stats.released) == (1, 1)


def test_actual_above_the_reservation_is_recorded(new_store: StoreFactory) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1")])
    r = budgets.reserve(ALICE, D("0.5"), now=NOW)
    budgets.settle(r, D("1.2"), now=NOW)
    (status,) = budgets.status(ALICE, now=NOW)
    assert (status.spent, status.reserved, status.remaining) == (D("1.2"), D(0), D(0))
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(ALICE, D("0"), now=NOW)  # over the limit: even $0 is refused
    assert info.value.spent == D("1.2")


def test_expired_reservations_are_reclaimed_and_late_settles_still_count(
    new_store: StoreFactory,
) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1")], reservation_ttl=60)
    crashed = budgets.reserve(ALICE, D("0.9"), now=NOW)  # its process "dies" holding $0.90
    slow = budgets.reserve(ALICE, D("0.1"), now=NOW)
    with pytest.raises(BudgetExceeded):
        budgets.reserve(ALICE, D("0.1"), now=NOW + timedelta(seconds=59))
    # Past the TTL, the next reserve reclaims both, atomically with its own check.
    later = NOW + timedelta(seconds=61)
    budgets.reserve(ALICE, D("0.6"), now=later)
    assert status_map(budgets, ALICE, later) == {"user:alice:day": (D(0), D("0.6"), D("0.4"))}
    # The slow call settles after its reservation expired: its spend is recorded all the same.
    budgets.settle(slow, D("0.08"), now=later)
    budgets.settle(slow, D("0.08"), now=later)
    budgets.release(crashed, now=later)
    assert status_map(budgets, ALICE, later) == {"user:alice:day": (D("0.08"), D("0.6"), D("0.32"))}


def test_named_limit_overrides_the_generic_one(new_store: StoreFactory) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1"), user_day("5", "alice")])
    budgets.reserve(ALICE, D("4"), now=NOW)
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(BOB, D("1.5"), now=NOW)
    assert (info.value.name, info.value.limit) == ("bob", D("1"))
    budgets.reserve(BOB, D("1"), now=NOW)
    # Each user has a counter of their own under the generic limit.
    carol = Attribution(user="carol")
    budgets.reserve(carol, D("1"), now=NOW)
    assert status_map(budgets, "user", now=NOW) == {"user:alice:day": (D(0), D(4), D(1))}
    assert status_map(budgets, "user", now=NOW) == status_map(budgets, None)
    assert status_map(budgets, carol)["user:carol:day"] == (D(0), D(1), D(0))


def test_calls_without_a_user_meet_only_global_limits(new_store: StoreFactory) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("0.1"), glob("day", "1")])
    anonymous = Attribution(feature="search")
    r = budgets.reserve(anonymous, D("0.5"), now=NOW)
    assert r.keys == ("global:day:2026-11-23",)
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(anonymous, D("0.6"), now=NOW)
    assert info.value.scope == "global"
    # No limit at all applies: the store is not even asked.
    free = Budgets(store=new_store(), limits=[user_day("0.1")])
    r = free.reserve(Attribution(), D("1000"), now=NOW)
    assert r.applied == ()
    free.settle(r, D("999"))
    assert free.stats().unlimited == 1


def test_current_attribution_and_async_faces(new_store: StoreFactory) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1")])

    async def main() -> None:
        with attribute(user="alice"):
            r = await budgets.areserve(None, D("0.5"), now=NOW)
        assert r.keys == ("user:alice:day:2026-11-23",)
        await budgets.asettle(r, D("0.2"), now=NOW)
        r2 = await budgets.areserve(ALICE, D("0.3"), now=NOW)
        await budgets.arelease(r2, now=NOW)
        (status,) = await budgets.astatus("user", "alice", now=NOW)
        assert (status.spent, status.reserved) == (D("0.2"), D(0))

    asyncio.run(main())


def test_periods_roll_over(new_store: StoreFactory) -> None:
    limits = [user_day("1"), BudgetLimit(scope="user", period="month", usd=D("1.5"))]
    budgets = Budgets(store=new_store(), limits=limits)
    budgets.settle(budgets.reserve(ALICE, D("1"), now=NOW), D("1"), now=NOW)
    tomorrow = NOW + timedelta(days=1)
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(ALICE, D("0.6"), now=tomorrow)
    assert info.value.period == "month"  # a new day, but the same month
    budgets.reserve(ALICE, D("0.5"), now=tomorrow)
    next_month = datetime(2026, 12, 1, tzinfo=UTC)
    budgets.reserve(ALICE, D("1"), now=next_month)
    assert status_map(budgets, ALICE, next_month) == {
        "user:alice:day": (D(0), D(1), D(0)),
        "user:alice:month": (D(0), D(1), D("0.5")),
    }


def test_amounts_beyond_double_precision_stay_exact(new_store: StoreFactory) -> None:
    # $1,000,000 is 10**18 pico-dollars: far past 2**53, where a double drops the last digits.
    budgets = Budgets(store=new_store(), limits=[glob("total", "1000000")])
    nearly = D("999999.999999999999")  # the limit minus one pico-dollar
    budgets.settle(budgets.reserve(ALICE, nearly, now=NOW), nearly, now=NOW)
    budgets.reserve(ALICE, PICO, now=NOW)  # exactly at the limit: fits
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(ALICE, PICO, now=NOW)
    assert info.value.spent == D("1000000")
    (status,) = budgets.status("global", now=NOW)
    assert (status.spent, status.reserved) == (nearly, PICO)
    # At the ceiling of the limits, too.
    top = Budgets(
        store=new_store(), limits=[BudgetLimit(scope="task", period="day", usd=MAX_LIMIT)]
    )
    task = Attribution(task="t")
    top.reserve(task, MAX_LIMIT - PICO, now=NOW)
    top.reserve(task, PICO, now=NOW)
    with pytest.raises(BudgetExceeded):
        top.reserve(task, PICO, now=NOW)
    # An absurd request is refused, not overflowed.
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(BOB, D("1e30"), now=NOW)
    assert info.value.requested == D("1e30")


def test_thresholds_fire_once_across_processes(new_store: StoreFactory) -> None:
    events: list[ThresholdCrossed] = []
    limits = [user_day("1")]
    thresholds = (D("0.5"), D("0.8"))
    # Two Budgets on two connections to one store stand for two processes.
    a = Budgets(store=new_store(), limits=limits, thresholds=thresholds, on_threshold=events.append)
    b = Budgets(store=new_store(), limits=limits, thresholds=thresholds, on_threshold=events.append)
    a.settle(a.reserve(ALICE, D("0.6"), now=NOW), D("0.6"), now=NOW)
    b.settle(b.reserve(ALICE, D("0.1"), now=NOW), D("0.1"), now=NOW)  # 0.7: 0.5 already fired
    b.settle(b.reserve(ALICE, D("0.1"), now=NOW), D("0.1"), now=NOW)  # 0.8: fires 0.8
    a.settle(a.reserve(ALICE, D("0.1"), now=NOW), D("0.1"), now=NOW)  # 0.9: nothing new
    assert [(e.name, e.period_key, e.threshold, e.spent) for e in events] == [
        ("alice", "day:2026-11-23", D("0.5"), D("0.6")),
        ("alice", "day:2026-11-23", D("0.8"), D("0.8")),
    ]
    assert (events[0].scope, events[0].period, events[0].limit) == ("user", "day", D("1"))
    assert a.stats().alerts + b.stats().alerts == 2
    # A new period fires again.
    tomorrow = NOW + timedelta(days=1)
    b.settle(b.reserve(ALICE, D("0.5"), now=tomorrow), D("0.5"), now=tomorrow)
    assert events[-1].period_key == "day:2026-11-24"
    assert len(events) == 3


def test_a_failing_threshold_callback_never_breaks_the_call(
    new_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(event: ThresholdCrossed) -> None:
        raise RuntimeError("alerting is down")

    budgets = Budgets(
        store=new_store(), limits=[user_day("1")], thresholds=(D("0.5"),), on_threshold=boom
    )
    with caplog.at_level(logging.ERROR, logger="accounting.budgets"):
        budgets.settle(budgets.reserve(ALICE, D("0.6"), now=NOW), D("0.6"), now=NOW)
    assert budgets.stats().callback_errors == 1
    assert "threshold callback failed" in caplog.text
    assert budgets.status(ALICE, now=NOW)[0].spent == D("0.6")


def test_unpriced_calls_refused_by_default_allowed_by_policy(new_store: StoreFactory) -> None:
    store = new_store()
    strict = Budgets(store=store, limits=[user_day("1")])
    strict.settle(strict.reserve(ALICE, D("0.25"), now=NOW), D("0.25"), now=NOW)
    with pytest.raises(BudgetExceeded) as info:
        strict.reserve(ALICE, None, now=NOW)
    assert info.value.requested == D("Infinity")
    assert (info.value.scope, info.value.name, info.value.spent) == ("user", "alice", D("0.25"))
    # No limit applies to this call: nothing to protect, nothing refused.
    assert strict.reserve(Attribution(task="t"), None, now=NOW).amount == 0
    lenient = Budgets(store=store, limits=[user_day("1")], on_unpriced="allow")
    r = lenient.reserve(ALICE, None, now=NOW)
    assert r.amount == 0
    lenient.settle(r, D("0.75"), now=NOW)  # its cost, once known, is recorded
    lenient.settle(lenient.reserve(ALICE, D("0"), now=NOW), D("0.01"), now=NOW)  # $1.01
    with pytest.raises(BudgetExceeded):  # the budget is exhausted: refused even at $0
        lenient.reserve(ALICE, None, now=NOW)


def test_bad_amounts_are_programming_errors(new_store: StoreFactory) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1")])
    with pytest.raises(TypeError, match="Decimal"):
        budgets.reserve(ALICE, 0.5, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        budgets.reserve(ALICE, D("-1"), now=NOW)
    r = budgets.reserve(ALICE, D("0.5"), now=NOW)
    with pytest.raises(ValueError, match=">= 0"):
        budgets.settle(r, D("-0.1"))
    with pytest.raises(ValueError, match="timezone-aware"):
        budgets.reserve(ALICE, D("0.1"), now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="Attribution, a scope or None"):
        budgets.status("team")  # type: ignore[arg-type]


def test_from_config(new_store: StoreFactory, tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text('on_unpriced = "allow"\n[[budgets]]\nscope="user"\nperiod="day"\nusd=1\n')
    budgets = Budgets.from_config(load_budget_config(path), store=new_store())
    assert budgets.reserve(ALICE, None, now=NOW).amount == 0
    with pytest.raises(BudgetExceeded):
        budgets.reserve(ALICE, D("1.01"), now=NOW)


# -- the store fails -----------------------------------------------------------------------------


def test_redis_killed_allows_counts_logs_once_and_never_hangs(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limits = [user_day("1")]
    budgets = Budgets(store=RedisBudgetStore(own_redis.url), limits=limits)
    strict = Budgets(store=RedisBudgetStore(own_redis.url), limits=limits, on_store_error="refuse")
    held = budgets.reserve(ALICE, D("0.1"))
    own_redis.kill()
    with caplog.at_level(logging.WARNING, logger="accounting.budgets"):
        started = time.monotonic()
        unchecked = [budgets.reserve(ALICE, D("0.2")) for _ in range(5)]
        budgets.settle(held, D("0.05"))  # never raises; kept until the store answers
        budgets.release(unchecked[1])
        with pytest.raises(BudgetStoreError) as info:
            strict.reserve(ALICE, D("0.2"))
        assert info.value.store == "redis"
        with pytest.raises(BudgetStoreError):
            budgets.status(ALICE)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"calls against a dead store took {elapsed:.2f}s"
    stats = budgets.stats()
    assert (stats.store_errors, stats.unchecked, stats.reserved) == (8, 5, 1)
    assert (stats.deferred, stats.deferred_pending, stats.settled) == (1, 1, 0)
    failing = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failing) == 2  # once per Budgets object for the whole episode
    caplog.clear()

    own_redis.start()  # same port, empty (no persistence)
    with caplog.at_level(logging.WARNING, logger="accounting.budgets"):
        budgets.settle(unchecked[0], D("0.15"))  # made while down: recorded once back
        budgets.settle(unchecked[0], D("0.15"))
        budgets.reserve(ALICE, D("0.5"))
    assert [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    (status,) = budgets.status(ALICE)
    # The settle kept during the outage reached the store too: no spend forgotten.
    assert (status.spent, status.reserved) == (D("0.20"), D("0.5"))
    stats = budgets.stats()
    assert (stats.deferred_written, stats.deferred_pending, stats.settled) == (1, 0, 2)
    budgets.close()
    strict.close()


def test_redis_that_stops_answering_times_out(own_redis: RedisServer) -> None:
    store = RedisBudgetStore(own_redis.url, socket_timeout=0.2, connect_timeout=0.2)
    budgets = Budgets(store=store, limits=[user_day("1")])
    budgets.reserve(ALICE, D("0.1"))
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # up, connected, silent
    try:
        started = time.monotonic()
        budgets.reserve(ALICE, D("0.1"))
        budgets.reserve(ALICE, D("0.1"))
        elapsed = time.monotonic() - started
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    assert elapsed < 1.5, f"two reserves against a silent server took {elapsed:.2f}s"
    assert budgets.stats().unchecked == 2
    budgets.close()


def test_redis_absent_from_the_start() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    budgets = Budgets(store=RedisBudgetStore(url), limits=[glob("day", "1")])
    r = budgets.reserve(ALICE, D("0.5"))
    budgets.settle(r, D("0.5"))
    assert budgets.stats().store_errors == 2
    with pytest.raises(ValueError, match="redis://"):
        RedisBudgetStore("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBudgetStore(url, client_options={"decode_responses": True})
    assert "secret" not in repr(RedisBudgetStore("redis://user:secret@127.0.0.1:1/0"))


def test_sqlite_locked_beyond_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "budgets.db"
    budgets = Budgets(store=SQLiteBudgetStore(path, timeout=0.2), limits=[user_day("1")])
    strict = Budgets(
        store=SQLiteBudgetStore(path, timeout=0.2),
        limits=[user_day("1")],
        on_store_error="refuse",
    )
    budgets.reserve(ALICE, D("0.1"), now=NOW)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        unseen = budgets.reserve(ALICE, D("0.5"), now=NOW)
        with pytest.raises(BudgetStoreError) as info:
            strict.reserve(ALICE, D("0.5"), now=NOW)
        elapsed = time.monotonic() - started
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert info.value.store == "sqlite"
    assert elapsed < 2.0
    assert budgets.stats().unchecked == 1
    # Settled once the lock is free: the reservation the store never saw still records spend.
    budgets.settle(unseen, D("0.3"), now=NOW)
    budgets.settle(unseen, D("0.3"), now=NOW)
    assert status_map(budgets, ALICE) == {"user:alice:day": (D("0.3"), D("0.1"), D("0.6"))}
    budgets.close()
    strict.close()


def test_sqlite_store_is_summable_integer_picos(tmp_path: Path) -> None:
    path = tmp_path / "budgets.db"
    budgets = Budgets(store=SQLiteBudgetStore(path), limits=[user_day("1")])
    budgets.settle(budgets.reserve(ALICE, D("0.5"), now=NOW), D("0.123456789012"), now=NOW)
    budgets.settle(budgets.reserve(BOB, D("0.5"), now=NOW), D("0.000000000001"), now=NOW)
    budgets.close()
    with sqlite3.connect(path) as conn:
        (total,) = conn.execute("SELECT SUM(settled) FROM budget_counters").fetchone()
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()
    assert total == 123_456_789_013
    assert mode == "wal"


# -- many processes x many threads against one budget -------------------------------------------


def _spend_from_processes(
    store: str, where: str, tmp_path: Path, *, procs: int = 4, threads: int = 50, calls: int = 6
) -> list[dict[str, Any]]:
    go = tmp_path / "go"
    now = datetime.now(UTC)
    children = []
    try:
        for proc in range(procs):
            options = {
                "store": store,
                "where": where,
                "user": "spender",
                "limit": "1.00",
                "now": now.isoformat(),
                "seed": 20261123,
                "proc": proc,
                "threads": threads,
                "calls": calls,
                "go": str(go),
            }
            children.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), json.dumps(options)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == "ready\n", f"worker did not start: {line!r} {child.stderr}"
        go.touch()  # every process starts spending at once
        lines: list[dict[str, Any]] = []
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            lines += [json.loads(x) for x in out.splitlines()]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return [{**line, "now": now} for line in lines]


def _check_spending(lines: list[dict[str, Any]], budgets: Budgets) -> None:
    limit = D("1.00")
    errors = [x for x in lines if x["kind"] == "error"]
    assert errors == [], errors[:3]
    stats = [x for x in lines if x["kind"] == "stats"]
    assert len(stats) == 4
    assert all(s["store_errors"] == 0 and s["unchecked"] == 0 for s in stats)
    settled = [D(x["actual"]) for x in lines if x["kind"] == "settled"]
    refused = [x for x in lines if x["kind"] == "refused"]
    released = [x for x in lines if x["kind"] == "released"]
    assert len(settled) + len(refused) + len(released) == 4 * 50 * 6
    assert len(settled) >= 30 and len(refused) >= 100 and released
    # Every refusal came when the reservation would have crossed the limit; and since actual
    # costs never exceed their reservations, settled + in flight never exceeded the limit.
    for x in refused:
        spent, requested = D(x["spent"]), D(x["requested"])
        assert D(x["limit"]) == limit
        assert spent + requested > limit, x
        assert spent <= limit, x
    # Read back from the store: every settled cent is there, exactly, and within the limit.
    (status,) = budgets.status(Attribution(user="spender"), now=lines[0]["now"])
    assert status.spent == sum(settled)
    assert status.reserved == 0
    assert status.spent <= limit
    assert status.spent >= D("0.9"), "the budget was barely used: the test proves nothing"


@pytest.mark.slow
def test_4_processes_x_50_threads_one_redis_budget(redis_url: str, tmp_path: Path) -> None:
    lines = _spend_from_processes("redis", redis_url, tmp_path)
    with Budgets(store=RedisBudgetStore(redis_url), limits=[user_day("1.00")]) as budgets:
        _check_spending(lines, budgets)


@pytest.mark.slow
def test_4_processes_x_50_threads_one_sqlite_budget(tmp_path: Path) -> None:
    path = tmp_path / "budgets.db"
    lines = _spend_from_processes("sqlite", str(path), tmp_path)
    with Budgets(store=SQLiteBudgetStore(path), limits=[user_day("1.00")]) as budgets:
        _check_spending(lines, budgets)


def test_a_settle_made_while_sqlite_is_locked_counts_before_the_next_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "budgets.db"
    budgets = Budgets(store=SQLiteBudgetStore(path, timeout=0.1), limits=[user_day("1")])
    held = budgets.reserve(ALICE, D("0.5"), now=NOW)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        budgets.settle(held, D("0.9"), now=NOW)  # the call cost more than feared
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert budgets.stats().deferred_pending == 1
    # Without the kept settle the store would see 0.5 held and let 0.5 more through.
    with pytest.raises(BudgetExceeded) as refused:
        budgets.reserve(ALICE, D("0.5"), now=NOW)
    assert refused.value.spent == D("0.9")
    stats = budgets.stats()
    assert (stats.deferred, stats.deferred_written, stats.deferred_pending) == (1, 1, 0)
    budgets.settle(held, D("0.9"), now=NOW)  # a second settle still does nothing
    (status,) = budgets.status(ALICE, now=NOW)
    assert (status.spent, status.reserved) == (D("0.9"), D("0"))
    with caplog.at_level(logging.WARNING, logger="accounting.budgets"):
        budgets.close()
    assert not [r for r in caplog.records if "never reached" in r.getMessage()]


def test_settles_the_store_never_takes_are_logged_at_close_with_their_total(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    budgets = Budgets(store=RedisBudgetStore(url), limits=[glob("day", "5")])
    for cost in ("0.25", "0.5"):
        budgets.settle(budgets.reserve(ALICE, D("1")), D(cost))
    assert budgets.stats().deferred_pending == 2
    with caplog.at_level(logging.WARNING, logger="accounting.budgets"):
        budgets.close()
    (lost,) = [r.getMessage() for r in caplog.records if "never reached" in r.getMessage()]
    assert "2 settlements (USD 0.75)" in lost


def test_the_deferred_queue_is_bounded_ordered_and_keeps_what_failed() -> None:
    queue = Deferred(limit=2)
    items = [
        PendingSettle(
            reservation=Reservation(id=str(i), amount=D(1), applied=(), expires_at=NOW),
            actual=D(i),
            at=NOW,
        )
        for i in range(1, 4)
    ]
    assert queue.add(items[0]) is None and queue.add(items[1]) is None
    assert queue.add(items[2]) is items[0]  # the oldest makes room
    assert (queue.dropped, queue.dropped_usd, len(queue)) == (1, D(1), 2)
    written: list[str] = []

    def fail_on_3(item: PendingSettle) -> None:
        if item.actual == 3:
            raise OSError("store down")
        written.append(item.reservation.id)

    with pytest.raises(OSError):
        queue.drain(fail_on_3)
    assert written == ["2"] and len(queue) == 1  # the failed one waits at the head
    assert queue.drain(lambda item: written.append(item.reservation.id)) == 1
    assert written == ["2", "3"] and len(queue) == 0


def _kept_during_a_lock(path: Path, limits: list[BudgetLimit], n: int, each: str) -> Budgets:
    """Budgets on ``path`` after ``n`` calls reserved and settled while another process held
    the write lock (with a 1 ms lock timeout, then a normal one)."""
    store = SQLiteBudgetStore(path, timeout=0.001)
    budgets = Budgets(store=store, limits=limits)
    budgets.status(ALICE, now=NOW)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        for _ in range(n):
            budgets.settle(budgets.reserve(ALICE, D(each), now=NOW), D(each), now=NOW)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert budgets.stats().deferred_pending == n
    store.close()
    store.timeout = 2.0  # the next connection waits as a store normally does
    return budgets


def test_kept_spend_counts_before_every_concurrent_check_after_an_outage(tmp_path: Path) -> None:
    # $1.50 kept: more than one batch.
    budgets = _kept_during_a_lock(tmp_path / "budgets.db", [user_day("1")], 150, "0.01")
    start = threading.Barrier(8)
    granted: list[Reservation] = []

    def caller() -> None:
        start.wait()
        with contextlib.suppress(BudgetExceeded):
            granted.append(budgets.reserve(ALICE, D("0.40"), now=NOW))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted == []  # each waited for the batch in progress, then wrote its own
    (status,) = budgets.status(ALICE, now=NOW)
    assert status.spent == D("1.50")
    assert budgets.stats().deferred_written == 150
    budgets.close()


def test_a_long_outage_backlog_is_written_a_batch_per_call(tmp_path: Path) -> None:
    budgets = _kept_during_a_lock(tmp_path / "budgets.db", [user_day("100")], 250, "0.01")
    budgets.reserve(ALICE, D("0.01"), now=NOW)
    # No call writes the whole backlog: a batch before its check, one after its success.
    assert budgets.stats().deferred_written == 2 * DRAIN_BATCH
    budgets.reserve(ALICE, D("0.01"), now=NOW)
    stats = budgets.stats()
    assert (stats.deferred_written, stats.deferred_pending) == (250, 0)
    (status,) = budgets.status(ALICE, now=NOW)
    assert (status.spent, status.reserved) == (D("2.50"), D("0.02"))
    budgets.close()


def test_a_settle_the_store_refuses_is_logged_not_kept(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Two settles of $9M each overflow Redis's 64-bit counter of pico-dollars: a command error.
    whale = Attribution(user="whale")
    limits = [
        BudgetLimit(scope="user", name="whale", period="total", usd=D(9_000_000)),
        user_day("1", name="alice"),
    ]
    budgets = Budgets(
        store=RedisBudgetStore(redis_url, prefix=f"t{time.time_ns()}:"), limits=limits
    )
    held = [budgets.reserve(whale, D(1), now=NOW) for _ in range(2)]
    with caplog.at_level(logging.ERROR, logger="accounting.budgets"):
        for r in held:
            budgets.settle(r, D(9_000_000), now=NOW)
    stats = budgets.stats()
    assert (stats.settles_refused, stats.deferred, stats.deferred_pending) == (1, 0, 0)
    assert [r for r in caplog.records if "refused a settlement of USD 9000000" in r.getMessage()]
    # Nothing waits at the head of a queue: the others' limits are enforced as before.
    granted = 0
    for _ in range(5):
        try:
            budgets.settle(budgets.reserve(ALICE, D("0.5"), now=NOW), D("0.5"), now=NOW)
            granted += 1
        except BudgetExceeded:
            pass
    assert (granted, budgets.stats().unchecked) == (2, 0)
    budgets.close()
