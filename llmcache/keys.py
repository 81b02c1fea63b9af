"""Canonical encoding of request payloads and the cache keys built from them.

A key is the blake2b digest of a canonical JSON form of the payload, so equal payloads give
equal keys whatever their dict order or numeric spelling, and any change to an included value
gives a different key. The canonical form follows RFC 8785 (JSON Canonicalization Scheme) in
spirit: object members sorted, no insignificant white space, UTF-8 output, and numbers compared
by value (``1``, ``1.0`` and ``-0.0 == 0`` encode alike). Strings are *not* Unicode-normalized:
NFC and NFD spellings tokenize differently and may get different answers from a model.

The text is written by orjson (about 20x faster than the standard library's encoder, and this
runs on every cached call). The few values orjson has no form for (integers beyond 64 bits, lone
surrogates) are written by the standard library's encoder instead; such a text always holds a
token orjson never writes, so the two kinds of text cannot collide.

Values JSON has no type for get a defined encoding as a one-member object whose name starts
with a NUL character (``{"\\u0000bytes": "<base64>"}``); a user key that itself starts with NUL
is escaped by doubling it, so the two can never collide. An object whose class has a
``__llmcache_key__(self)`` method is encoded by what that returns (a wrapped OpenAI client
returns its base URL, so a ``@cached`` function that captures one is keyed by the provider).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import orjson
from pydantic import BaseModel

__all__ = ["KEY_SCHEMA", "CacheKey", "canonical_json", "make_key", "validate_name"]

#: Bumped whenever the canonical form or the key layout changes, so old entries never match.
KEY_SCHEMA = 2

_NAME_RE = re.compile(r"[A-Za-z0-9_.@\-]{1,128}")
_TAG = "\x00"
_orjson_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS
_NUL_AFTER_QUOTE = b'"\\u0000'
# For the values orjson has no form for, and for ordering set members and non-string dict keys.
_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


class _Unencodable(Exception):
    """Internal: raised by the fast walk; the slow walk then finds the path for the message."""


def validate_name(kind: str, value: str) -> str:
    """Check a namespace or tenant name and return it.

    Raises:
        ValueError: when the name is empty, too long or has characters outside ``[A-Za-z0-9_.@-]``.
    """
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r} is not valid: use 1 to 128 characters from A-Z a-z 0-9 _ . @ -"
        )
    return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CacheKey:
    """The identity of a cache entry: a digest of the payload, scoped by namespace and tenant.

    The namespace generation is not part of this object: the cache adds it when it builds the
    key a tier sees, so invalidating a namespace never changes a ``CacheKey``.
    """

    namespace: str
    digest: str
    tenant: str | None = None

    def tier_key(self, generation: int | str) -> str:
        """Return the string key tiers store this entry under, for the given generation tag."""
        return (
            f"llmcache:v{KEY_SCHEMA}:{self.namespace}:{generation}:"
            f"{self.tenant or '-'}:{self.digest}"
        )


def canonical_json(payload: object) -> bytes:
    """Encode ``payload`` to its canonical JSON bytes.

    Args:
        payload: JSON values, tuples, bytes, sets, pydantic models, dataclasses, enums, decimals,
            dates, UUIDs and paths, nested in any way.

    Returns:
        UTF-8 bytes; equal payloads give equal bytes.

    Raises:
        TypeError: for NaN, infinity or a value with no defined encoding, naming its path
            (for example ``$.messages[2].content``).
    """
    try:
        # Most payloads are plain JSON already: checking is cheaper than copying. The walk
        # checks values only: orjson refuses keys that are not exactly str, and a key that
        # starts with NUL (to be escaped) shows in its output as "\u0000 after a quote.
        value = _plain_value(payload)
        if value is not None:
            try:
                out = _orjson_dumps(value, option=_SORTED)
            except TypeError:
                pass
            else:
                if _NUL_AFTER_QUOTE not in out:
                    return out
        value = _canon(payload)
        try:
            return _orjson_dumps(value, option=_SORTED)
        except TypeError:  # an int beyond 64 bits, a lone surrogate, or nesting over 255 deep
            text = _dumps(value)
    except _Unencodable:
        path, bad, why = _find_bad(payload, "$")
        why = why or "this value has no defined encoding"
        raise TypeError(
            f"cannot build a cache key: {why} at {path} (value of type {type(bad).__name__})"
        ) from None
    except RecursionError:
        raise TypeError(
            "cannot build a cache key: the payload nests too deeply (or has a cycle)"
        ) from None
    return text.encode("utf-8", "surrogatepass")


def make_key(payload: object, *, namespace: str = "default", tenant: str | None = None) -> CacheKey:
    """Build the :class:`CacheKey` of ``payload`` (see :func:`canonical_json`)."""
    digest = hashlib.blake2b(canonical_json(payload), digest_size=16).hexdigest()
    return CacheKey(namespace=namespace, digest=digest, tenant=tenant)


def _plain_value(o: Any) -> Any:
    """``o`` when orjson alone gives its canonical form, or ``None`` for the full walk.

    A request dict often has integral floats at its top level (``temperature: 1.0``,
    ``top_p: 1.0``): those are turned into ints in a shallow copy here, sparing the full walk
    a copy of the messages would cost. Runs on every cached call.
    """
    if type(o) is not dict:
        return o if _is_plain(o) else None
    out = None
    for k, v in o.items():
        tv = type(v)
        if tv is str or tv is int or tv is bool or v is None:
            continue
        if tv is float:
            if v.is_integer():  # never true of NaN or infinity
                if out is None:
                    out = dict(o)
                out[k] = int(v)
            elif not math.isfinite(v):
                return None
        elif not _is_plain(v):
            return None
    return o if out is None else out


def _is_plain(o: Any) -> bool:
    """Whether no value in ``o`` needs normalizing (keys are checked on orjson's output).

    Leaves are tested inline rather than by a call each: this runs on every cached call.
    """
    t = type(o)
    if t is dict:
        items: Any = o.values()
    elif t is list or t is tuple:
        items = o
    else:
        return _is_plain_leaf(o)
    for v in items:
        tv = type(v)
        if tv is str or tv is int or tv is bool or v is None:
            continue
        if tv is dict:
            # A flat dict (a chat message) is checked here: a call saved per message.
            for w in v.values():
                tw = type(w)
                if not (tw is str or tw is int or tw is bool or w is None or _is_plain(w)):
                    return False
        elif tv is list or tv is tuple:
            if not _is_plain(v):
                return False
        elif not _is_plain_leaf(v):
            return False
    return True


def _is_plain_leaf(o: Any) -> bool:
    t = type(o)
    if t is float:
        # Integral floats encode as ints, and NaN/inf are errors: both go the slow way.
        return math.isfinite(o) and not o.is_integer()
    return t is str or t is int or t is bool or o is None


def _canon(o: Any) -> Any:
    """The canonical value of ``o``: ``o`` itself when nothing in it needs normalizing.

    Containers are copied only from the first member that changes (``top_p: 1.0`` in a long
    request copies one dict, not the messages).
    """
    t = type(o)
    if t is str or t is int or t is bool or o is None:
        return o
    if t is float:
        if not math.isfinite(o):
            raise _Unencodable
        # Equal numbers must encode alike: 1.0 -> 1 (exact conversion, any magnitude).
        return int(o) if o.is_integer() else o
    if t is dict:
        out: Any = None
        for k, v in o.items():
            if type(k) is not str:
                return _canon_pairs(o)
            tv = type(v)
            c = v if tv is str or tv is int or tv is bool or v is None else _canon(v)
            if out is None:
                if c is v and k[:1] != _TAG:
                    continue
                out = {}
                for k0, v0 in o.items():  # the members before this one, unchanged
                    if k0 is k:
                        break
                    out[k0] = v0
            out[_TAG + k if k[:1] == _TAG else k] = c
        return o if out is None else out
    if t is list or t is tuple:
        out = None
        for i, v in enumerate(o):
            tv = type(v)
            c = v if tv is str or tv is int or tv is bool or v is None else _canon(v)
            if out is None:
                if c is v:
                    continue
                out = list(o[:i])
            out.append(c)
        return o if out is None else out
    return _canon_other(o)


def _canon_pairs(o: Mapping[Any, Any]) -> Any:
    # Non-string keys: {1: x} must not collide with {"1": x}, so keep (key, value) pairs.
    pairs = [[_canon(k), _canon(v)] for k, v in o.items()]
    # By the whole pair: two keys may encode alike (an Enum and its value), and the order
    # must still not depend on the dict's.
    pairs.sort(key=_dumps)
    return {_TAG + "map": pairs}


def _canon_other(o: Any) -> Any:
    hook = getattr(type(o), "__llmcache_key__", None)
    if hook is not None:
        # An object that says what identifies it (a wrapped client: its provider's URL).
        return {_TAG + "obj": [type(o).__qualname__, _canon(hook(o))]}
    if isinstance(o, BaseModel):
        return _canon(o.model_dump(mode="json"))
    if isinstance(o, bytes | bytearray | memoryview):
        return {_TAG + "bytes": base64.b64encode(bytes(o)).decode("ascii")}
    if isinstance(o, enum.Enum):
        return _canon(o.value)
    # Subclasses of the JSON scalars (IntEnum and StrEnum were handled above) count by value.
    if isinstance(o, int):
        return int(o)
    if isinstance(o, float):
        return _canon(float(o))
    if isinstance(o, str):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return _canon({f.name: getattr(o, f.name) for f in dataclasses.fields(o)})
    if isinstance(o, Mapping):
        return _canon(dict(o))
    if isinstance(o, list | tuple):  # namedtuples, list subclasses: as the sequence they are
        return _canon(list(o))
    if isinstance(o, set | frozenset):
        items = [_canon(v) for v in o]
        items.sort(key=_dumps)
        return {_TAG + "set": items}
    if isinstance(o, decimal.Decimal):
        if not o.is_finite():
            raise _Unencodable
        # normalize() rounds to the ambient context's precision (28 digits by default): give it
        # a context as precise as the number, so distinct values never share a key and the
        # key never depends on the thread's decimal context.
        exact = decimal.Context(
            prec=max(1, len(o.as_tuple().digits)), Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN
        )
        return {_TAG + "decimal": str(o.normalize(exact))}
    if isinstance(o, _dt.datetime | _dt.date | _dt.time):
        return {_TAG + type(o).__name__: o.isoformat()}
    if isinstance(o, uuid.UUID):
        return {_TAG + "uuid": str(o)}
    if isinstance(o, PurePath):
        return {_TAG + "path": o.as_posix()}
    raise _Unencodable


def _find_bad(o: Any, path: str) -> tuple[str, Any, str]:
    """Slow walk, used only to word the error: the path of the first value that fails."""
    if isinstance(o, float) and not math.isfinite(o):
        return path, o, f"{o!r} has no canonical JSON form"
    if isinstance(o, decimal.Decimal) and not o.is_finite():
        return path, o, f"Decimal {o} has no canonical JSON form"
    if getattr(type(o), "__llmcache_key__", None) is not None:
        o = type(o).__llmcache_key__(o)
    if isinstance(o, BaseModel):
        o = o.model_dump(mode="json")
    elif dataclasses.is_dataclass(o) and not isinstance(o, type):
        o = {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
    if isinstance(o, Mapping):
        for k, v in o.items():
            try:
                _canon(k)
            except _Unencodable:
                return f"{path} (a key)", k, "this dict key has no defined encoding"
            found = _find_bad(v, f"{path}.{k}" if isinstance(k, str) else f"{path}[{k!r}]")
            if found[2]:
                return found
        return path, o, ""
    if isinstance(o, list | tuple | set | frozenset):
        for i, v in enumerate(o):
            found = _find_bad(v, f"{path}[{i}]")
            if found[2]:
                return found
        return path, o, ""
    try:
        _canon(o)
    except _Unencodable:
        return path, o, "this value has no defined encoding"
    return path, o, ""
