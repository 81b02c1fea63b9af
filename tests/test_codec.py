"""The stored envelope: round trip, and every kind of damage is CorruptEntry."""

from __future__ import annotations

import json

import pytest

from llmcache.codec import ENVELOPE_VERSION, CorruptEntry, decode, encode

KEY = "llmcache:v1:default:0:-:abc"


def test_round_trip_keeps_body_creation_time_and_ttl() -> None:
    raw = encode(KEY, b'{"a":1}', created=1000.5, ttl=60)
    entry = decode(KEY, raw)
    assert entry.body == b'{"a":1}'
    assert entry.created == 1000.5
    assert entry.ttl == 60
    assert entry.remaining(1030.5) == 30
    assert decode(KEY, encode(KEY, b"[]", created=1.0, ttl=None)).remaining(1e12) is None


def test_reordered_or_spaced_headers_still_decode() -> None:
    """Other writers may spell the same JSON header differently: the JSON path reads them."""
    good = encode(KEY, b"[1]", created=5.0, ttl=9)
    header = json.loads(good.split(b"\n", 1)[0])
    for spelled in (
        json.dumps(dict(reversed(list(header.items())))),
        json.dumps(header, indent=None, separators=(", ", ": ")),
    ):
        entry = decode(KEY, spelled.encode() + b"\n[1]")
        assert (entry.body, entry.created, entry.ttl) == (b"[1]", 5.0, 9)


def test_header_is_one_json_line() -> None:
    raw = encode(KEY, b'"x"', created=1.0, ttl=None)
    header, body = raw.split(b"\n", 1)
    assert json.loads(header)["llmcache"] == ENVELOPE_VERSION == 2
    assert body == b'"x"'


def damaged() -> list[tuple[str, bytes]]:
    good = encode(KEY, b'{"answer":"42"}', created=1.0, ttl=None)
    header = json.loads(good.split(b"\n", 1)[0])
    return [
        ("empty", b""),
        ("no header", b'{"answer":"42"}'),
        ("garbage", b"\x80\x81\x82\n\xff"),
        ("header not json", b"{not json\n{}"),
        ("header not object", b"[1]\n{}"),
        ("truncated body", good[:-3]),
        ("flipped byte", good[:-2] + b"X" + good[-1:]),
        ("other key", encode("llmcache:v1:default:0:-:other", b"{}", created=1.0, ttl=None)),
        ("other version", json.dumps({**header, "llmcache": 1}).encode() + b'\n{"answer":"42"}'),
        ("bad ttl", json.dumps({**header, "ttl": "x"}).encode() + b'\n{"answer":"42"}'),
        ("infinite ttl", good.replace(b'"ttl":null', b'"ttl":Infinity')),
        ("nan created", good.replace(b'"created":1.0', b'"created":NaN')),
        ("forged fast layout", good.replace(b'"ttl":null', b'"ttl":1e999')),
        ("reordered header", json.dumps(dict(reversed(list(header.items())))).encode() + b"\nX"),
    ]


@pytest.mark.parametrize(("why", "raw"), damaged(), ids=[d[0] for d in damaged()])
def test_damage_is_corrupt_entry(why: str, raw: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode(KEY, raw)


def test_a_header_missing_its_ttl_is_corrupt_not_immortal() -> None:
    raw = encode(KEY, b'"x"', created=1.0, ttl=3600.0)
    flipped = raw.replace(b'"ttl"', b'"utl"', 1)  # one bit: t (0x74) -> u (0x75)
    with pytest.raises(CorruptEntry, match="misses a field"):
        decode(KEY, flipped)
