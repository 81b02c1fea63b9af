"""@cached results on a real cache: what may be stored, what a hit may build, what errors say."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

import llmcache.values
from llmcache import Cache, DiskTier, MemoryTier, UncacheableValue, cached
from llmcache.codec import encode as encode_entry

SECRET = "Patient 4411 is HIV positive; start ART"
BUILT: list[str] = []


class Answer(BaseModel):
    text: str


class AnswerV2(BaseModel):  # the same answer after a release that added a required field
    text: str
    score: int


@dataclasses.dataclass
class Point:
    x: int


@dataclasses.dataclass
class Dangerous:
    """Any dataclass imported in the process: building one runs its __post_init__."""

    path: str

    def __post_init__(self) -> None:
        BUILT.append(self.path)


@pytest.fixture
def disk_cache(tmp_path: Path) -> Cache:
    return Cache([DiskTier(tmp_path / "disk")])


def plant(cache: Cache, tier_key: str, body: bytes) -> None:
    """Write a well-formed entry (valid envelope and checksum) as anyone with tier access can."""
    raw = encode_entry(tier_key, body, created=time.time(), ttl=None)
    cache.tiers[0].set(tier_key, raw, None)


# -- 1. stored data never chooses a class ----------------------------------------------------


@pytest.mark.parametrize(("result", "kind"), [(Answer(text="hi"), "Answer"), (Point(x=1), "Point")])
def test_unannotated_models_and_dataclasses_are_refused_with_a_hint(
    disk_cache: Cache, result: Any, kind: str
) -> None:
    @cached(cache=disk_cache, key=lambda: "k")
    def ask():  # type: ignore[no-untyped-def]
        return result

    with pytest.raises(UncacheableValue, match=rf"annotate the return type .*`-> {kind}`"):
        ask()
    assert disk_cache.stats().tiers[0].stores == 0


def test_an_unresolvable_annotation_is_named_in_the_refusal(disk_cache: Cache) -> None:
    @cached(cache=disk_cache)
    def ask() -> Nowhere:  # type: ignore[name-defined]  # noqa: F821
        return Answer(text="hi")

    with pytest.raises(UncacheableValue, match=r"cannot be resolved \(NameError.*`-> Answer`"):
        ask()


def test_stored_data_never_names_the_class_a_hit_builds(
    disk_cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    probe = types.ModuleType("llmcache_probe_module")

    def module_getattr(name: str) -> Any:  # what lazy-import modules do on attribute access
        looked_up.append(name)
        raise AttributeError(name)

    probe.__getattr__ = module_getattr  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, probe.__name__, probe)
    BUILT.clear()

    @cached(cache=disk_cache)
    def ask(q):  # type: ignore[no-untyped-def]
        return {"text": "hi"}

    tier_key = ask.fetch("x").info.key
    bodies = [
        b'{"class":"llmcache_probe_module:Anything","data":{}}',
        b'{"class":"%s:Dangerous","data":{"path":"/etc/passwd"}}' % Dangerous.__module__.encode(),
    ]
    for body in bodies:
        plant(disk_cache, tier_key, body)
        got = ask.fetch("x")
        assert not got.info.hit  # a miss: the fresh result overwrote the planted entry
        assert got.value == {"text": "hi"}
    assert looked_up == []
    assert BUILT == []


def test_annotated_results_come_back_from_a_new_process_view(tmp_path: Path) -> None:
    writer = Cache([MemoryTier(), DiskTier(tmp_path / "d")])

    @cached(cache=writer)
    def ask(q: str) -> Answer:
        return Answer(text=q)

    assert ask("hi") == Answer(text="hi")
    ask._spec._cache = Cache([DiskTier(tmp_path / "d")])
    got = ask.fetch("hi")
    assert got.info.tier == "disk"
    assert type(got.value) is Answer


# -- 5. round trip judged by the annotation --------------------------------------------------


def test_an_int_under_a_float_annotation_is_stored_and_comes_back_a_float(
    disk_cache: Cache,
) -> None:
    @cached(cache=disk_cache)
    def score(q: str) -> float:
        return 0

    assert score("a") == 0
    got = score.fetch("a")
    assert got.info.hit
    assert type(got.value) is float and got.value == 0.0


@pytest.mark.parametrize(
    ("annotation", "result"),
    [
        (list, [Answer(text="hi")]),  # a model would come back as a dict
        (dict, {1: "a"}),  # an int key would come back as a string
        (Answer, AnswerV2(text="hi", score=1)),  # not the annotated class
    ],
)
def test_a_loose_annotation_never_changes_a_result_on_a_hit(
    disk_cache: Cache, annotation: Any, result: Any
) -> None:
    def ask():  # type: ignore[no-untyped-def]
        return result

    ask.__annotations__["return"] = annotation
    f = cached(cache=disk_cache, key=lambda: "k")(ask)
    with pytest.raises(UncacheableValue, match="would come back"):
        f()
    assert disk_cache.stats().tiers[0].stores == 0


def test_unannotated_results_keep_the_strict_check(disk_cache: Cache) -> None:
    @cached(cache=disk_cache)
    def score(q):  # type: ignore[no-untyped-def]
        return (1, 2)

    with pytest.raises(UncacheableValue, match="tuple would come back from the cache as list"):
        score("a")


# -- 7. decoder errors quote nothing stored --------------------------------------------------


def test_a_rejected_entry_leaves_no_stored_text_in_errors_or_logs(
    disk_cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    def make(cls: type[BaseModel]) -> Any:
        # The same function before and after its return type gained a field.
        @cached(cache=disk_cache, key=lambda q: q)
        def ask(q: str) -> cls:  # type: ignore[valid-type]
            return cls(text=SECRET, score=1)

        return ask

    old, new = make(Answer), make(AnswerV2)
    old("diagnosis?")
    body = disk_cache.get_bytes(new.key("diagnosis?"))
    assert body is not None and SECRET.encode() in body
    with pytest.raises(ValueError, match=r"1 validation error\(s\) at score \(missing\)") as err:
        new._spec.codec.decode(body)
    assert "HIV" not in str(err.value)

    caplog.set_level(logging.DEBUG)
    got = new.fetch("diagnosis?")
    assert not got.info.hit and disk_cache.stats().tiers[0].corrupt >= 1
    assert "HIV" not in caplog.text


def test_plain_decoder_rejects_other_layouts_without_quoting_them() -> None:
    codec = llmcache.values.codec_for(lambda: None, "f")
    assert codec.decode(b'{"json":[1,"a"]}') == [1, "a"]
    for body in (b'{"class":"m:C","data":{"t":"HIV"}}', b"HIV", b'["HIV"]'):
        with pytest.raises(ValueError, match="not a plain JSON result") as err:
            codec.decode(body)
        assert "HIV" not in str(err.value)


# -- 8. one TypeAdapter per function ---------------------------------------------------------


def test_a_type_adapter_is_built_once_per_function_not_per_call(
    disk_cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []

    class CountingAdapter(TypeAdapter[Any]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(llmcache.values, "TypeAdapter", CountingAdapter)

    @cached(cache=disk_cache)
    def ask(q: str) -> list[Answer]:
        return [Answer(text=q)]

    @cached(cache=disk_cache)
    def plain(q):  # type: ignore[no-untyped-def]
        return {"q": q}

    for i in range(20):
        for fn in (ask, plain):
            fn(str(i))  # a miss
            fn(str(i))  # a hit
    assert len(built) == 1
