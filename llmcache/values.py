"""Turning a function's return value into JSON bytes and back, keeping its type.

Two ways, chosen per function:

* **The return annotation** (``-> Answer``, ``-> list[Point]``, ``-> tuple[int, str]``): a
  pydantic ``TypeAdapter`` of it, built once per function, serializes and validates, so anything
  pydantic understands (models, dataclasses, TypedDicts, tuples, datetimes …) comes back as the
  same type.
* **No annotation** (or ``-> Any``, ``-> object``): plain JSON values only. A pydantic model or
  dataclass result is refused and the message asks for the annotation: stored data never names
  the class to build on a hit (a class name read from a shared tier would let whoever can write
  that tier choose which class is constructed, with its validators and ``__post_init__``).

Either way a result is checked to survive the round trip: a value that would come back as
something else (a tuple as a list, a model as a dict, a set, an arbitrary object) is refused with
:class:`~llmcache.UncacheableValue` at the call that produced it, never silently pickled or changed.

Decoders raise errors that carry no part of the stored value (completion text must never reach a
log through an exception message).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from llmcache._exceptions import UncacheableValue
from llmcache.cache import json_body, json_value

__all__ = ["ValueCodec", "codec_for"]

# Annotations that say nothing about the type: the result is judged as plain JSON.
_UNTYPED: tuple[Any, ...] = (Any, object, None, type(None))


@dataclasses.dataclass(frozen=True, slots=True)
class ValueCodec:
    """Encode a result to JSON bytes; decode bytes back to a result of the same type."""

    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


def codec_for(fn: Callable[..., Any], name: str) -> ValueCodec:
    """Pick the codec for ``fn``'s results from its return annotation (see module doc).

    Raises:
        UncacheableValue: the return annotation has no JSON form.
    """
    unresolved: str | None = None
    try:
        # String annotations (PEP 563) may name classes local to the enclosing function; the
        # function's closure holds those it uses.
        local_names = inspect.getclosurevars(fn).nonlocals
        hint = typing.get_type_hints(fn, localns=local_names).get("return", Any)
    except Exception as exc:  # an unresolvable forward reference: plain JSON only
        hint, unresolved = Any, f"{type(exc).__name__}: {exc}"
    if typing.get_origin(hint) in (typing.Awaitable, typing.Coroutine):
        hint = typing.get_args(hint)[-1]
    if any(hint is t for t in _UNTYPED):
        return ValueCodec(encode=lambda v: _encode_plain(v, name, unresolved), decode=_decode_plain)
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(hint)
    except Exception as exc:
        raise UncacheableValue(
            f"@cached {name}: its return type {hint!r} has no JSON form ({exc}); "
            "return JSON values, pydantic models or dataclasses"
        ) from None
    return _typed_codec(adapter, hint, name)


def _typed_codec(adapter: TypeAdapter[Any], hint: Any, name: str) -> ValueCodec:
    def encode(value: Any) -> bytes:
        try:
            # warnings="error": a value that does not fit the annotation is refused, never
            # stored in a form that pydantic merely warns about.
            body = adapter.dump_json(value, warnings="error")
            back = adapter.validate_json(body)
        except ValidationError as exc:
            raise UncacheableValue(
                f"@cached {name}: its result of type {type(value).__name__} does not survive "
                f"the round trip through its return type {hint!r}: {_summary(exc)}"
            ) from None
        except Exception as exc:
            raise UncacheableValue(
                f"@cached {name}: cannot store its result of type {type(value).__name__} as "
                f"{hint!r}: {_safe_message(exc)}"
            ) from None
        # Equal by Python (so `-> float` returning 0 is fine) and by the adapter (what a hit
        # re-serializes is what was stored); a model stored as a dict under `-> list`, or dict
        # keys turned into strings, is equal by neither and refused.
        if back != value or adapter.dump_json(back) != body:
            raise UncacheableValue(
                f"@cached {name}: its result of type {type(value).__name__} would come back "
                f"from the cache as a different value of type {type(back).__name__} under its "
                f"return type {hint!r}; annotate the exact type it returns"
            )
        return body

    def decode(body: bytes) -> Any:
        try:
            return adapter.validate_json(body)
        except ValidationError as exc:
            # pydantic's own message quotes the stored input (completion text): not this one.
            raise ValueError(f"stored value does not fit {hint!r}: {_summary(exc)}") from None

    return ValueCodec(encode=encode, decode=decode)


def _encode_plain(value: Any, name: str, unresolved: str | None) -> bytes:
    if isinstance(value, BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        cls = type(value)
        kind = "pydantic model" if isinstance(value, BaseModel) else "dataclass"
        why = (
            f"its return annotation cannot be resolved ({unresolved})"
            if unresolved
            else "it has no return annotation"
        )
        raise UncacheableValue(
            f"@cached {name}: it returned a {kind} {cls.__qualname__} but {why}; annotate the "
            f"return type (for example `-> {cls.__name__}`) so a hit can rebuild it"
        )
    try:
        body = b'{"json":' + json_body(value) + b"}"
    except UncacheableValue as exc:
        raise UncacheableValue(
            f"@cached {name}: {exc}; pydantic models, dataclasses and tuples need a return "
            "annotation"
        ) from None
    back = _decode_plain(body)
    if type(back) is not type(value) or back != value:
        raise UncacheableValue(
            f"@cached {name}: its result of type {type(value).__name__} would come back from the "
            f"cache as {type(back).__name__}; return JSON values, or annotate the return type "
            "so it can be rebuilt"
        )
    return body


def _decode_plain(body: bytes) -> Any:
    # Anything but {"json": value} (an entry from an older layout that named a class, or bytes
    # that are not JSON) is a miss; the message carries nothing of the stored value.
    try:
        doc = json_value(body)
    except ValueError:
        doc = None
    if type(doc) is not dict or len(doc) != 1 or "json" not in doc:
        raise ValueError("stored value is not a plain JSON result")
    return doc["json"]


def _summary(exc: ValidationError) -> str:
    """The count, places and kinds of a validation error, without the input values."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    places = [f"{_loc(e['loc'])} ({e['type']})" for e in errors[:5]]
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    return f"{exc.error_count()} validation error(s) at {', '.join(places)}{more}"


def _loc(loc: tuple[int | str, ...]) -> str:
    # Field names are identifiers; any other string in a location may be a dict key taken from
    # the stored value itself, so it is not shown.
    parts = [str(p) if isinstance(p, int) or p.isidentifier() else "<key>" for p in loc]
    return ".".join(parts) or "<value>"


def _safe_message(exc: Exception) -> str:
    text = str(exc)
    # pydantic-core quotes offending values only as `input_value=…`.
    return type(exc).__name__ if "input_value" in text else f"{type(exc).__name__}: {text}"
