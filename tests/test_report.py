"""Reports fold ledger records into exact per-group totals and print them three ways."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from accounting import (
    Attribution,
    CacheOutcome,
    CallRecord,
    ConfigError,
    Cost,
    Status,
    TokenUsage,
)
from accounting.report import build_report, parse_since, render, total

DAY = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()


def _call(
    user: str | None,
    cost: str | None,
    *,
    feature: str | None = None,
    model: str = "gpt-4o-mini",
    cache: CacheOutcome = CacheOutcome.MISS,
    saved: str | None = None,
    status: Status = Status.OK,
    at: float = DAY,
) -> CallRecord:
    spent = cache is not CacheOutcome.HIT and status is not Status.REFUSED
    return CallRecord(
        time=at,
        provider="openai",
        model_requested=model,
        usage=TokenUsage(input=100, cached_input=10, output=20) if spent else TokenUsage(),
        cost=None if cost is None else Cost(input=Decimal(cost)),
        cache=cache,
        cache_tier="disk" if cache is CacheOutcome.HIT else None,
        saved=None if saved is None else Decimal(saved),
        status=status,
        attribution=Attribution(user=user, feature=feature, tags={"team": "core"}),
        latency=0.5,
    )


def _ledger() -> list[CallRecord]:
    return [
        _call("ann", "0.10", feature="search"),
        _call("ann", "0", feature="search", cache=CacheOutcome.HIT, saved="0.10"),
        _call("ann", "0.000001", feature="chat"),
        _call("bob", "0.30", feature="search"),
        _call("bob", None, model="acme-1"),
        _call("bob", "0", cache=CacheOutcome.HIT, saved=None),
        _call(None, "0.05"),
        _call("ann", None, status=Status.REFUSED, cache=CacheOutcome.BYPASS),
        _call("old", "9.99", at=DAY - 30 * 86400),
    ]


def test_groups_by_user_with_exact_totals() -> None:
    rows = {r.group["user"]: r for r in build_report(_ledger(), by=["user"], since=DAY - 86400)}
    assert set(rows) == {"ann", "bob", "unattributed"}
    ann, bob = rows["ann"], rows["bob"]
    assert ann.calls == 4 and ann.hits == 1 and ann.misses == 2 and ann.refused == 1
    assert ann.cost == Decimal("0.100001")
    assert ann.saved == Decimal("0.10")
    assert ann.hit_rate == pytest.approx(1 / 3)
    assert ann.unpriced == 0  # the refused call spent nothing: it is not "unpriced"
    assert bob.cost == Decimal("0.30") and bob.unpriced == 1 and bob.unpriced_hits == 1
    assert rows["unattributed"].cost == Decimal("0.05")
    assert ann.input_tokens == 200 and ann.cached_input_tokens == 20 and ann.output_tokens == 40


def test_rows_sorted_by_cost_and_grouped_by_several_dimensions() -> None:
    rows = build_report(_ledger(), by=["user", "feature", "model"], since=DAY - 86400)
    assert [r.cost for r in rows] == sorted((r.cost for r in rows), reverse=True)
    keys = [tuple(r.group.values()) for r in rows]
    assert ("bob", "search", "gpt-4o-mini") in keys
    assert ("bob", "unattributed", "acme-1") in keys
    assert total(rows).calls == 8


def test_tags_and_days_are_dimensions() -> None:
    rows = build_report(_ledger(), by=["tag:team", "day"])
    assert {tuple(r.group.values()) for r in rows} == {
        ("core", "2026-11-20"),
        ("core", "2026-10-21"),
    }


def test_since_and_until_bound_the_period() -> None:
    rows = build_report(_ledger(), by=["user"], since=DAY - 40 * 86400, until=DAY)
    assert [r.group["user"] for r in rows] == ["old"]


@pytest.mark.parametrize("by", [["colour"], ["user", "user"], ["tag:"]])
def test_bad_dimensions_are_named(by: list[str]) -> None:
    with pytest.raises(ConfigError, match="--by"):
        build_report([], by=by)


def test_parse_since() -> None:
    assert parse_since("7d", now=1000000.0) == 1000000.0 - 7 * 86400
    assert parse_since("90m", now=10000.0) == 10000.0 - 5400
    assert parse_since("2026-11-20") == datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    with pytest.raises(ConfigError, match=r"--since.*'yesterday'"):
        parse_since("yesterday")


def test_json_and_csv_keep_money_exact() -> None:
    rows = build_report(_ledger(), by=["user"], since=DAY - 86400)
    doc = json.loads(render(rows, by=["user"], fmt="json"))
    ann = next(d for d in doc if d["user"] == "ann")
    assert ann["cost_usd"] == "0.100001" and ann["saved_usd"] == "0.10"
    table = list(csv.DictReader(io.StringIO(render(rows, by=["user"], fmt="csv"))))
    assert {r["user"]: r["unpriced_calls"] for r in table} == {
        "ann": "0",
        "bob": "1",
        "unattributed": "0",
    }


def test_table_shows_unpriced_calls_never_as_zero() -> None:
    text = render(build_report(_ledger(), by=["user"], since=DAY - 86400), by=["user"])
    bob = next(line for line in text.splitlines() if line.startswith("bob"))
    assert "+1 unpriced" in bob
    assert "TOTAL" in text
    assert "1 call(s) used a model with no known price" in text
    assert render([], by=["user"]) == "no calls recorded in this period\n"
    with pytest.raises(ConfigError, match="--format"):
        render([], by=["user"], fmt="xml")
