"""attribute(): context manager and decorator, nesting, asyncio tasks, thread pools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from accounting import Attribution, attribute, carry, current_attribution


def test_outside_any_attribute_is_empty() -> None:
    assert current_attribution() == Attribution()
    assert current_attribution().is_empty


def test_nested_uses_extend_and_override() -> None:
    with attribute(user="ann", feature="search", team="core") as outer:
        assert outer == Attribution(user="ann", feature="search", tags={"team": "core"})
        with attribute(task="rank", feature="rerank", region="eu") as inner:
            assert inner.user == "ann"
            assert inner.feature == "rerank"
            assert inner.task == "rank"
            assert dict(inner.tags) == {"team": "core", "region": "eu"}
        assert current_attribution() == outer
    assert current_attribution().is_empty


def test_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), attribute(user="ann"):
        raise RuntimeError("boom")
    assert current_attribution().is_empty


def test_decorator_on_sync_and_async_functions() -> None:
    @attribute(user="bob", task="summarize")
    def sync_work() -> Attribution:
        return current_attribution()

    @attribute(feature="chat")
    async def async_work() -> Attribution:
        await asyncio.sleep(0)
        return current_attribution()

    assert sync_work() == Attribution(user="bob", task="summarize")
    with attribute(user="carol"):
        assert asyncio.run(async_work()) == Attribution(user="carol", feature="chat")
    assert current_attribution().is_empty
    assert sync_work.__name__ == "sync_work"


def test_decorator_on_generators_binds_each_step_not_the_consumer() -> None:
    @attribute(user="gen")
    def numbers() -> Iterator[Attribution]:
        got = yield current_attribution()
        assert got == "sent"
        try:
            yield current_attribution()
        except KeyError:
            yield current_attribution()

    gen = numbers()
    assert next(gen).user == "gen"
    assert current_attribution().is_empty  # the consumer keeps its own
    assert gen.send("sent").user == "gen"
    assert gen.throw(KeyError("x")).user == "gen"
    with pytest.raises(StopIteration):
        next(gen)
    gen.close()

    @attribute(feature="stream")
    async def chunks() -> AsyncIterator[Attribution]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield current_attribution()

    async def consume() -> list[Attribution]:
        with attribute(user="reader"):
            seen = [a async for a in chunks()]
            assert current_attribution() == Attribution(user="reader")
        stream = chunks()
        first = await anext(stream)
        await stream.aclose()
        return [*seen, first]

    assert asyncio.run(consume()) == [Attribution(user="reader", feature="stream")] * 3 + [
        Attribution(feature="stream")
    ]


def test_one_decorator_used_by_many_threads_at_once() -> None:
    barrier = threading.Barrier(8)

    @attribute(feature="batch")
    def work(user: str) -> Attribution:
        with attribute(user=user):
            barrier.wait(timeout=10)
            return current_attribution()

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(work, [f"u{i}" for i in range(8)]))
    assert seen == [Attribution(user=f"u{i}", feature="batch") for i in range(8)]


def test_follows_asyncio_tasks_and_to_thread() -> None:
    async def leaf() -> Attribution:
        await asyncio.sleep(0)
        return current_attribution()

    async def main() -> list[Attribution]:
        async with attribute(user="dan"):
            results = list(await asyncio.gather(leaf(), asyncio.create_task(leaf())))
            results.append(await asyncio.to_thread(current_attribution))
            # Tasks created inside keep the attribution even when the block has ended.
            late = asyncio.create_task(leaf())
        results.append(await late)
        return results

    assert asyncio.run(main()) == [Attribution(user="dan")] * 4


def test_thread_pools_need_carry() -> None:
    with ThreadPoolExecutor(2) as pool, attribute(user="erin"):
        plain = pool.submit(current_attribution).result()
        carried = pool.submit(carry(current_attribution)).result()
        both = [f.result() for f in [pool.submit(carry(current_attribution)) for _ in range(4)]]
    assert plain.is_empty
    assert carried == Attribution(user="erin")
    assert both == [Attribution(user="erin")] * 4


@pytest.mark.parametrize("bad", ["", 3, b"x"])
def test_values_must_be_non_empty_strings(bad: object) -> None:
    with pytest.raises(TypeError, match="user"):
        attribute(user=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="team"):
        attribute(team=bad)  # type: ignore[arg-type]


def test_json_form_round_trips() -> None:
    value = Attribution(user="ann", task="t", tags={"b": "2", "a": "1"})
    data = value.to_dict()
    assert list(data["tags"]) == ["a", "b"]
    assert Attribution.from_dict(data) == value
