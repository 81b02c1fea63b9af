"""What a @cached key covers beyond the arguments: captured variables, lambdas, options."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from llmcache import Cache, DiskTier, MemoryTier, cached

# Two module-level lambdas: both have the qualified name "<lambda>".
LAMBDAS = [
    lambda x: x + 1,
    lambda x: x * 2,
]


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache([MemoryTier(), DiskTier(tmp_path / "disk")])


def test_functions_made_by_a_factory_are_keyed_by_what_they_capture(cache: Cache) -> None:
    def make_summarizer(model: str) -> Any:
        @cached(cache=cache)
        def summarize(text: str) -> str:
            return f"[{model}] summary of {text}"

        return summarize

    cheap, smart = make_summarizer("gpt-4o-mini"), make_summarizer("o3")
    assert cheap("doc") == "[gpt-4o-mini] summary of doc"
    assert smart("doc") == "[o3] summary of doc"
    assert cheap.key("doc") != smart.key("doc")
    # The same capture, the same entries: a second factory call hits the first one's result.
    assert make_summarizer("o3").fetch("doc").info.hit


def test_captured_values_are_read_at_each_call(cache: Cache) -> None:
    model = "a"

    @cached(cache=cache)
    def ask(q: str) -> str:
        return f"{model}:{q}"

    assert ask("q") == "a:q"
    model = "b"
    assert ask("q") == "b:q"
    model = "a"
    assert ask.fetch("q").info.hit


def test_captured_helpers_count_with_what_they_capture(cache: Cache) -> None:
    def make(model: str) -> Any:
        def call(q: str) -> str:  # a helper that itself captures `model`
            return f"{model}:{q}"

        @cached(cache=cache)
        def ask(q: str) -> str:
            return call(q)

        return ask

    assert make("a")("q") == "a:q"
    assert make("b")("q") == "b:q"
    assert make("a").fetch("q").info.hit


def test_captured_functions_classes_and_modules_are_keyed_by_name(cache: Cache) -> None:
    def make() -> Any:
        helper, kind, module = math.sqrt, float, math

        @cached(cache=cache)
        def ask(x: int) -> float:
            return kind(helper(x)) + module.pi * 0

        return ask

    first, second = make(), make()
    assert first(4) == 2.0
    assert first.key(4) == second.key(4)
    assert second.fetch(4).info.hit


def test_a_recursive_local_function_is_cached(cache: Cache) -> None:
    @cached(cache=cache)
    def fib(n: int) -> int:  # `fib` is a captured variable, unset when decorated
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(30) == 832040
    assert fib.fetch(30).info.hit


def test_methods_using_super_are_cached(cache: Cache) -> None:
    class Base:
        def prefix(self) -> str:
            return "base:"

    @dataclasses.dataclass(frozen=True)
    class Bot(Base):
        model: str

        @cached(cache=cache)
        def ask(self, q: str) -> str:  # super() captures the class as `__class__`
            return super().prefix() + self.model + q

    assert Bot("m").ask("q") == "base:mq"
    assert Bot("m").ask.fetch("q").info.hit
    assert not Bot("n").ask.fetch("q").info.hit


def test_unencodable_captures_are_refused_at_decoration(cache: Cache) -> None:
    class Client:
        def complete(self, q: str) -> str:
            return q

    client = Client()
    with pytest.raises(TypeError, match=r"'client' \(a Client\).*pass key="):

        @cached(cache=cache)
        def ask(q: str) -> str:
            return client.complete(q)

    # With key= the user says what identifies a call: captured values are not used.
    @cached(cache=cache, key=lambda q: q)
    def ask_keyed(q: str) -> str:
        return client.complete(q)

    assert ask_keyed("x") == "x"
    assert ask_keyed.fetch("x").info.hit


def test_module_level_lambdas_do_not_share_entries(cache: Cache) -> None:
    inc, dbl = (cached(cache=cache)(f) for f in LAMBDAS)
    assert inc(3) == 4
    assert dbl(3) == 6
    assert inc.key(3) != dbl.key(3)


def test_namespace_and_ttl_are_checked_at_decoration() -> None:
    def f() -> None:
        return None

    # No cache given and no call made: the errors come from the decorator itself.
    with pytest.raises(ValueError, match="namespace 'bad name' is not valid"):
        cached(namespace="bad name")(f)
    with pytest.raises(ValueError, match="ttl"):
        cached(ttl=0)(f)
