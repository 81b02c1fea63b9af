"""Accountant: budget before the call, exact price and a durable ledger record after it.

Real SQLite ledger and budget files, real Redis budget store, real genai-prices data.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import free_port

from accounting import (
    Attribution,
    BudgetExceeded,
    BudgetStoreError,
    CacheOutcome,
    Status,
    TokenUsage,
    attribute,
)
from accounting.budgets import BudgetLimit, Budgets, RedisBudgetStore, SQLiteBudgetStore
from accounting.ledger import SQLiteStore, default_ledger
from accounting.meter import Accountant, CallRequest, collecting, worst_case
from accounting.pricing import ModelPrice, PriceBook, PriceTier
from accounting.tokens import estimate_prompt_tokens

PRICES = {
    ("openai", "house-model"): ModelPrice(
        input=Decimal("2"),
        cached_input=Decimal("0.5"),
        output=Decimal("8"),
        max_output_tokens=1000,
    ),
    ("openai", "house-model-2026-01-01"): ModelPrice(input=Decimal("1"), output=Decimal("4")),
}
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def accountant(tmp_path: Path) -> Iterator[Accountant]:
    budgets = Budgets(
        store=SQLiteBudgetStore(tmp_path / "budgets.sqlite3"),
        limits=[BudgetLimit(scope="user", period="day", usd=Decimal("0.01"))],
    )
    acc = Accountant(
        ledger=default_ledger(tmp_path / "ledger.sqlite3"),
        prices=PriceBook(overrides=PRICES),
        budgets=budgets,
    )
    yield acc
    acc.close()


def _stored(tmp_path: Path) -> list[object]:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    try:
        return list(store.records())
    finally:
        store.close()


def test_a_call_is_priced_settled_and_on_disk_before_ok_returns(
    accountant: Accountant, tmp_path: Path
) -> None:
    with attribute(user="ann", feature="search"), collecting() as seen:
        meter = accountant.begin(
            CallRequest(
                provider="openai", model="house-model", messages=MESSAGES, max_output_tokens=100
            )
        )
        assert meter.reservation is not None
        # 3 + 3 (message) + "user" + "Say hello." + 3 priming, at most $2/M in, 100 out at $8/M.
        assert meter.reservation.amount > Decimal("0.0008")
        usage = TokenUsage(input=1000, cached_input=400, output=50)
        record = meter.ok(usage)
    # (600 x 2 + 400 x 0.5 + 50 x 8) / 1M
    assert record.cost is not None and record.cost.total == Decimal("0.0018")
    assert record.attribution == Attribution(user="ann", feature="search")
    assert seen == [record]
    assert _stored(tmp_path) == [record]  # durable: in the file, no flush needed
    [status] = accountant.budgets.status(record.attribution)  # type: ignore[union-attr]
    assert status.spent == Decimal("0.0018") and status.reserved == 0


def test_the_served_snapshot_prices_the_call_when_it_has_a_price(accountant: Accountant) -> None:
    meter = accountant.begin(CallRequest(provider="openai", model="house-model", prompt_tokens=5))
    record = meter.ok(TokenUsage(input=1_000_000), model_served="house-model-2026-01-01")
    assert record.cost is not None and record.cost.total == Decimal("1")
    # A snapshot of the requested model that the table lacks: the requested model prices it.
    meter = accountant.begin(CallRequest(provider="openai", model="house-model", prompt_tokens=5))
    record = meter.ok(TokenUsage(input=1_000_000), model_served="house-model-2026-02-02")
    assert record.cost is not None and record.cost.total == Decimal("2")
    # Any other unknown model served in its place is unpriced, never billed at the asked price.
    meter = accountant.begin(CallRequest(provider="openai", model="house-model", prompt_tokens=5))
    record = meter.ok(TokenUsage(input=1_000_000), model_served="house-model-turbo")
    assert record.cost is None


def test_a_refusal_is_raised_and_recorded_and_spends_nothing(
    accountant: Accountant, tmp_path: Path
) -> None:
    with attribute(user="bob"):
        accountant.begin(CallRequest(provider="openai", model="house-model", prompt_tokens=10)).ok(
            TokenUsage(input=3000, output=500)
        )  # $0.01 exactly: the day's limit is spent
        with pytest.raises(BudgetExceeded) as caught:
            accountant.begin(CallRequest(provider="openai", model="house-model", prompt_tokens=10))
    assert caught.value.scope == "user" and caught.value.name == "bob"
    assert caught.value.limit == Decimal("0.01") and caught.value.spent == Decimal("0.01")
    accountant.ledger.flush()  # a refusal spent nothing: its record is batched like a hit's
    refused = _stored(tmp_path)[-1]
    assert refused.status is Status.REFUSED  # type: ignore[attr-defined]
    assert not refused.spent  # type: ignore[attr-defined]


def test_a_failed_call_releases_its_reservation(accountant: Accountant) -> None:
    with attribute(user="cy"):
        meter = accountant.begin(
            CallRequest(provider="openai", model="house-model", prompt_tokens=10)
        )
        [held] = accountant.budgets.status(meter.attribution)  # type: ignore[union-attr]
        assert held.reserved == meter.reservation.amount > 0  # type: ignore[union-attr]
        record = meter.failed(TimeoutError("upstream"))
    assert record.status is Status.PROVIDER_ERROR and record.error_type == "TimeoutError"
    [after] = accountant.budgets.status(record.attribution)  # type: ignore[union-attr]
    assert after.reserved == 0 and after.spent == 0
    with pytest.raises(RuntimeError, match="already recorded"):
        meter.ok(TokenUsage())


def test_an_unpriced_model_is_refused_under_a_limit_and_unpriced_without(
    accountant: Accountant, tmp_path: Path
) -> None:
    with attribute(user="dee"), pytest.raises(BudgetExceeded):
        accountant.begin(CallRequest(provider="acme", model="acme-1", prompt_tokens=10))
    free = Accountant(ledger=default_ledger(tmp_path / "free.sqlite3"), prices=accountant.prices)
    record = free.begin(CallRequest(provider="acme", model="acme-1")).ok(TokenUsage(input=10))
    assert record.cost is None and not record.priced
    free.close()


def test_hits_are_batched_records_with_the_saved_cost(
    accountant: Accountant, tmp_path: Path
) -> None:
    with attribute(task="triage"):
        record = accountant.hit(
            provider="openai", model="house-model", tier="disk", saved=Decimal("0.0018")
        )
    assert record.cache is CacheOutcome.HIT and record.cost is not None
    assert record.cost.total == 0 and record.saved == Decimal("0.0018")
    assert record.attribution.task == "triage"
    accountant.ledger.flush()
    assert _stored(tmp_path) == [record]


def test_async_faces_follow_the_same_rules(tmp_path: Path, redis_url: str) -> None:
    budgets = Budgets(
        store=RedisBudgetStore(redis_url),
        limits=[BudgetLimit(scope="global", period="total", usd=Decimal("0.005"))],
    )
    acc = Accountant(
        ledger=default_ledger(tmp_path / "ledger.sqlite3"),
        prices=PriceBook(overrides=PRICES),
        budgets=budgets,
    )

    async def main() -> None:
        async with attribute(user="eve"):
            small = CallRequest(
                provider="openai", model="house-model", prompt_tokens=100, max_output_tokens=100
            )
            meter = await acc.abegin(small)
            record = await meter.aok(TokenUsage(input=100, output=100))
            assert record.cost is not None and record.cost.total == Decimal("0.001")
            meter = await acc.abegin(small)
            await meter.afailed(ConnectionError("reset"))
            with pytest.raises(BudgetExceeded, match="global"):
                # 100 in + 1000 out (the model's limit) at $8/M: more than the $0.004 left.
                await acc.abegin(
                    CallRequest(provider="openai", model="house-model", prompt_tokens=100)
                )

    asyncio.run(main())
    acc.ledger.flush()
    statuses = [r.status for r in _stored(tmp_path)]  # type: ignore[attr-defined]
    assert statuses == [Status.OK, Status.PROVIDER_ERROR, Status.REFUSED]
    acc.close()


def test_worst_case_bounds() -> None:
    price = ModelPrice(
        input=Decimal("1"),
        cache_write=Decimal("1.25"),
        output=Decimal("4"),
        reasoning=Decimal("5"),
        context_window=10_000,
    )
    # No output limit anywhere: what the context window leaves after the prompt.
    assert worst_case(price, 1000, None) == (1000 * Decimal("1.25") + 9000 * 5) / 1_000_000
    assert worst_case(price, 1000, 10) == (1000 * Decimal("1.25") + 10 * 5) / 1_000_000
    assert worst_case(None, 1000, 10) is None
    assert worst_case(price, None, 10) is None
    assert worst_case(ModelPrice(input=Decimal(1), output=Decimal(1)), 10, None) is None


def test_an_estimated_prompt_count_is_reserved_with_a_margin_past_a_price_cliff(
    tmp_path: Path,
) -> None:
    cliff = ModelPrice(
        input=Decimal("1"),
        output=Decimal("1"),
        max_output_tokens=1,
        tiers=(PriceTier(above_input_tokens=200, input=Decimal("10"), output=Decimal("10")),),
    )
    budgets = Budgets(
        store=SQLiteBudgetStore(tmp_path / "budgets.sqlite3"),
        limits=[BudgetLimit(scope="global", period="day", usd=Decimal("1"))],
    )
    acc = Accountant(
        ledger=default_ledger(tmp_path / "ledger.sqlite3"),
        prices=PriceBook(overrides={("acme", "acme-1"): cliff}),
        budgets=budgets,
    )
    # acme-1 is no OpenAI model: its count is an o200k estimate, under the 200-token cliff.
    messages = [{"role": "user", "content": "word " * 150}]
    meter = acc.begin(CallRequest(provider="acme", model="acme-1", messages=messages))
    estimate = estimate_prompt_tokens(messages, "acme-1")
    assert estimate.estimated and estimate.tokens < 200
    inflated = math.ceil(estimate.tokens * Decimal("1.5"))
    assert inflated > 200  # the margin reserves at the dear side of the cliff
    assert meter.reservation is not None
    assert meter.reservation.amount == (inflated * 10 + 1 * 10) / Decimal(1_000_000)
    meter.ok(TokenUsage(input=150, output=1))
    acc.close()


def test_a_prompt_it_cannot_count_falls_under_on_unpriced_not_a_crash(
    accountant: Accountant, caplog: pytest.LogCaptureFixture
) -> None:
    odd = [object()]  # no message shape the counter knows
    # on_unpriced="refuse": the worst case is unknown, so a user under a limit is refused.
    with attribute(user="gus"), pytest.raises(BudgetExceeded):
        accountant.begin(CallRequest(provider="openai", model="house-model", messages=odd))
    assert accountant.plan_errors == 1
    assert "cannot bound the cost" in caplog.text


def test_a_failing_budget_store_under_refuse_is_recorded(tmp_path: Path) -> None:
    budgets = Budgets(
        store=RedisBudgetStore(f"redis://127.0.0.1:{free_port()}/0"),
        limits=[BudgetLimit(scope="global", period="day", usd=Decimal("1"))],
        on_store_error="refuse",
    )
    acc = Accountant(
        ledger=default_ledger(tmp_path / "ledger.sqlite3"),
        prices=PriceBook(overrides=PRICES),
        budgets=budgets,
    )
    with pytest.raises(BudgetStoreError):
        acc.begin(CallRequest(provider="openai", model="house-model", prompt_tokens=1))
    acc.ledger.flush()
    [refused] = _stored(tmp_path)
    assert refused.status is Status.REFUSED  # type: ignore[attr-defined]
    assert refused.error_type == "BudgetStoreError"  # type: ignore[attr-defined]
    acc.close()


def test_async_hit(accountant: Accountant, tmp_path: Path) -> None:
    async def main() -> None:
        async with attribute(user="fay"):
            await accountant.ahit(provider="openai", model="house-model", tier="redis", saved=None)

    asyncio.run(main())
    accountant.ledger.flush()
    [hit] = _stored(tmp_path)
    assert hit.cache is CacheOutcome.HIT and hit.attribution.user == "fay"  # type: ignore[attr-defined]


def test_every_accounted_call_becomes_a_span(tmp_path: Path) -> None:
    from otlp_receiver import OTLPReceiver  # noqa: PLC0415

    from accounting.export import CallEnd, configure_otel  # noqa: PLC0415

    receiver = OTLPReceiver().start()
    exporter = configure_otel(
        endpoint=receiver.url,
        protocol="http",
        service_name="test-meter",
        use_global=False,
        metric_export_interval=3600.0,
    )
    budgets = Budgets(
        store=SQLiteBudgetStore(tmp_path / "budgets.sqlite3"),
        limits=[BudgetLimit(scope="user", name="max", period="day", usd=Decimal("0"))],
    )
    acc = Accountant(
        ledger=default_ledger(tmp_path / "ledger.sqlite3"),
        prices=PriceBook(overrides=PRICES),
        budgets=budgets,
        exporter=exporter,
    )
    request = CallRequest(
        provider="openai",
        model="house-model",
        messages=[{"role": "user", "content": "SECRET-PROMPT-91c2"}],
        server_address="api.example.com",
        server_port=443,
        params={"temperature": 0.2, "max_tokens": 10},
    )
    with attribute(user="ann"):
        acc.begin(request).ok(
            TokenUsage(input=100, output=10),
            end=CallEnd(response_id="chatcmpl-1", finish_reasons=("stop",)),
        )
        acc.begin(request).failed(TimeoutError("SECRET-ERROR"))
        acc.hit(provider="openai", model="house-model", tier="memory", saved=Decimal("0.00028"))
    with attribute(user="max"), pytest.raises(BudgetExceeded):
        acc.begin(request)
    assert exporter.force_flush(10)
    spans = {s.attributes["llmcache.record.id"]: s for s in receiver.spans()}
    acc.ledger.flush()
    records = _stored(tmp_path)
    assert len(spans) == len(records) == 4
    miss, error, hit, refused = (spans[r.id].attributes for r in records)  # type: ignore[attr-defined]
    assert miss["gen_ai.request.model"] == "house-model"
    assert miss["server.address"] == "api.example.com" and miss["gen_ai.request.temperature"] == 0.2
    assert miss["gen_ai.usage.input_tokens"] == 100 and miss["gen_ai.response.id"] == "chatcmpl-1"
    assert Decimal(miss["llmcache.cost.total_usd_exact"]) == Decimal("0.00028")
    assert error["error.type"] == "TimeoutError"
    assert hit["llmcache.cache.outcome"] == "hit" and "gen_ai.usage.input_tokens" not in hit
    assert refused["error.type"] == "BudgetExceeded"
    assert b"SECRET-PROMPT-91c2" not in receiver.raw() and b"SECRET-ERROR" not in receiver.raw()
    acc.close()
    receiver.stop()
