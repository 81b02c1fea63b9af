"""llmcache.wrap through the real openai SDK against the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage

import llmcache
from accounting import (
    Accountant,
    BudgetExceeded,
    BudgetLimit,
    Budgets,
    CacheOutcome,
    Ledger,
    attribute,
)
from accounting.budgets import SQLiteBudgetStore
from accounting.ledger import SQLiteStore
from llmcache import Cache, DiskTier, MemoryTier, RedisTier, cache_control, cache_info, wrap
from llmcache.testing import Fault, LocalServer

CHAT = "chat.completions"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        yield srv


@pytest.fixture
def srv(server: LocalServer) -> LocalServer:
    server.reset()
    return server


@pytest.fixture
def raw(srv: LocalServer) -> Iterator[OpenAI]:
    client = OpenAI(base_url=srv.base_url, api_key="sk-test-secret", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def cache() -> Cache:
    return Cache([MemoryTier()])


@pytest.fixture
def client(raw: OpenAI, cache: Cache) -> OpenAI:
    return wrap(raw, cache, accountant=False)


def _text(stream: Any) -> dict[str, Any]:
    """What a stream delivered: text and tool-call arguments per choice, finish reasons, usage."""
    text: dict[int, str] = {}
    args: dict[tuple[int, int], str] = {}
    finish: dict[int, str] = {}
    usage = None
    for chunk in stream:
        assert isinstance(chunk, ChatCompletionChunk)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for c in chunk.choices:
            text[c.index] = text.get(c.index, "") + (c.delta.content or "")
            for call in c.delta.tool_calls or ():
                key = (c.index, call.index)
                args[key] = args.get(key, "") + ((call.function and call.function.arguments) or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return {"text": text, "args": args, "finish": finish, "usage": usage}


async def _atext(stream: Any) -> dict[str, Any]:
    chunks = [chunk async for chunk in stream]
    return _text(iter(chunks))


# -- the wrapped client is the SDK's client ---------------------------------------------------


def test_wrapped_is_an_instance_of_the_client_class(client: OpenAI, raw: OpenAI) -> None:
    assert isinstance(client, OpenAI)
    assert client.base_url == raw.base_url
    assert client.api_key == raw.api_key
    again = client.with_options(timeout=5)
    assert isinstance(again, OpenAI)
    assert type(again) is type(client)


def test_public_attributes_pass_through(client: OpenAI, raw: OpenAI, srv: LocalServer) -> None:
    cached = {"chat", "completions", "embeddings", "responses", "copy", "with_options"}
    names = [n for n in dir(raw) if not n.startswith("_")]
    assert set(names) <= set(dir(client))
    for name in names:
        ours, theirs = getattr(client, name), getattr(raw, name)
        if name in cached:
            continue
        if callable(theirs) and hasattr(theirs, "__func__"):
            assert ours.__func__ is theirs.__func__, name  # the SDK's own method
        else:
            assert type(ours) is type(theirs), name
    # Everything public on the cached resources but create is the SDK resource's own.
    for wrapped, sdk in (
        (client.chat.completions, raw.chat.completions),
        (client.embeddings, raw.embeddings),
        (client.responses, raw.responses),
        (client.completions, raw.completions),
        (client.chat, raw.chat),
    ):
        for name in (n for n in dir(sdk) if not n.startswith("_")):
            if name in ("create", "completions"):
                continue
            ours, theirs = getattr(wrapped, name), getattr(sdk, name)
            if hasattr(theirs, "__func__"):
                assert ours.__func__ is theirs.__func__, name
            else:
                assert type(ours) is type(theirs), name
    # Pass-through calls reach the server.
    models = client.models.list()
    assert srv.count("models") == 1
    assert [m.id for m in models.data] == [m.id for m in raw.models.list().data]
    raw_response = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert raw_response.http_response.status_code == 200
    client.with_raw_response.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert srv.count(CHAT) == 2  # raw responses always go upstream, never cached
    with client.with_streaming_response.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        assert json.loads(response.read())["object"] == "chat.completion"
    assert srv.count(CHAT) == 3


def test_context_manager_and_close(srv: LocalServer, cache: Cache) -> None:
    with wrap(OpenAI(base_url=srv.base_url, api_key="k"), cache, accountant=False) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert client.is_closed()
    # Whatever the SDK's own closed client raises (RuntimeError in 3.54, an API error before).
    with pytest.raises((RuntimeError, openai.APIConnectionError)):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, seed=1)


def test_with_options_copies_stay_cached(client: OpenAI, srv: LocalServer) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    other = client.with_options(timeout=3.0, max_retries=1)
    result = other.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    info = cache_info(result)
    assert info is not None and info.hit
    assert srv.count(CHAT) == 1


# -- hits, types and the key -------------------------------------------------------------------


def test_hit_returns_equal_sdk_object_and_says_where(client: OpenAI, srv: LocalServer) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)
    second = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)
    assert type(second) is ChatCompletion
    assert second is not first
    assert second.model_dump() == first.model_dump()
    assert second.choices[0].message.tool_calls
    assert srv.count(CHAT) == 1
    miss, hit = cache_info(first), cache_info(second)
    assert miss is not None and not miss.hit and miss.stored
    assert hit is not None and hit.hit and hit.tier == "memory"
    assert cache_info(object()) is None


def test_key_ignores_non_output_fields(raw: OpenAI, cache: Cache, srv: LocalServer) -> None:
    client = wrap(raw, cache, accountant=False)
    other_key = wrap(raw.with_options(api_key="sk-another"), cache, accountant=False)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="alice")
    for c, extra in (
        (other_key, {}),
        (client, {"user": "bob", "timeout": 9.0, "extra_headers": {"X-Trace": "1"}}),
        (client, {"metadata": {"run": "7"}, "store": False, "safety_identifier": "s"}),
    ):
        hit = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **extra)
        info = cache_info(hit)
        assert info is not None and info.hit, extra
    assert srv.count(CHAT) == 1


def test_key_follows_output_fields(client: OpenAI, raw: OpenAI, srv: LocalServer) -> None:
    base: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
    variants: list[dict[str, Any]] = [
        {},
        {"model": "gpt-4o"},
        {"temperature": 0},
        {"seed": 3},
        {"max_tokens": 5},
        {"tools": TOOLS},
        {"extra_body": {"top_k": 3}},
        {"messages": [{"role": "user", "content": "What is the capital of Spain?"}]},
    ]
    for v in variants:
        client.chat.completions.create(**{**base, **v})
    assert srv.count(CHAT) == len(variants)
    # The same request to another base URL is another provider: another entry.
    elsewhere = raw.with_options(base_url=srv.base_url.rstrip("/") + "/")
    assert str(elsewhere.base_url) == str(raw.base_url)  # same URL once normalized
    with LocalServer() as second:
        other = wrap(
            OpenAI(base_url=second.base_url, api_key="k", max_retries=0),
            client._llmcache_wiring.cache,  # type: ignore[attr-defined]
            accountant=False,
        )
        other.chat.completions.create(**base)
        assert second.count(CHAT) == 1


def test_generator_messages_are_sent_and_keyed(client: OpenAI, srv: LocalServer) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=(m for m in MESSAGES))
    second = client.chat.completions.create(model="gpt-4o-mini", messages=list(MESSAGES))
    assert first.model_dump() == second.model_dump()
    assert srv.count(CHAT) == 1


# -- per-call controls and policy --------------------------------------------------------------


def test_per_call_controls(client: OpenAI, srv: LocalServer) -> None:
    req: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
    with cache_control(no_store=True):
        client.chat.completions.create(**req)
    client.chat.completions.create(**req)  # not stored before: upstream, stored now
    assert srv.count(CHAT) == 2
    with cache_control(no_cache=True):
        fresh = client.chat.completions.create(**req)
    info = cache_info(fresh)
    assert info is not None and not info.hit
    assert srv.count(CHAT) == 3
    # The keyword form never reaches the SDK (which would raise TypeError on an unknown one).
    client.chat.completions.create(**req, llmcache={"no_cache": True})  # type: ignore[call-overload]
    assert srv.count(CHAT) == 4
    hit = client.chat.completions.create(**req, llmcache={"namespace": "other"})  # type: ignore[call-overload]
    assert srv.count(CHAT) == 5
    assert cache_info(hit) is not None
    with pytest.raises(TypeError, match="llmcache="):
        client.chat.completions.create(**req, llmcache={"nocache": True})  # type: ignore[call-overload]


def test_sampled_bypass_policy(raw: OpenAI, cache: Cache, srv: LocalServer) -> None:
    client = wrap(raw, cache, accountant=False, sampled="bypass")
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert srv.count(CHAT) == 2  # OpenAI's default temperature is 1: samples, not cached
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)
    assert srv.count(CHAT) == 3
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, n=2)
    assert srv.count(CHAT) == 5
    with pytest.raises(ValueError, match="sampled"):
        wrap(raw, cache, sampled="sometimes")  # type: ignore[arg-type]


def test_default_policy_caches_n_choices(client: OpenAI, srv: LocalServer) -> None:
    a = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    b = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    assert len(b.choices) == 3
    assert a.model_dump() == b.model_dump()
    assert srv.count(CHAT) == 1


def test_errors_and_content_filter_are_not_stored(client: OpenAI, srv: LocalServer) -> None:
    srv.fault(Fault.RATE_LIMIT, retry_after=0.0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert srv.count(CHAT) == 2
    filtered = [{"role": "user", "content": "tell me [content_filter] things"}]
    for _ in range(2):
        out = client.chat.completions.create(model="gpt-4o-mini", messages=filtered)
        assert out.choices[0].finish_reason == "content_filter"
    assert srv.count(CHAT) == 4
    # Cut at max_tokens is the complete answer to that request: stored.
    for _ in range(2):
        out = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=2)
        assert out.choices[0].finish_reason == "length"
    assert srv.count(CHAT) == 5


# -- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tools", [None, TOOLS], ids=["text", "tools"])
@pytest.mark.parametrize("usage", [False, True], ids=["no-usage", "usage"])
def test_stream_miss_then_replay_equal(
    client: OpenAI, srv: LocalServer, tools: Any, usage: bool
) -> None:
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    if usage:
        extra["stream_options"] = {"include_usage": True}
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra
    ) as stream:
        assert isinstance(stream, openai.Stream)
        miss = cache_info(stream)
        assert miss is not None and not miss.hit and not miss.stored
        original = _text(stream)
        done = cache_info(stream)
        assert done is not None and done.stored  # known once the stream was read to its end
    replay_stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra
    )
    assert isinstance(replay_stream, openai.Stream)
    info = cache_info(replay_stream)
    assert info is not None and info.hit
    replayed = _text(replay_stream)
    assert replayed == original
    assert (original["usage"] is not None) is usage  # hidden unless asked for
    assert srv.count(CHAT) == 1
    # One key for stream and non-stream: the stream's entry answers a plain call too.
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **extra)
    assert srv.count(CHAT) == 1
    assert plain.choices[0].finish_reason == original["finish"][0]
    if tools:
        call = plain.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.arguments == original["args"][(0, 0)]  # type: ignore[union-attr]
    else:
        assert plain.choices[0].message.content == original["text"][0]


def test_non_stream_entry_answers_a_stream(client: OpenAI, srv: LocalServer) -> None:
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    got = _text(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert got["text"][0] == plain.choices[0].message.content
    assert plain.usage is not None
    assert got["usage"] == plain.usage.model_dump()
    assert srv.count(CHAT) == 1


def test_broken_stream_is_not_stored(client: OpenAI, srv: LocalServer) -> None:
    srv.fault(Fault.DROP_STREAM, after_chunks=2)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIConnectionError):
        for _ in stream:
            pass
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    info = cache_info(again)
    assert info is not None and not info.hit
    _text(again)
    assert srv.count(CHAT) == 2
    third = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    info = cache_info(third)
    assert info is not None and info.hit


def test_abandoned_stream_is_not_stored(client: OpenAI, srv: LocalServer) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as second:
        next(iter(second))  # leaving the block closes it early
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert srv.count(CHAT) == 3


def test_stream_cut_by_content_filter_is_not_stored(client: OpenAI, srv: LocalServer) -> None:
    filtered = [{"role": "user", "content": "[content_filter] please"}]
    for _ in range(2):
        got = _text(
            client.chat.completions.create(model="gpt-4o-mini", messages=filtered, stream=True)
        )
        assert got["finish"][0] == "content_filter"
    assert srv.count(CHAT) == 2


# -- the other endpoints -----------------------------------------------------------------------


def test_embeddings_cached(client: OpenAI, raw: OpenAI, srv: LocalServer) -> None:
    a = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    b = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert a.model_dump() == b.model_dump()
    assert (
        b.data[0].embedding
        == raw.embeddings.create(model="text-embedding-3-small", input=["a", "b"]).data[0].embedding
    )
    assert srv.count("embeddings") == 2  # one through the wrapper, one raw


def test_responses_cached_stream_and_not(client: OpenAI, srv: LocalServer) -> None:
    first = client.responses.create(model="gpt-4o-mini", input="Say hello")
    second = client.responses.create(model="gpt-4o-mini", input="Say hello")
    assert second.model_dump() == first.model_dump()
    assert second.output_text == first.output_text
    events = list(client.responses.create(model="gpt-4o-mini", input="Say hello", stream=True))
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == first.output_text
    assert srv.count("responses") == 1
    # A streamed miss is stored for a later plain call.
    live = list(client.responses.create(model="gpt-4o-mini", input="Say bye", stream=True))
    plain = client.responses.create(model="gpt-4o-mini", input="Say bye")
    assert live[-1].response.output_text == plain.output_text  # type: ignore[union-attr]
    assert srv.count("responses") == 2


def test_completions_cached_stream_and_not(client: OpenAI, srv: LocalServer) -> None:
    first = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon")
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Once upon", stream=True
        )
        if c.choices
    )
    assert text == first.choices[0].text
    assert srv.count("completions") == 1


# -- many callers ------------------------------------------------------------------------------


def _check_one_request_per_key(srv: LocalServer, results: list[tuple[int, Any]]) -> None:
    """Two keys, 500 calls each (250 plain, 250 streamed): two upstream requests in all, and
    every caller of a key got the same answer (a replayed stream: same text, tool-call
    arguments, finish reasons and usage chunk as the streamed original)."""
    assert srv.count(CHAT) == 2
    for k in (0, 1):
        plain = [r for key, r in results if key == k and "choices" in r]
        streams = [r for key, r in results if key == k and "text" in r]
        assert len(plain) == len(streams) == 250
        assert all(p == plain[0] for p in plain)
        assert all(s == streams[0] for s in streams)
        assert streams[0]["text"][0] == (plain[0]["choices"][0]["message"]["content"] or "")


def test_1000_sync_calls_one_upstream_request_per_key(client: OpenAI, srv: LocalServer) -> None:
    srv.ttft = 0.05  # the first answer takes a while: every caller misses at once
    requests = [
        {"model": "gpt-4o-mini", "messages": MESSAGES},
        {"model": "gpt-4o-mini", "messages": MESSAGES, "tools": TOOLS},
    ]

    def call(i: int) -> tuple[int, Any]:
        req = requests[i % 2]
        if i % 4 < 2:
            return i % 2, client.chat.completions.create(**req).model_dump()
        return i % 2, _text(
            client.chat.completions.create(
                **req, stream=True, stream_options={"include_usage": True}
            )
        )

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(1000)))
    finally:
        srv.ttft = 0.0
    _check_one_request_per_key(srv, results)


def test_1000_async_calls_one_upstream_request_per_key(srv: LocalServer, cache: Cache) -> None:
    async def main() -> list[tuple[int, Any]]:
        async with wrap(
            AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0),
            cache,
            accountant=False,
        ) as client:
            requests = [
                {"model": "gpt-4o-mini", "messages": MESSAGES},
                {"model": "gpt-4o-mini", "messages": MESSAGES, "tools": TOOLS},
            ]

            async def call(i: int) -> tuple[int, Any]:
                req = requests[i % 2]
                if i % 4 < 2:
                    result = await client.chat.completions.create(**req)
                    return i % 2, result.model_dump()
                stream = await client.chat.completions.create(
                    **req, stream=True, stream_options={"include_usage": True}
                )
                assert isinstance(stream, openai.AsyncStream)
                return i % 2, await _atext(stream)

            return await asyncio.gather(*(call(i) for i in range(1000)))

    srv.ttft = 0.05
    try:
        results = asyncio.run(main())
    finally:
        srv.ttft = 0.0
    _check_one_request_per_key(srv, results)


def test_async_broken_stream_not_stored(srv: LocalServer, cache: Cache) -> None:
    async def main() -> None:
        client = wrap(
            AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0), cache, accountant=False
        )
        srv.fault(Fault.DROP_STREAM, after_chunks=1)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APIConnectionError):
            async for _ in stream:
                pass
        done = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        async with done:
            await _atext(done)
        hit = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        info = cache_info(hit)
        assert info is not None and info.hit
        await client.close()

    asyncio.run(main())
    assert srv.count(CHAT) == 2


# -- accounting --------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(SQLiteStore(tmp_path / "ledger.sqlite3"))
    yield book
    book.close()


def test_calls_are_accounted(raw: OpenAI, cache: Cache, ledger: Ledger) -> None:
    client = wrap(raw, cache, accountant=Accountant(ledger=ledger), provider="openai")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _text(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    ledger.flush()
    records = list(ledger.records())
    assert [r.cache for r in records] == [CacheOutcome.MISS, CacheOutcome.HIT, CacheOutcome.HIT]
    miss, hit, _ = records
    assert miss.cost is not None and miss.cost.total > 0
    assert miss.usage.input > 0 and not miss.usage.estimated
    assert hit.cost is not None and hit.cost.total == 0
    assert hit.saved == miss.cost.total
    assert hit.cache_tier == "memory"


def test_streamed_miss_and_broken_stream_are_accounted(
    raw: OpenAI, cache: Cache, ledger: Ledger, srv: LocalServer
) -> None:
    client = wrap(raw, cache, ledger=ledger, provider="openai")
    _text(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    srv.fault(Fault.DROP_STREAM, after_chunks=3)
    with pytest.raises(openai.APIConnectionError):
        _text(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    ledger.flush()
    ok, broken = list(ledger.records())
    assert ok.cache is CacheOutcome.MISS and ok.status.value == "ok"
    assert not ok.usage.estimated  # the usage chunk was requested for the ledger
    assert broken.status.value == "provider_error"
    assert broken.usage.estimated and broken.usage.output > 0  # what was streamed is billed


def test_exports() -> None:
    assert llmcache.wrap is wrap
    assert llmcache.cache_info is cache_info


def test_budget_refusal_stops_the_call_before_the_provider(
    raw: OpenAI, cache: Cache, ledger: Ledger, srv: LocalServer, tmp_path: Path
) -> None:
    budgets = Budgets(
        store=SQLiteBudgetStore(tmp_path / "budgets.sqlite3"),
        limits=[BudgetLimit(scope="user", period="day", usd=Decimal("0.0001"))],
    )
    client = wrap(
        raw, cache, accountant=Accountant(ledger=ledger, budgets=budgets), provider="openai"
    )
    with attribute(user="ann"):
        # 1,000,000 output tokens of gpt-4o-mini could cost $0.60: over ann's $0.0001.
        with pytest.raises(BudgetExceeded) as refused:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=1_000_000
            )
        assert srv.count(CHAT) == 0
        assert refused.value.limit == Decimal("0.0001")
        # A small call fits, and once stored its hits cost nothing.
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert srv.count(CHAT) == 1
    ledger.flush()
    statuses = [r.status.value for r in ledger.records()]
    assert statuses == ["refused", "ok", "ok"]


def test_entries_shared_through_disk_and_redis(
    raw: OpenAI, srv: LocalServer, tmp_path: Path, redis_url: str
) -> None:
    def fresh(disk: bool) -> Cache:  # what another process on this host (or another host) has
        tiers: list[Any] = [MemoryTier()]
        if disk:
            tiers.append(DiskTier(tmp_path / "disk"))
        return Cache([*tiers, RedisTier(redis_url)])

    first = wrap(raw, fresh(True), accountant=False)
    original = _text(
        first.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS, stream=True
        )
    )
    same_host = wrap(raw, fresh(True), accountant=False)
    other_host = wrap(raw, fresh(False), accountant=False)
    for client, tier in ((same_host, "disk"), (other_host, "redis")):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS, stream=True
        )
        info = cache_info(stream)
        assert info is not None and info.hit and info.tier == tier
        assert _text(stream) == original
    assert srv.count(CHAT) == 1


# -- found in review ---------------------------------------------------------------------------


def test_a_stream_dropped_unread_frees_its_key_at_once(client: OpenAI, cache: Cache) -> None:
    def start_and_drop() -> None:
        for _ in client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ):
            break  # neither read to the end nor closed

    start_and_drop()
    # No garbage-collector pass needed: nothing holds the stream, so its claim is abandoned
    # and a caller of the same request does not wait for it.
    assert len(cache._flights) == 0
    start_and_drop()
    assert len(cache._flights) == 0


def test_same_task_asks_again_while_reading_its_stream(srv: LocalServer, cache: Cache) -> None:
    async def main() -> None:
        client = wrap(
            AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0), cache, accountant=False
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        # The same request from the task that leads the unread stream: it cannot wait for
        # itself, so it calls upstream (instead of waiting out the lock lease).
        again = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        info = cache_info(again)
        assert info is not None and not info.hit and not info.coalesced
        await _atext(stream)
        await client.close()

    asyncio.run(main())
    assert srv.count(CHAT) == 2


def test_sdk_message_objects_key_like_the_dicts_sent(client: OpenAI, srv: LocalServer) -> None:
    # The SDK sends a message object as its set fields: so is it keyed.
    as_object = ChatCompletionMessage(role="assistant", content="Paris.")
    as_dict = {"role": "assistant", "content": "Paris."}
    follow = {"role": "user", "content": "And Spain?"}
    client.chat.completions.create(model="gpt-4o-mini", messages=[*MESSAGES, as_object, follow])
    hit = client.chat.completions.create(model="gpt-4o-mini", messages=[*MESSAGES, as_dict, follow])
    info = cache_info(hit)
    assert info is not None and info.hit
    assert srv.count(CHAT) == 1


def test_raw_responses_are_accounted(raw: OpenAI, cache: Cache, ledger: Ledger) -> None:
    client = wrap(raw, cache, ledger=ledger, provider="openai")
    response = client.with_raw_response.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert response.parse().choices[0].message.content
    ledger.flush()
    (record,) = list(ledger.records())
    assert record.cache is CacheOutcome.BYPASS
    assert record.cost is not None and record.cost.total > 0 and not record.usage.estimated


def test_token_id_prompts_fit_a_budget(
    raw: OpenAI, cache: Cache, ledger: Ledger, tmp_path: Path
) -> None:
    budgets = Budgets(
        store=SQLiteBudgetStore(tmp_path / "budgets.sqlite3"),
        limits=[BudgetLimit(scope="global", period="day", usd=Decimal("10"))],
    )
    client = wrap(
        raw, cache, accountant=Accountant(ledger=ledger, budgets=budgets), provider="openai"
    )
    out = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(out.data) == 2
    done = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=[1, 2, 3], max_tokens=5)
    assert done.choices


def test_an_async_stream_closed_early_is_billed_as_far_as_it_went(
    srv: LocalServer, cache: Cache, ledger: Ledger
) -> None:
    async def main() -> None:
        client = wrap(
            AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0),
            cache,
            ledger=ledger,
            provider="openai",
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        async for _ in stream:
            break
        await stream.close()
        await client.close()

    asyncio.run(main())
    ledger.flush()
    (record,) = list(ledger.records())
    assert record.status.value == "ok"  # the caller stopped: not a provider error
    assert record.usage.estimated and record.usage.input > 0
    assert srv.count(CHAT) == 1


def test_a_refused_leader_does_not_refuse_its_waiters(
    srv: LocalServer, cache: Cache, ledger: Ledger, tmp_path: Path
) -> None:
    # ann is over her budget, bob has none: bob's identical call, waiting on ann's in flight,
    # must not get ann's refusal.
    budgets = Budgets(
        store=SQLiteBudgetStore(tmp_path / "budgets.sqlite3"),
        limits=[BudgetLimit(scope="user", name="ann", period="day", usd=Decimal("0.000001"))],
    )
    acct = Accountant(ledger=ledger, budgets=budgets)

    async def main() -> None:
        client = wrap(
            AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0),
            cache,
            accountant=acct,
            provider="openai",
        )

        async def ask(user: str) -> Any:
            with attribute(user=user):
                return await client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=1000
                )

        ann, bob = await asyncio.gather(ask("ann"), ask("bob"), return_exceptions=True)
        assert isinstance(ann, BudgetExceeded)
        assert isinstance(bob, ChatCompletion)
        await client.close()

    asyncio.run(main())
    assert srv.count(CHAT) == 1


def test_a_consumer_cancelled_at_the_end_of_its_stream_leaves_no_flight(
    srv: LocalServer, tmp_path: Path, ledger: Ledger
) -> None:
    # The tee's end awaits a disk write (and the ledger): cancelling the consumer there must
    # still end the claim, or every later miss of the key would wait for a dead flight.
    cache = Cache([MemoryTier(), DiskTier(tmp_path / "disk")])

    async def main() -> None:
        client = wrap(
            AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0),
            cache,
            ledger=ledger,
            provider="openai",
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(consume())
        while not stream._sink._ended:  # type: ignore[attr-defined]
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert len(cache._flights) == 0
        await client.close()

    asyncio.run(main())
    ledger.flush()
    (record,) = list(ledger.records())  # the paid call is recorded all the same
    assert record.cost is not None and record.cost.total > 0
