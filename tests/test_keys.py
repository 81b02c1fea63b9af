"""Canonical encoding and keys: equal payloads → equal keys; any change → a different key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import re
import uuid
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from llmcache.keys import CacheKey, _dumps, canonical_json, make_key, validate_name

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
# Keys that start with NUL are escaped in the canonical form (by design), so not "the same JSON".
plain_json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=10).filter(lambda k: not k.startswith("\x00")), children, max_size=5
        )
    ),
    max_leaves=30,
)


def shuffled(value: Any, rnd: Any) -> Any:
    """Same value, every dict rebuilt with its items in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rnd) for v in value]
    return value


@given(json_values, st.randoms())
def test_equal_payloads_give_equal_keys_whatever_the_dict_order(value: Any, rnd: Any) -> None:
    assert make_key(value) == make_key(shuffled(value, rnd))


def mutations(value: Any) -> list[Any]:
    """Every single-site change of ``value``: each leaf changed, each dict key renamed."""
    out: list[Any] = []
    if isinstance(value, dict):
        for k, v in value.items():
            for changed in mutations(v):
                out.append({**value, k: changed})
            renamed = dict(value)
            renamed[k + "\u00b7"] = renamed.pop(k)
            out.append(renamed)
        out.append({**value, "\u2603extra": 1})
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend([*value[:i], changed, *value[i + 1 :]] for changed in mutations(v))
        out.append([*value, None])
    elif value is None:
        out.append(0)
    elif isinstance(value, bool):
        out.append(not value)
    elif isinstance(value, int | float):
        out.append(value + 1 if abs(value) < 2**52 else value / 2 + 0.5)
    else:
        out.append(value + "x")
    return out


@settings(max_examples=200)
@given(json_values)
def test_any_change_to_an_included_field_changes_the_key(value: Any) -> None:
    base = make_key(value)
    for changed in mutations(value):
        if changed == value and type(changed) is type(value):
            continue  # e.g. 2**53 + 1 == 2**53 as floats: not a change
        assert make_key(changed) != base, (value, changed)


@given(plain_json_values)
def test_canonical_form_is_valid_json_with_the_same_value(value: Any) -> None:
    decoded = json.loads(canonical_json(value))
    assert decoded == value


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"t": 1}, {"t": 1.0}),
        ({"t": 0}, {"t": -0.0}),
        ({"t": 10**17}, {"t": 1e17}),
        ((1, 2), [1, 2]),
        ({"x": [1, {"b": 2, "a": 1}]}, {"x": [1, {"a": 1, "b": 2}]}),
    ],
)
def test_numerically_and_structurally_equal_payloads_share_a_key(a: Any, b: Any) -> None:
    assert canonical_json(a) == canonical_json(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"t": 1}, {"t": 1.5}),
        ({"t": 1}, {"t": "1"}),
        ({"t": True}, {"t": 1}),
        ({"t": None}, {"t": 0}),
        ({1: "a"}, {"1": "a"}),
        ({"\x00bytes": "YQ=="}, b"a"),
        (b"a", "a"),
        ({1, 2}, [1, 2]),
        ("caf\u00e9", "cafe\u0301"),  # NFC vs NFD: tokenized differently, so kept apart
    ],
)
def test_different_payloads_get_different_keys(a: Any, b: Any) -> None:
    assert make_key(a) != make_key(b)


class Color(enum.Enum):
    RED = "red"


class Msg(BaseModel):
    role: str
    content: str


@dataclasses.dataclass
class Point:
    x: int
    y: float


def test_defined_encodings_for_non_json_types() -> None:
    payload = {
        "bytes": b"\x00\xff",
        "model": Msg(role="user", content="hi"),
        "dc": Point(x=1, y=2.5),
        "enum": Color.RED,
        "dec": decimal.Decimal("1.50"),
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "id": uuid.UUID(int=7),
        "path": PurePosixPath("/a/b"),
        "set": frozenset({3, 1, 2}),
    }
    canon = json.loads(canonical_json(payload))
    assert canon["bytes"] == {"\x00bytes": "AP8="}
    assert canon["model"] == {"content": "hi", "role": "user"}
    assert canon["dc"] == {"x": 1, "y": 2.5}
    assert canon["enum"] == "red"
    assert canon["dec"] == {"\x00decimal": "1.5"}
    assert canon["set"] == {"\x00set": [1, 2, 3]}
    # Set order never matters.
    assert make_key({3, 1, 2}) == make_key({1, 2, 3})
    # A pydantic model keys like its JSON dump, so a typed message and a dict agree.
    assert make_key(Msg(role="user", content="hi")) == make_key({"role": "user", "content": "hi"})


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"temperature": math.nan}, "$.temperature"),
        ({"messages": [{"role": "user"}, {"content": math.inf}]}, "$.messages[1].content"),
        ({"a": {"b": object()}}, "$.a.b"),
        ({"d": decimal.Decimal("NaN")}, "$.d"),
        ([1, 2, lambda: None], "$[2]"),
    ],
)
def test_unencodable_values_raise_type_error_naming_the_path(payload: Any, path: str) -> None:
    with pytest.raises(TypeError, match="at " + re.escape(path) + " "):
        canonical_json(payload)


def test_user_keys_starting_with_nul_cannot_collide_with_tags() -> None:
    assert make_key({"\x00bytes": "AP8="}) != make_key(b"\x00\xff")


def test_key_carries_schema_namespace_generation_and_tenant() -> None:
    key = make_key({"q": 1}, namespace="ns1", tenant="acme")
    assert isinstance(key, CacheKey)
    tier_key = key.tier_key(3)
    assert tier_key.startswith("llmcache:v2:ns1:3:acme:")
    assert tier_key.endswith(key.digest)
    assert key.tier_key(4) != tier_key
    assert make_key({"q": 1}, namespace="ns1", tenant="other").tier_key(3) != tier_key
    assert make_key({"q": 1}, namespace="ns2", tenant="acme").tier_key(3) != tier_key


@pytest.mark.parametrize("name", ["", "a:b", "x" * 129, "sp ace", "~gen"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        validate_name("namespace", name)


def test_decimal_keys_are_exact_whatever_the_context() -> None:
    a = decimal.Decimal("1.00000000000000000000000000001")
    b = decimal.Decimal("1.00000000000000000000000000002")
    assert make_key(a) != make_key(b)
    assert make_key(decimal.Decimal("1.50")) == make_key(decimal.Decimal("1.5"))
    with decimal.localcontext(decimal.Context(prec=3)):
        assert make_key(a) == make_key(decimal.Decimal("1.00000000000000000000000000001"))
        assert canonical_json(decimal.Decimal("123456.7")) == b'{"\\u0000decimal":"123456.7"}'


class Pair(NamedTuple):
    a: int
    b: str


class MyList(list[int]):
    pass


def test_namedtuples_and_list_subclasses_encode_as_sequences() -> None:
    assert make_key(Pair(1, "x")) == make_key([1, "x"])
    assert make_key({"v": MyList([1, 2])}) == make_key({"v": [1, 2]})


def test_the_fallback_encoder_writes_what_json_dumps_would() -> None:
    value = {"b": [1, 2.5, "é", "\u2028", None, True], "a": {"z": "\x00", "y": -0.25}}
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert _dumps(value) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # orjson has no form for these: the standard library's encoder writes them.
        ({"n": 2**64}, {"n": 2**64 + 1}),
        ({"n": -(2**63) - 1}, {"n": -(2**63) - 2}),
        ({"s": "\ud800"}, {"s": "\ud801"}),
        ({"s": "\ud800", "n": 1e-7}, {"s": "\ud800", "n": 2e-7}),
    ],
)
def test_values_orjson_cannot_write_still_get_distinct_stable_keys(a: Any, b: Any) -> None:
    assert make_key(a) == make_key(dict(reversed(list(a.items()))))
    assert make_key(a) != make_key(b)


def test_a_big_int_key_is_valid_json_and_equal_to_its_equal_float() -> None:
    assert json.loads(canonical_json({"n": 2**64})) == {"n": 2**64}
    assert make_key({"n": 2**64}) == make_key({"n": float(2**64)})
    assert make_key({"n": 2**64}) != make_key({"n": float(2**64 + 2**12)})


def test_nesting_deeper_than_orjson_allows_still_keys() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    assert json.loads(canonical_json(deep)) == deep
    assert make_key(deep) != make_key([deep])


class Level(enum.Enum):
    ONE = 1


def test_non_string_keys_that_encode_alike_key_the_same_in_any_order() -> None:
    a: dict[Any, str] = {1: "b", Level.ONE: "a"}
    b: dict[Any, str] = {Level.ONE: "a", 1: "b"}
    assert make_key(a) == make_key(b)
    assert make_key(a) != make_key({1: "a", Level.ONE: "a"})
