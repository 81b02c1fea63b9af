"""@cached on sync and async functions: keys, options, controls and return types kept."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llmcache import (
    AsyncCachedFunction,
    Cache,
    CachedFunction,
    DiskTier,
    MemoryTier,
    UncacheableValue,
    cache_control,
    cached,
)


class Answer(BaseModel):
    text: str
    tokens: int
    at: dt.datetime


@dataclasses.dataclass
class Point:
    x: int
    y: float


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache([MemoryTier(), DiskTier(tmp_path / "disk")])


# Upstream calls are logged in a module global, not a list the test function owns: what a
# decorated function captures from an enclosing scope is part of its key, so a captured call log
# would change the key at every call.
RAN: list[Any] = []


@pytest.fixture(autouse=True)
def _reset_ran() -> None:
    RAN.clear()


def fresh_process_view(cache: Cache) -> Cache:
    """A cache over the same disk with an empty memory tier: what a new process sees."""
    disk = cache.tiers[1]
    assert isinstance(disk, DiskTier)
    return Cache([MemoryTier(), DiskTier(disk.directory)])


def test_bare_and_with_options(cache: Cache, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("LLMCACHE_DIR", str(tmp_path / "default"))

    @cached
    def bare(x: int) -> int:
        RAN.append(x)
        return x * 2

    assert isinstance(bare, CachedFunction)
    assert bare(2) == bare(2) == 4
    assert RAN == [2]
    assert bare.cache is Cache.default()

    @cached(cache=cache, ttl=60)
    def opts(x: int) -> int:
        RAN.append(x)
        return x * 3

    assert opts(2) == opts(2) == 6
    assert RAN == [2, 2]
    assert opts.__name__ == "opts"
    assert opts.fetch(2).info.tier == "memory"


def test_key_covers_name_version_and_bound_arguments(cache: Cache) -> None:

    @cached(cache=cache)
    def f(x: int, y: int = 1, *rest: int, **kw: Any) -> str:
        RAN.append("f")
        return "f"

    @cached(cache=cache)
    def g(x: int, y: int = 1, *rest: int, **kw: Any) -> str:
        RAN.append("g")
        return "g"

    f(1)
    f(x=1)
    f(1, 1)
    assert RAN == ["f"]
    f(1, 2)
    f(1, 1, 5)
    f(1, z=3)
    assert RAN == ["f"] * 4
    assert g(1) == "g"
    assert f.key(1) != g.key(1)

    @cached(cache=cache, version=2)
    def f2(x: int, y: int = 1, *rest: int, **kw: Any) -> str:
        return "v2"

    assert f2.key(1) != f.key(1)


def test_version_bump_invalidates(cache: Cache) -> None:
    def make(version: int) -> Any:
        @cached(cache=cache, version=version)
        def answer() -> str:
            return f"v{version}"

        return answer

    assert make(1)() == "v1"
    assert make(1)() == "v1"
    assert make(2)() == "v2"


def test_key_function_leaves_out_arguments(cache: Cache) -> None:

    class Client:
        pass

    @cached(cache=cache, key=lambda client, prompt: prompt)
    def ask(client: Client, prompt: str) -> str:
        RAN.append(1)
        return prompt.upper()

    assert ask(Client(), "hi") == ask(Client(), "hi") == "HI"
    assert len(RAN) == 1


def test_unencodable_arguments_name_the_path(cache: Cache) -> None:
    @cached(cache=cache)
    def ask(client: object, prompt: str) -> str:
        return prompt

    with pytest.raises(TypeError, match=r"at \$\.args\.client"):
        ask(object(), "hi")


def test_condition_and_controls(cache: Cache) -> None:

    @cached(cache=cache, condition=lambda r: r != "")
    def f(x: int) -> str:
        RAN.append(x)
        return "" if x == 0 else str(x)

    f(0)
    f(0)
    assert RAN == [0, 0]  # empty results are not stored
    f(1)
    with cache_control(no_cache=True):
        f(1)
    assert RAN == [0, 0, 1, 1]
    with cache_control(no_store=True):
        f(2)
    f(2)
    assert RAN == [0, 0, 1, 1, 2, 2]
    with cache_control(namespace="other"):
        f(1)
    assert RAN[-1] == 1
    f.invalidate(1)
    f(1)
    assert RAN.count(1) == 4


def test_nested_controls_keep_what_they_do_not_set(cache: Cache) -> None:
    @cached(cache=cache)
    def answer(q: str) -> str:
        RAN.append(q)
        return f"answer: {q}"

    with cache_control(tenant="acme", namespace="ns1", no_store=True):
        with cache_control(ttl=60):  # a library sets a TTL for its own calls
            key = answer.key("balance?")
            assert (key.tenant, key.namespace) == ("acme", "ns1")
            answer("balance?")  # no_store still holds
            with cache_control(no_store=False):  # a flag is switched off explicitly
                stored = answer.fetch("balance?")
        assert stored.info.stored
        assert answer.fetch("balance?").info.hit
    key = answer.key("balance?")
    assert (key.tenant, key.namespace) == (None, "default")
    assert not answer.fetch("balance?").info.hit  # the unscoped caller never sees acme's entry
    assert RAN == ["balance?"] * 3


@pytest.mark.parametrize(
    ("controls", "match"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": -1.5}, "ttl"),
        ({"namespace": "a b"}, "namespace 'a b' is not valid"),
        ({"tenant": ""}, "tenant '' is not valid"),
        ({"tenant": "x:y"}, "tenant 'x:y' is not valid"),
    ],
)
def test_controls_are_checked_when_the_block_is_entered(controls: Any, match: str) -> None:
    entered = False
    with pytest.raises(ValueError, match=match), cache_control(**controls):
        entered = True
    assert not entered


def test_pydantic_models_and_dataclasses_keep_their_type(cache: Cache) -> None:
    when = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)

    @cached(cache=cache)
    def annotated(n: int) -> list[Answer]:
        return [Answer(text="hi", tokens=n, at=when)]

    @cached(cache=cache)
    def model(n: int) -> Answer:
        return Answer(text="hi", tokens=n, at=when)

    @cached(cache=cache)
    def point(n: int) -> Point:
        return Point(x=n, y=0.5)

    @cached(cache=cache)
    def pair(n: int) -> tuple[int, str]:
        return (n, "x")

    @cached(cache=cache)
    def plain(n):  # type: ignore[no-untyped-def]
        return {"n": n, "items": [1, 2.5, "x", None, True]}

    functions: list[Any] = [annotated, model, point, pair, plain]
    originals = [fn(1) for fn in functions]
    reader = fresh_process_view(cache)
    for fn, original in zip(functions, originals, strict=True):
        again = CachedFunction(fn.__wrapped__, fn._spec)
        fn._spec._cache = reader
        got = again.fetch(1)
        assert got.info.tier == "disk", fn.__name__
        assert got.value == original
        assert type(got.value) is type(original)
        if isinstance(original, list):
            assert type(got.value[0]) is Answer


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (object(), "object"),
        ((1, 2), "tuple .* as list"),
        ({"when": dt.date(2026, 1, 1)}, "cannot be cached"),
        ({1: "int key"}, "would come back"),
        ({"s": {1, 2}}, "cannot be cached"),
    ],
)
def test_results_without_a_faithful_json_form_are_refused_at_the_first_call(
    cache: Cache, result: Any, match: str
) -> None:
    # key= given: what the function captures (`result`) is not part of the key.
    @cached(cache=cache, key=lambda: "f")
    def f():  # type: ignore[no-untyped-def]
        return result

    with pytest.raises(UncacheableValue, match=match):
        f()
    assert cache.stats().tiers[0].stores == 0


def test_local_classes_need_an_annotation(cache: Cache) -> None:
    class Local(BaseModel):
        a: int

    @cached(cache=cache)
    def plain():  # type: ignore[no-untyped-def]
        return Local(a=1)

    with pytest.raises(UncacheableValue, match="annotate the return type"):
        plain()

    @cached(cache=cache)
    def annotated() -> Local:
        return Local(a=1)

    assert annotated() == annotated() == Local(a=1)


def test_annotations_pydantic_cannot_handle_are_refused(cache: Cache) -> None:
    class Opaque:
        pass

    @cached(cache=cache)
    def f() -> Opaque:
        return Opaque()

    with pytest.raises(UncacheableValue, match="no JSON form"):
        f()


def test_async_functions(cache: Cache) -> None:

    @cached(cache=cache, ttl=30)
    async def ask(x: int) -> Answer:
        RAN.append(x)
        await asyncio.sleep(0.05)
        return Answer(text=str(x), tokens=x, at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))

    assert isinstance(ask, AsyncCachedFunction)
    assert inspect.iscoroutinefunction(ask) or asyncio.iscoroutinefunction(ask)

    async def main() -> None:
        results = await asyncio.gather(*(ask(7) for _ in range(20)))
        assert {r.text for r in results} == {"7"}
        assert RAN == [7]
        info = (await ask.fetch(7)).info
        assert info.hit
        await ask.invalidate(7)
        await ask(7)
        assert RAN == [7, 7]

    asyncio.run(main())


def test_methods_with_a_key_function(cache: Cache) -> None:
    class Agent:
        def __init__(self) -> None:
            self.calls = 0

        @cached(cache=cache, key=lambda self, q: q)
        def answer(self, q: str) -> str:
            self.calls += 1
            return q[::-1]

    a, b = Agent(), Agent()
    assert a.answer("abc") == "cba"
    assert b.answer("abc") == "cba"
    assert (a.calls, b.calls) == (1, 0)


def test_bad_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):

        @cached(ttl=-1)
        def f() -> None:
            return None


def test_bound_methods_keep_fetch_key_and_invalidate(cache: Cache) -> None:
    @dataclasses.dataclass(frozen=True)
    class Bot:
        model: str

        @cached(cache=cache)
        def ask(self, q: str) -> str:
            RAN.append((self.model, q))
            return f"{self.model}:{q}"

    bot = Bot("gpt")
    assert bot.ask("hi") == "gpt:hi"
    assert bot.ask.fetch("hi").info.hit
    assert bot.ask.key("hi") == Bot.ask.key(bot, "hi") != Bot("o3").ask.key("hi")
    assert bot.ask.cache is cache
    assert bot.ask.__name__ == "ask"
    assert list(inspect.signature(bot.ask).parameters) == ["q"]
    bot.ask.invalidate("hi")
    assert not bot.ask.fetch("hi").info.hit
    assert RAN == [("gpt", "hi")] * 2


def test_bound_async_methods_keep_fetch_key_and_invalidate(cache: Cache) -> None:
    @dataclasses.dataclass(frozen=True)
    class Bot:
        model: str

        @cached(cache=cache)
        async def ask(self, q: str) -> str:
            RAN.append((self.model, q))
            return f"{self.model}:{q}"

    bot = Bot("gpt")
    assert inspect.iscoroutinefunction(bot.ask) or asyncio.iscoroutinefunction(bot.ask)

    async def main() -> None:
        assert await bot.ask("hi") == "gpt:hi"
        assert (await bot.ask.fetch("hi")).info.hit
        assert bot.ask.key("hi") == Bot.ask.key(bot, "hi")
        await bot.ask.invalidate("hi")
        assert not (await bot.ask.fetch("hi")).info.hit

    asyncio.run(main())
    assert RAN == [("gpt", "hi")] * 2
