"""Damaged entries in the shared tiers: a counted miss, never an exception, never code execution.

Damage is done from outside, the way another program or a bad disk would: bytes written with a
plain redis-py client and a plain ``diskcache`` handle on the same directory, and a pickled row
inserted into diskcache's SQLite table with the ``sqlite3`` module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import diskcache.core
import pytest
import redis

from llmcache import Cache, DiskTier, MemoryTier, RedisTier, TierStats

ANSWER = {"text": "the right answer", "tokens": [1, 2, 3]}
PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "damaged entry"}]}


def _header(raw: bytes) -> dict[str, Any]:
    head, _, _ = raw.partition(b"\n")
    header: dict[str, Any] = json.loads(head)
    return header


def _with_header(raw: bytes, **changes: Any) -> bytes:
    _, _, body = raw.partition(b"\n")
    return json.dumps(_header(raw) | changes).encode() + b"\n" + body


def _flip_body_byte(raw: bytes) -> bytes:
    damaged = bytearray(raw)
    damaged[raw.index(b"the right answer")] ^= 0x20  # "t" -> "T": still JSON, wrong checksum
    return bytes(damaged)


# Each takes the good entry and another key's good entry, and returns damaged bytes.
DAMAGE: dict[str, Callable[[bytes, bytes], bytes]] = {
    "random bytes": lambda good, other: random.Random(1234).randbytes(len(good)),
    "empty": lambda good, other: b"",
    "truncated body": lambda good, other: good[:-7],
    "flipped body byte": lambda good, other: _flip_body_byte(good),
    "envelope of another key": lambda good, other: other,
    "other envelope version": lambda good, other: _with_header(
        good, llmcache=_header(good)["llmcache"] + 1
    ),
    "non-JSON header": lambda good, other: b"{'llmcache': 1, oops\n" + good.partition(b"\n")[2],
    "header not an object": lambda good, other: b"[1, 2]\n" + good.partition(b"\n")[2],
    "bad creation time": lambda good, other: _with_header(good, created="yesterday"),
    # float() of it overflows: the header parser must not raise OverflowError.
    "creation time of 400 digits": lambda good, other: _with_header(good, created=10**400),
    "header nested past the recursion limit": lambda good, other: (
        b"[" * 100_000 + b"\n" + good.partition(b"\n")[2]
    ),
}


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _tier(cache: Cache, name: str) -> TierStats:
    return next(t for t in cache.stats().tiers if t.name == name)


def _key_of(cache: Cache) -> str:
    """The key the tiers of ``cache`` hold PAYLOAD's entry under (found without storing)."""
    return cache.fetch(PAYLOAD, lambda: None, no_store=True).info.key


def _reads_back(cache: Cache) -> Any:
    """The entry is good again: a cache that has not seen it yet reads it without upstream."""
    try:
        fetched = cache.fetch(PAYLOAD, lambda: pytest.fail("the entry should be readable"))
        assert fetched.info.hit
        return fetched.value
    finally:
        cache.close()


@pytest.mark.parametrize("kind", list(DAMAGE))
@pytest.mark.parametrize("target", ["disk", "redis", "disk+redis"])
def test_damaged_entry_is_a_counted_miss_and_is_repaired(
    kind: str, target: str, tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    directory = tmp_path / "disk"

    def three_tiers() -> Cache:
        # A fresh memory tier each time: as another process would see the shared tiers.
        return Cache([MemoryTier(), DiskTier(directory), RedisTier(redis_url)])

    writer = three_tiers()
    key = writer.fetch(PAYLOAD, lambda: ANSWER).info.key
    other = writer.fetch({"another": "payload"}, lambda: "other").info.key
    writer.close()
    good, other_raw = r.get(key), r.get(other)
    assert good is not None and other_raw is not None
    damaged = DAMAGE[kind](good, other_raw)
    assert damaged != good

    with diskcache.Cache(str(directory)) as raw_disk:
        assert raw_disk.get(key) == good  # the same envelope bytes in both shared tiers
        if "disk" in target:
            raw_disk.set(key, damaged)
        else:
            raw_disk.delete(key)  # so the read goes on to Redis
    if "redis" in target:
        r.set(key, damaged)

    reader = three_tiers()
    calls: list[int] = []

    def upstream() -> dict[str, Any]:
        calls.append(1)
        return ANSWER

    fetched = reader.fetch(PAYLOAD, upstream)  # no exception, whatever the damage

    assert fetched.value == ANSWER
    disk, red = _tier(reader, "disk"), _tier(reader, "redis")
    assert (disk.errors, red.errors) == (0, 0)
    if target == "disk":
        # The disk copy is a miss; Redis still has a good one and serves it.
        assert (disk.corrupt, red.corrupt) == (1, 0)
        assert (fetched.info.hit, fetched.info.tier, calls) == (True, "redis", [])
    elif target == "redis":
        assert (disk.corrupt, disk.misses, red.corrupt) == (0, 1, 1)
        assert (fetched.info.hit, calls) == (False, [1])
    else:
        assert (disk.corrupt, red.corrupt) == (1, 1)
        assert (fetched.info.hit, calls) == (False, [1])
    assert _tier(reader, "memory").corrupt == 0
    reader.close()

    # Both shared tiers hold a good entry again, each readable on its own.
    assert _reads_back(Cache([MemoryTier(), DiskTier(directory)])) == ANSWER
    assert _reads_back(Cache([MemoryTier(), RedisTier(redis_url)])) == ANSWER


def test_damaged_entry_is_a_counted_miss_async(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    directory = tmp_path / "disk"

    async def main() -> None:
        writer = Cache([MemoryTier(), DiskTier(directory), RedisTier(redis_url)])
        key = (await writer.afetch(PAYLOAD, _async(ANSWER))).info.key
        await writer.aclose()
        with diskcache.Cache(str(directory)) as raw_disk:
            raw_disk.set(key, b"\x00garbage\xff")
        r.set(key, b"garbage\nmore garbage")

        reader = Cache([MemoryTier(), DiskTier(directory), RedisTier(redis_url)])
        fetched = await reader.afetch(PAYLOAD, _async({"recomputed": True}))
        assert (fetched.value, fetched.info.hit) == ({"recomputed": True}, False)
        assert (_tier(reader, "disk").corrupt, _tier(reader, "redis").corrupt) == (1, 1)
        again = Cache([MemoryTier(), DiskTier(directory), RedisTier(redis_url)])
        assert await again.aget(PAYLOAD) == {"recomputed": True}
        await reader.aclose()
        await again.aclose()

    asyncio.run(main())


def _async(value: Any) -> Callable[[], Any]:
    async def upstream() -> Any:
        return value

    return upstream


# -- a pickled row in the diskcache directory ---------------------------------------------------


class _TouchOnUnpickle:
    """Unpickling this creates ``path``: code execution we can see."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _insert_pickled_row(directory: Path, key: str, marker: Path) -> None:
    """Write a row as diskcache itself would for a pickled value (mode 4), with raw SQL."""
    payload = pickle.dumps(_TouchOnUnpickle(marker))
    now = time.time()
    with contextlib.closing(sqlite3.connect(directory / diskcache.core.DBNAME)) as db, db:
        db.execute(
            "INSERT OR REPLACE INTO Cache (key, raw, store_time, expire_time, access_time,"
            " access_count, tag, size, mode, filename, value)"
            " VALUES (?, 1, ?, NULL, ?, 0, NULL, ?, ?, NULL, ?)",
            (key, now, now, len(payload), diskcache.core.MODE_PICKLE, sqlite3.Binary(payload)),
        )


def test_pickled_disk_row_is_never_unpickled(tmp_path: Path) -> None:
    directory = tmp_path / "disk"
    cache = Cache([MemoryTier(), DiskTier(directory)])
    key = _key_of(cache)

    # Control: the very same row in a plain diskcache directory does run code when read.
    control_dir, control_marker = tmp_path / "control", tmp_path / "control-marker"
    diskcache.Cache(str(control_dir)).close()
    _insert_pickled_row(control_dir, key, control_marker)
    with diskcache.Cache(str(control_dir)) as plain:
        plain.get(key)
    assert control_marker.exists(), "the payload should run code when unpickled"

    marker = tmp_path / "marker"
    _insert_pickled_row(directory, key, marker)
    calls: list[int] = []

    def upstream() -> dict[str, Any]:
        calls.append(1)
        return ANSWER

    fetched = cache.fetch(PAYLOAD, upstream)  # no exception

    assert not marker.exists(), "the disk tier unpickled a row"
    assert fetched.info.key == key
    assert (fetched.value, fetched.info.hit, calls) == (ANSWER, False, [1])
    cache.close()
    # The fresh result replaced the pickled row.
    assert _reads_back(Cache([MemoryTier(), DiskTier(directory)])) == ANSWER
    assert not marker.exists()


def _text_row(directory: Path, key: str, r: redis.Redis) -> None:
    with diskcache.Cache(str(directory)) as plain:
        plain.set(key, "a str value, as another program may store")


def _int_row(directory: Path, key: str, r: redis.Redis) -> None:
    with diskcache.Cache(str(directory)) as plain:
        plain.set(key, 12345)


def _redis_list(directory: Path, key: str, r: redis.Redis) -> None:
    r.rpush(key, b"not", b"a", b"string")


FOREIGN: dict[str, tuple[str, Callable[[Path, str, redis.Redis], None]]] = {
    "pickled disk row": (
        "disk",
        lambda directory, key, r: _insert_pickled_row(directory, key, directory / "marker"),
    ),
    "str disk row": ("disk", _text_row),
    "int disk row": ("disk", _int_row),
    "Redis list under the key": ("redis", _redis_list),
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_value_of_a_foreign_type_is_a_corrupt_entry(
    kind: str, tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    name, plant = FOREIGN[kind]
    directory = tmp_path / "disk"
    shared = DiskTier(directory) if name == "disk" else RedisTier(redis_url)
    cache = Cache([MemoryTier(), shared])
    plant(directory, _key_of(cache), r)

    fetched = cache.fetch(PAYLOAD, lambda: ANSWER)  # no exception

    assert (fetched.value, fetched.info.hit) == (ANSWER, False)
    tier = _tier(cache, name)
    # Something that is not one of our entries is a corrupt entry (DESIGN: "a value that fails
    # to decode or verify is a miss, counted"), not a failure of the tier.
    assert (tier.corrupt, tier.errors) == (1, 0)
    cache.close()
    # The fresh result replaced it.
    other = Cache([MemoryTier(), DiskTier(directory) if name == "disk" else RedisTier(redis_url)])
    assert _reads_back(other) == ANSWER


@pytest.mark.parametrize(
    "kind", ["creation time of 400 digits", "header nested past the recursion limit"]
)
@pytest.mark.parametrize("first", ["disk", "redis"])
def test_a_damaged_entry_in_the_first_tier_never_raises_from_any_face(
    kind: str, first: str, tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    # The first tier is read without the general flow: its damage is handled there too.
    def one_tier() -> Cache:
        tier = DiskTier(tmp_path / "disk") if first == "disk" else RedisTier(redis_url)
        return Cache([tier])

    writer = one_tier()
    key = writer.fetch(PAYLOAD, lambda: ANSWER).info.key
    good = writer.tiers[0].get(key)
    assert good is not None
    damaged = DAMAGE[kind](good, good)

    async def afetch(cache: Cache) -> Any:
        return (await cache.afetch(PAYLOAD, _async_answer)).value

    faces: dict[str, Callable[[Cache], Any]] = {
        "get": lambda cache: cache.get(PAYLOAD, "missing"),
        "fetch": lambda cache: cache.fetch(PAYLOAD, lambda: "fresh").value,
        "aget": lambda cache: asyncio.run(cache.aget(PAYLOAD, "missing")),
        "afetch": lambda cache: asyncio.run(afetch(cache)),
    }
    for face, call in faces.items():
        writer.tiers[0].set(key, damaged, None)
        reader = one_tier()
        reader.get({"warm": "the namespace generation"})  # so the fast path is taken
        assert call(reader) in ("missing", "fresh"), face
        (stats,) = reader.stats().tiers
        assert (stats.corrupt, stats.errors, stats.hits) == (1, 0, 0), face
        reader.close()
    writer.close()


async def _async_answer() -> str:
    return "fresh"


def test_a_corrupt_first_tier_entry_is_read_once_by_a_sync_lookup(
    redis_url: str, r: redis.Redis
) -> None:
    writer = Cache([RedisTier(redis_url)])
    key = writer.fetch(PAYLOAD, lambda: ANSWER).info.key
    writer.close()
    r.set(key, b"garbage")
    reader = Cache([RedisTier(redis_url)])
    reader.get({"warm": "the namespace generation"})

    def gets() -> int:
        stats: dict[str, Any] = r.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))

    before = gets()
    assert reader.fetch(PAYLOAD, lambda: "fresh").value == "fresh"
    # One GET for the lookup (the corrupt entry, then deleted); the leader's re-check after
    # its lease is the second, the lease release script's the third. (4 when the lookup read
    # the corrupt entry twice.)
    assert gets() - before == 3
    (stats,) = reader.stats().tiers
    assert (stats.corrupt, stats.misses, stats.errors) == (1, 1, 0)  # the miss: the warm-up
    assert reader.get(PAYLOAD) == "fresh"
    reader.close()
