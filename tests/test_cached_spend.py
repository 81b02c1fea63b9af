"""@cached and money: a miss's spend is kept with the entry, a hit records it as saved."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletion

from accounting import Accountant, CacheOutcome, Ledger, attribute
from accounting.ledger import SQLiteStore
from llmcache import Cache, MemoryTier, cached, canonical_json, wrap
from llmcache.spend import Spent, frame, unframe
from llmcache.testing import LocalServer

MESSAGES = [{"role": "user", "content": "Summarize our refund policy."}]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        yield srv


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(SQLiteStore(tmp_path / "ledger.sqlite3"))
    yield book
    book.close()


def test_hit_records_what_the_miss_spent(server: LocalServer, ledger: Ledger) -> None:
    acct = Accountant(ledger=ledger)
    client = wrap(
        OpenAI(base_url=server.base_url, api_key="k", max_retries=0),
        Cache([MemoryTier()]),  # the client's own cache is another one
        accountant=acct,
        provider="openai",
    )

    @cached(cache=Cache([MemoryTier()]), accountant=acct)
    def summary(topic: str) -> str:
        with_ctx = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": topic}], temperature=0
        )
        return with_ctx.choices[0].message.content or ""

    with attribute(user="ann", feature="faq"):
        first = summary("refunds")
    with attribute(user="bob", feature="faq"):
        second = summary.fetch("refunds")
    assert second.value == first and second.info.hit
    ledger.flush()
    miss, hit = list(ledger.records())
    assert miss.cache is CacheOutcome.MISS and miss.attribution.user == "ann"
    assert miss.cost is not None and miss.cost.total > 0
    assert hit.cache is CacheOutcome.HIT and hit.operation == "cached_function"
    assert hit.saved == miss.cost.total
    assert hit.attribution.user == "bob"  # the saving goes to whoever got the hit
    assert hit.model_requested.startswith("gpt-4o-mini")


def test_function_that_spends_nothing_writes_nothing(ledger: Ledger) -> None:
    @cached(cache=Cache([MemoryTier()]), accountant=Accountant(ledger=ledger))
    def double(x: int) -> int:
        return 2 * x

    assert double(2) == double(2) == 4
    ledger.flush()
    assert list(ledger.records()) == []


def test_returned_raw_response_is_priced_and_recorded(server: LocalServer, ledger: Ledger) -> None:
    raw = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    # A raw client has no key identity (a wrapped one has): key= says what identifies a call.
    @cached(cache=Cache([MemoryTier()]), accountant=Accountant(ledger=ledger), key=lambda q: q)
    def ask(q: str) -> ChatCompletion:
        return raw.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": q}]
        )

    a, b = ask("hi"), ask("hi")
    assert a.model_dump() == b.model_dump()
    ledger.flush()
    miss, hit = list(ledger.records())
    assert miss.cache is CacheOutcome.MISS and miss.cost is not None and miss.cost.total > 0
    assert hit.saved == miss.cost.total


def test_async_cached_function_records_saving(server: LocalServer, ledger: Ledger) -> None:
    acct = Accountant(ledger=ledger)

    async def main() -> None:
        client = wrap(
            AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0),
            Cache([MemoryTier()]),
            accountant=acct,
            provider="openai",
        )

        @cached(cache=Cache([MemoryTier()]), accountant=acct)
        async def ask(q: str) -> str:
            out = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": q}]
            )
            return out.choices[0].message.content or ""

        assert await ask("x") == await ask("x")
        await client.close()

    asyncio.run(main())
    ledger.flush()
    miss, hit = list(ledger.records())
    assert miss.cost is not None
    assert hit.cache is CacheOutcome.HIT and hit.saved == miss.cost.total


def test_accountant_false_turns_it_off(server: LocalServer, ledger: Ledger) -> None:
    raw = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    @cached(cache=Cache([MemoryTier()]), accountant=False, key=lambda q: q)
    def ask(q: str) -> ChatCompletion:
        return raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    ask("a")
    ask("a")
    ledger.flush()
    assert list(ledger.records()) == []


def test_frame_round_trip() -> None:
    spent = Spent(usd=Decimal("0.000123"), provider="openai", model="gpt-4o-mini")
    assert unframe(frame(spent, b'{"a":1}')) == (spent, b'{"a":1}')
    assert unframe(frame(None, b'"plain"')) == (None, b'"plain"')
    unpriced = Spent(usd=None, provider="p", model="m")
    assert unframe(frame(unpriced, b"1")) == (unpriced, b"1")


def test_captured_wrapped_client_is_keyed_by_its_provider(server: LocalServer) -> None:
    a = wrap(OpenAI(base_url=server.base_url, api_key="key-a"), accountant=False)
    b = wrap(OpenAI(base_url=server.base_url, api_key="key-b"), accountant=False)
    c = wrap(OpenAI(base_url="http://127.0.0.1:9/v1", api_key="key-a"), accountant=False)
    assert canonical_json(a) == canonical_json(b)
    assert canonical_json(a) != canonical_json(c)
    assert b"key-a" not in canonical_json(a)


def test_nested_cached_functions_count_one_call_once(server: LocalServer, ledger: Ledger) -> None:
    raw = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    acct = Accountant(ledger=ledger)

    @cached(cache=Cache([MemoryTier()]), accountant=acct, key=lambda q: q)
    def inner(q: str) -> ChatCompletion:
        return raw.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": q}]
        )

    @cached(cache=Cache([MemoryTier()]), accountant=acct, key=lambda q: q)
    def same(q: str) -> ChatCompletion:
        return inner(q)

    @cached(cache=Cache([MemoryTier()]), accountant=acct, key=lambda q: q)
    def text(q: str) -> str:
        return inner(q).choices[0].message.content or ""

    same("a")  # one provider call: one record, not one per level
    ledger.flush()
    (paid,) = list(ledger.records())
    assert paid.cost is not None
    text("b")  # inner misses inside text's miss: text's entry is worth that call
    text("b")  # a hit of text saves it
    text("a")  # inner hits inside text's miss: recomputing text costs nothing more
    text("a")
    ledger.flush()
    records = list(ledger.records())[1:]
    hit = CacheOutcome.HIT
    assert [r.cache for r in records] == [CacheOutcome.MISS, hit, hit, hit]
    b_paid, b_hit, a_inner_hit, a_text_hit = records
    assert b_paid.cost is not None and b_hit.saved == b_paid.cost.total
    assert a_inner_hit.saved == paid.cost.total  # inner's own hit
    assert a_text_hit.saved == 0
