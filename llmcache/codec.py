"""The stored form of a cache entry: a versioned JSON envelope with a checksum.

An entry is one line of JSON (the header) followed by the value's own JSON bytes::

    {"llmcache":2,"key":"llmcache:v2:...","created":1732380000.25,"ttl":3600,"sum":"9f…"}\\n<body>

The header names the envelope version, the key the entry was written under, its creation time
(Unix seconds) and TTL, and a CRC-32 of the body. Keeping the body apart from the header
lets a reader hand the body straight to ``json.loads`` or ``Model.model_validate_json`` without
decoding it twice. Nothing here ever unpickles or evaluates anything: a value that fails to parse,
carries another envelope version, belongs to another key or fails its checksum is
:class:`CorruptEntry`, which the cache counts and treats as a miss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zlib

__all__ = ["ENVELOPE_VERSION", "CorruptEntry", "Entry", "decode", "encode"]

ENVELOPE_VERSION = 2
# Decoding str directly skips json.loads' encoding sniffing of bytes: this is on every hit.
_loads = json.JSONDecoder().decode


class CorruptEntry(ValueError):
    """A stored value that cannot be trusted; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A decoded entry: the value's JSON bytes and when it was made and expires."""

    body: bytes
    created: float
    ttl: float | None

    def remaining(self, now: float) -> float | None:
        """Seconds left to live at ``now`` (``None`` = no expiry); may be negative.

        Never more than the TTL itself, even for an entry dated in the future (clock skew
        between hosts, or a forged entry).
        """
        return None if self.ttl is None else min(self.ttl, self.created + self.ttl - now)


_FIELDS = frozenset({"llmcache", "key", "created", "ttl", "sum"})
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.@:~\-]*")
_TTL_TYPES = (float, int, type(None))


def _checksum(body: bytes) -> str:
    # CRC-32 catches damage (a torn write, a flipped byte, another program's bytes) as well as
    # a cryptographic hash would, at a third of the cost on every hit; it is no defence
    # against someone who can write to the tier, and nothing here pretends to be.
    return f"{zlib.crc32(body):08x}"


def encode(key: str, body: bytes, *, created: float, ttl: float | None) -> bytes:
    """Wrap ``body`` (JSON bytes) in an envelope for ``key``."""
    checksum = _checksum(body)
    if (
        type(created) is float
        and type(ttl) in _TTL_TYPES
        and math.isfinite(created)
        and (ttl is None or math.isfinite(ttl))
        and _SAFE_KEY.fullmatch(key)
    ):
        # What json.dumps writes for these values (keys are made of name characters, hex and
        # ":"; floats print as repr), without its per-call setup: this runs at every store.
        ttl_text = "null" if ttl is None else repr(ttl)
        return (
            f'{{"llmcache":{ENVELOPE_VERSION},"key":"{key}","created":{created!r},'
            f'"ttl":{ttl_text},"sum":"{checksum}"}}\n'
        ).encode() + body
    header = {
        "llmcache": ENVELOPE_VERSION,
        "key": key,
        "created": created,
        "ttl": ttl,
        "sum": checksum,
    }
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def decode(key: str, raw: bytes) -> Entry:
    """Unwrap an envelope read under ``key``.

    Raises:
        CorruptEntry: the bytes are not an envelope of this version for this key, or the body
            does not match its checksum.
    """
    nl = raw.find(b"\n")
    if nl < 0:
        raise CorruptEntry("no envelope header")
    try:
        created, ttl, checksum = _read_header(key, raw[:nl])
    except CorruptEntry:
        raise
    except Exception as exc:  # a header nested past the recursion limit, a 400-digit time ...
        raise CorruptEntry(f"unreadable envelope header ({type(exc).__name__})") from None
    body = raw[nl + 1 :]
    if checksum != _checksum(body):
        raise CorruptEntry("checksum mismatch")
    return Entry(body=body, created=created, ttl=ttl)


_OPEN = b'{"llmcache":%d,"key":"' % ENVELOPE_VERSION


def _read_header(key: str, head: bytes) -> tuple[float, float | None, object]:
    # Fast path: the exact layout encode() writes (keys never need JSON escapes), read without
    # a JSON parse; this is on every disk and Redis hit. Anything else takes the JSON parser.
    prefix = _OPEN + key.encode() + b'","created":'
    if head.startswith(prefix) and head.endswith(b'"}'):
        created_s, sep1, rest = head[len(prefix) : -2].partition(b',"ttl":')
        ttl_s, sep2, checksum = rest.partition(b',"sum":"')
        if sep1 and sep2:
            try:
                created = float(created_s)
                ttl = None if ttl_s == b"null" else float(ttl_s)
            except ValueError:
                pass
            else:
                return _checked(created, ttl), ttl, checksum.decode("ascii", "replace")
    return _read_header_json(key, head)


def _read_header_json(key: str, head: bytes) -> tuple[float, float | None, object]:
    try:
        header = _loads(head.decode())
    except (ValueError, UnicodeDecodeError):
        raise CorruptEntry("envelope header is not JSON") from None
    if type(header) is not dict:
        raise CorruptEntry("envelope header is not a JSON object")
    if header.get("llmcache") != ENVELOPE_VERSION:
        raise CorruptEntry(f"envelope version {header.get('llmcache')!r} is not {ENVELOPE_VERSION}")
    if header.get("key") != key:
        raise CorruptEntry("entry was written under another key")
    if not header.keys() >= _FIELDS:
        # A missing "ttl" must not read as "never expires" (one flipped bit: "utl").
        raise CorruptEntry("envelope header misses a field")
    created, ttl = header.get("created"), header.get("ttl")
    if not isinstance(created, int | float) or not isinstance(ttl, int | float | None):
        raise CorruptEntry("bad creation time or TTL")
    return _checked(created, ttl), ttl, header.get("sum")


def _checked(created: float, ttl: float | None) -> float:
    # json and float() both accept NaN and Infinity; an entry must not live forever by them.
    if not math.isfinite(created) or (ttl is not None and not math.isfinite(ttl)):
        raise CorruptEntry("creation time or TTL is not a finite number")
    return created
