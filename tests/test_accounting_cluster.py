"""The Redis ledger and budget stores on a real Redis Cluster: three masters on free ports.

The ledger's keys share one slot through the hash tag of its prefix, and it is given a cluster
client; the budget store keeps every key in the ``{budgets}`` slot and, with ``cluster=True``,
follows that slot to whichever node serves it. A one-node cluster of the module's own is
stopped to see what the stores say when the cluster is gone. Nothing but these servers is
touched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from _cluster import Cluster
from conftest import free_port
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry
from test_budgets import ALICE, BOB, NOW, glob, status_map, user_day
from test_ledger import DAY, T0, hit, spend, variety

from accounting import Attribution, BudgetExceeded, CallRecord, LedgerError
from accounting.budgets import (
    Budgets,
    BudgetStoreError,
    RedisBudgetStore,
    ThresholdCrossed,
)
from accounting.ledger import DIMENSIONS, Ledger, RedisStore, totals_of

D = Decimal
TAGGED = "llmcache:{ledger}:"
NEXT_DAY = "2025-03-15"


@dataclass
class Clusters:
    main: Cluster  # three masters, for the whole module
    spare: Cluster  # one master, stopped by the test that needs a cluster gone


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusters]:
    # Formed at the same time: a cluster node takes 2 s after its start before it reports
    # cluster_state:ok, and a node left without slots past that waits 5 s more (node timeout).
    main = Cluster(tmp_path_factory.mktemp("cluster"))
    spare = Cluster(tmp_path_factory.mktemp("spare"), nodes=1)
    try:
        main.start()
        spare.start()
        with ThreadPoolExecutor(2) as pool:
            formed = [
                pool.submit(main.form, use_cli=True),
                pool.submit(spare.form, use_cli=False),
            ]
            for f in formed:
                f.result()
        yield Clusters(main, spare)
    finally:
        main.stop()
        spare.stop()


@pytest.fixture
def cluster(clusters: Clusters) -> Cluster:
    """The three-master cluster, every node emptied first."""
    clusters.main.flush()
    return clusters.main


def cluster_client(url: str, **options: Any) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(url, **options)


def close_cluster_client(client: redis.RedisCluster) -> None:
    client.close()
    # redis-py 8.1's RedisCluster.close() leaves the nodes' pools open (see RedisTier.close).
    for node in client.get_nodes():
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[redis.RedisCluster]:
    c = cluster_client(cluster.url)
    yield c
    close_cluster_client(c)


def owner(cluster: Cluster, key: str) -> int:
    """The port of the master serving ``key``'s slot."""
    slot = key_slot(key.encode())
    with cluster.nodes()[0] as node:
        for first, last, (_, port, *_), *_ in node.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return int(port)
    raise AssertionError(f"no node serves slot {slot}")


def url_of(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def other_node(cluster: Cluster, key: str) -> int:
    """The port of a master that does NOT serve ``key``'s slot."""
    return next(port for port, _ in cluster.ports if port != owner(cluster, key))


def keys_per_node(cluster: Cluster) -> dict[int, list[bytes]]:
    held = {}
    for (port, _), node in zip(cluster.ports, cluster.nodes(), strict=True):
        with node:
            held[port] = sorted(node.scan_iter(count=1000))
    return held


def assert_all_in_one_slot(cluster: Cluster, tag: str, prefix: str) -> None:
    """Every key is under ``prefix``, in the slot of ``{tag}``, on the master serving it."""
    held = keys_per_node(cluster)
    home = owner(cluster, "{" + tag + "}")
    assert held[home], "no key was written"
    assert all(not keys for port, keys in held.items() if port != home), held
    assert all(k.decode().startswith(prefix) for k in held[home]), held[home]
    assert {key_slot(k) for k in held[home]} == {key_slot(("{" + tag + "}").encode())}


# -- the ledger ---------------------------------------------------------------------------------


def many_records() -> list[CallRecord]:
    """~1,200 records of every kind, one a minute from noon on DAY into the next UTC day."""
    users = ["alice", "bob", "carol", None]
    features = ["chat", "search", None]
    models = ["gpt-4o-mini", "gpt-4o", "o3-mini"]
    made = list(variety())
    for i in range(1200):
        who = Attribution(
            user=users[i % 4], feature=features[i % 3], task=f"t{i % 5}" if i % 2 else None
        )
        model = models[i % 3]
        at = T0 + 10 + i * 60
        if i % 3 == 0:
            made.append(hit(time=at, attribution=who, model_requested=model))
        else:
            made.append(spend(time=at, attribution=who, model_requested=model, model_served=model))
    return made


def test_ledger_on_a_cluster_records_and_totals_match(
    cluster: Cluster, client: redis.RedisCluster
) -> None:
    store = RedisStore(client=client, prefix=TAGGED)
    ledger = Ledger(store, batch_size=64, batch_interval=60)
    records = many_records()
    # Each written at once: the stream holds them in this order.
    ordered = records[:700]
    for r in ordered:
        ledger.append(r, durable=True)
    # Hits batched, spends written at once: order across the two is not kept.
    rest = records[700:]
    for r in rest:
        ledger.append(r)
    assert ledger.flush() is True

    got = list(ledger.records())  # past XRANGE's page of 500
    assert got[:700] == ordered
    assert sorted(r.id for r in got[700:]) == sorted(r.id for r in rest)
    assert {r.id: r for r in got} == {r.id: r for r in records}
    assert len(got) == len(records)
    for day in (DAY, NEXT_DAY):
        for by in DIMENSIONS:
            expected = totals_of(records, day, by=by)
            assert expected, (day, by)
            assert store.totals(day, by=by) == expected, (day, by)
            assert ledger.totals(day, by=by) == expected, (day, by)
    since, until = T0 + 100 * 60, T0 + 200 * 60
    assert list(store.records(since, until)) == [r for r in records if since <= r.time < until]

    # Written again (a replay after a crash): nothing is added.
    store.append_many(records[:50])
    assert store.duplicates == 50
    assert store.totals(DAY, by="all") == totals_of(records, DAY, by="all")
    assert len(list(store.records())) == len(records)

    s = ledger.stats()
    assert (s.failed, s.dropped, s.pending, s.spill_size, s.failing) == (0, 0, 0, 0, False)
    assert_all_in_one_slot(cluster, "ledger", TAGGED)
    ledger.close()
    assert client.ping()  # the client passed in is not closed by the store


@pytest.mark.parametrize("prefix", ["llmcache:ledger:", "acct:", "acct:{}:", "acct:{ledger:"])
def test_ledger_prefix_without_a_hash_tag_is_refused_on_a_cluster(
    cluster: Cluster, client: redis.RedisCluster, prefix: str
) -> None:
    # Keys under it fall in different slots: refused when the store is made, naming it.
    with pytest.raises(ValueError, match="no hash tag") as info:
        RedisStore(client=client, prefix=prefix)
    assert repr(prefix) in str(info.value)
    assert "{ledger}" in str(info.value)
    if prefix == "llmcache:ledger:":
        with pytest.raises(ValueError, match="no hash tag"):
            RedisStore(client=client)  # the default prefix has none
    assert keys_per_node(cluster) == {port: [] for port, _ in cluster.ports}


def test_ledger_hash_tag_anywhere_in_the_prefix_and_plain_clients(
    cluster: Cluster, client: redis.RedisCluster
) -> None:
    # A tag may be anywhere in the prefix; the first {...} is the one Redis hashes.
    store = RedisStore(client=client, prefix="{acct}:ledger:{x}:")
    records = variety()
    store.append_many(records)
    assert {r.id for r in store.records()} == {r.id for r in records}
    assert store.totals(DAY, by="user") == totals_of(records, DAY, by="user")
    assert_all_in_one_slot(cluster, "acct", "{acct}:ledger:{x}:")
    # The check is for cluster clients only: a standalone server needs no tag (nothing is
    # connected to here: making a store touches no network).
    RedisStore(client=redis.Redis(port=free_port()), prefix="acct:").close()
    RedisStore(url_of(free_port()), prefix="acct:").close()
    # A plain client on a node that does not serve the slot: the server's redirection comes
    # back as a LedgerError, which the Ledger handles (the module says: pass a cluster client).
    plain = RedisStore(url_of(other_node(cluster, "{ledger}")), prefix=TAGGED)
    with pytest.raises(LedgerError, match="MovedError"):
        plain.append(spend())
    with pytest.raises(LedgerError, match="MovedError"):
        plain.totals(DAY)
    plain.close()


# -- budgets --------------------------------------------------------------------------------------


@pytest.fixture
def new_store(cluster: Cluster) -> Iterator[Callable[..., RedisBudgetStore]]:
    """Cluster stores made from the URL of a node that does NOT serve ``{budgets}``."""
    made: list[RedisBudgetStore] = []
    url = url_of(other_node(cluster, "{budgets}"))

    def make(**options: Any) -> RedisBudgetStore:
        made.append(RedisBudgetStore(url, cluster=True, **options))
        return made[-1]

    yield make
    for store in made:
        store.close()


def test_budgets_reserve_settle_release_and_status_on_a_cluster(
    cluster: Cluster, new_store: Callable[..., RedisBudgetStore]
) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1"), glob("month", "100")])
    r1 = budgets.reserve(ALICE, D("0.40"), now=NOW)
    r2 = budgets.reserve(ALICE, D("0.30"), now=NOW)
    assert r1.keys == ("user:alice:day:2026-11-23", "global:month:2026-11")
    assert status_map(budgets, ALICE) == {
        "user:alice:day": (D(0), D("0.7"), D("0.3")),
        "global:None:month": (D(0), D("0.7"), D("99.3")),
    }
    budgets.settle(r1, D("0.25"), now=NOW)
    budgets.settle(r1, D("0.25"), now=NOW)  # idempotent
    budgets.release(r2, now=NOW)
    budgets.release(r2, now=NOW)
    expected = {
        "user:alice:day": (D("0.25"), D(0), D("0.75")),
        "global:None:month": (D("0.25"), D(0), D("99.75")),
    }
    assert status_map(budgets, ALICE) == expected
    # Another store (another process) sees the same counters.
    other = Budgets(store=new_store(), limits=[user_day("1"), glob("month", "100")])
    assert status_map(other, ALICE) == expected
    stats = budgets.stats()
    assert (stats.reserved, stats.settled, stats.released) == (2, 1, 1)
    assert (stats.store_errors, stats.unchecked) == (0, 0)
    assert_all_in_one_slot(cluster, "budgets", "accounting:{budgets}:")


def test_budgets_refusal_at_the_limit_names_it_with_the_right_spent(
    new_store: Callable[..., RedisBudgetStore],
) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1"), glob("day", "0.5")])
    held = budgets.reserve(BOB, D("0.30"), now=NOW)
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(ALICE, D("0.25"), now=NOW)
    exc = info.value
    assert (exc.scope, exc.name, exc.period) == ("global", None, "day")
    assert (exc.limit, exc.spent, exc.requested) == (D("0.5"), D("0.3"), D("0.25"))
    # All or nothing: Alice's own counter took nothing.
    assert status_map(budgets, ALICE)["user:alice:day"] == (D(0), D(0), D(1))
    budgets.settle(held, D("0.10"), now=NOW)  # spent counts settled and reserved money
    budgets.reserve(BOB, D("0.15"), now=NOW)
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(BOB, D("0.95"), now=NOW)
    assert (info.value.scope, info.value.name, info.value.spent) == ("user", "bob", D("0.25"))
    budgets.reserve(ALICE, D("0.25"), now=NOW)  # exactly up to the global limit: fits
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve(ALICE, D("0.000000000001"), now=NOW)
    assert (info.value.scope, info.value.spent) == ("global", D("0.5"))
    assert status_map(budgets, None)["global:None:day"] == (D("0.1"), D("0.4"), D(0))
    assert budgets.stats().refused == 3
    assert budgets.stats().store_errors == 0


def test_budgets_expired_reservations_are_reclaimed_on_a_cluster(
    new_store: Callable[..., RedisBudgetStore],
) -> None:
    budgets = Budgets(store=new_store(), limits=[user_day("1")], reservation_ttl=60)
    crashed = budgets.reserve(ALICE, D("0.9"), now=NOW)
    with pytest.raises(BudgetExceeded):
        budgets.reserve(ALICE, D("0.2"), now=NOW + timedelta(seconds=59))
    later = NOW + timedelta(seconds=61)
    budgets.reserve(ALICE, D("0.6"), now=later)
    budgets.settle(crashed, D("0.05"), now=later)  # a late settle still counts
    assert status_map(budgets, ALICE, later) == {"user:alice:day": (D("0.05"), D("0.6"), D("0.35"))}


def test_budgets_thresholds_fire_once_across_stores_on_a_cluster(
    new_store: Callable[..., RedisBudgetStore],
) -> None:
    events: list[ThresholdCrossed] = []
    limits = [user_day("1")]
    thresholds = (D("0.5"), D("0.8"))
    a = Budgets(store=new_store(), limits=limits, thresholds=thresholds, on_threshold=events.append)
    b = Budgets(store=new_store(), limits=limits, thresholds=thresholds, on_threshold=events.append)
    a.settle(a.reserve(ALICE, D("0.6"), now=NOW), D("0.6"), now=NOW)
    b.settle(b.reserve(ALICE, D("0.1"), now=NOW), D("0.1"), now=NOW)
    b.settle(b.reserve(ALICE, D("0.1"), now=NOW), D("0.1"), now=NOW)
    a.settle(a.reserve(ALICE, D("0.1"), now=NOW), D("0.1"), now=NOW)
    assert [(e.name, e.period_key, e.threshold, e.spent) for e in events] == [
        ("alice", "day:2026-11-23", D("0.5"), D("0.6")),
        ("alice", "day:2026-11-23", D("0.8"), D("0.8")),
    ]
    tomorrow = NOW + timedelta(days=1)
    b.settle(b.reserve(ALICE, D("0.5"), now=tomorrow), D("0.5"), now=tomorrow)
    assert [e.period_key for e in events[2:]] == ["day:2026-11-24"]
    assert a.stats().alerts + b.stats().alerts == 3


@dataclass
class Spender:
    """One thread's reservations: granted amounts, in order, and what it did with them."""

    user: Attribution
    granted: list[Any] = field(default_factory=list)
    kept: Decimal = Decimal(0)  # settled, or still reserved
    refusals: list[BudgetExceeded] = field(default_factory=list)


def test_budgets_threads_on_three_stores_never_overspend(
    new_store: Callable[..., RedisBudgetStore],
) -> None:
    # Two users of a $0.60 day limit each under a $1 global one: 24 threads on 3 stores (3
    # processes' worth of clients) reserve $0.01 at a time until refused, twice.
    limits = [user_day("0.6"), glob("day", "1")]
    budgets = [Budgets(store=new_store(), limits=limits) for _ in range(3)]
    step = D("0.01")
    spenders = [Spender(ALICE if i % 2 else BOB) for i in range(24)]
    gate = threading.Barrier(len(spenders))
    errors: list[BaseException] = []

    def until_refused(b: Budgets, s: Spender) -> list[Any]:
        got = []
        for _ in range(200):  # $2 in all: far past any limit
            try:
                got.append(b.reserve(s.user, step, now=NOW))
            except BudgetExceeded as exc:
                s.refusals.append(exc)
                return got
        raise AssertionError(f"{s.user.user} was never refused")

    def work(i: int) -> None:
        b, s = budgets[i % 3], spenders[i]
        try:
            gate.wait()
            s.granted = until_refused(b, s)
            gate.wait()
            # Give back every other reservation, settle the others for less than reserved.
            for n, r in enumerate(s.granted):
                if n % 2:
                    b.release(r, now=NOW)
                else:
                    b.settle(r, D("0.007"), now=NOW)
                    s.kept += D("0.007")
            gate.wait()
            again = until_refused(b, s)
            s.granted += again
            s.kept += step * len(again)
        except BaseException as exc:
            errors.append(exc)
            gate.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(spenders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)

    status = status_map(budgets[0], None)["global:None:day"]
    per_user = {
        who: status_map(budgets[1], Attribution(user=who))[f"user:{who}:day"]
        for who in ("alice", "bob")
    }
    spent, reserved, remaining = status
    # Never past a limit; the global counter is exactly the users' (all or nothing) and
    # exactly what the threads hold.
    assert spent + reserved <= D(1)
    assert all(s + r <= D("0.6") for s, r, _ in per_user.values())
    assert spent == sum(v[0] for v in per_user.values())
    assert reserved == sum(v[1] for v in per_user.values())
    assert spent + reserved == sum(s.kept for s in spenders)
    # Nothing was left unused: each user, or the global limit, has less than a step left.
    assert remaining < step or all(v[2] < step for v in per_user.values())
    for b in budgets:
        st = b.stats()
        assert (st.store_errors, st.unchecked) == (0, 0)  # every call was really checked
    assert all(len(s.refusals) == 2 for s in spenders)  # each thread, once per round
    assert all(exc.spent + exc.requested > exc.limit for s in spenders for exc in s.refusals)


def test_budget_store_without_cluster_works_only_on_the_node_serving_the_slot(
    cluster: Cluster,
) -> None:
    # The documented promise: every key in one slot, so the scripts are valid on the node that
    # serves it, even through a plain client.
    home = RedisBudgetStore(url_of(owner(cluster, "{budgets}")))
    budgets = Budgets(store=home, limits=[user_day("1")])
    budgets.settle(budgets.reserve(ALICE, D("0.4"), now=NOW), D("0.4"), now=NOW)
    assert status_map(budgets, ALICE) == {"user:alice:day": (D("0.4"), D(0), D("0.6"))}
    home.close()
    # Any other node redirects: a store error that says what to do; the caller's policy then
    # decides (refused here, rather than let through unchecked).
    away = RedisBudgetStore(url_of(other_node(cluster, "{budgets}")))
    strict = Budgets(store=away, limits=[user_day("1")], on_store_error="refuse")
    with pytest.raises(BudgetStoreError, match=r"MovedError.*pass cluster=True"):
        strict.reserve(ALICE, D("0.1"), now=NOW)
    assert strict.stats().store_errors == 1
    away.close()
    with pytest.raises(ValueError, match="cluster=True needs a redis://"):
        RedisBudgetStore("unix:///tmp/redis.sock", cluster=True)


# -- the cluster is gone --------------------------------------------------------------------------


def test_a_cluster_that_is_gone_is_a_store_error_for_both_stores(clusters: Clusters) -> None:
    spare = clusters.spare
    client = cluster_client(
        spare.url, socket_timeout=0.25, socket_connect_timeout=0.25, retry=Retry(NoBackoff(), 0)
    )
    store = RedisStore(client=client, prefix=TAGGED)
    ledger = Ledger(store)
    budget_store = RedisBudgetStore(spare.url, cluster=True)
    allow = Budgets(store=budget_store, limits=[user_day("1")])
    refuse = Budgets(store=budget_store, limits=[user_day("1")], on_store_error="refuse")
    record = spend()
    ledger.append(record)
    reservation = allow.reserve(ALICE, D("0.5"), now=NOW)  # the cluster client connects here
    assert [r.id for r in ledger.records()] == [record.id]
    assert allow.stats().reserved == 1

    spare.stop()
    started = time.monotonic()
    # Reads that a report makes raise the LedgerError they document, not redis-py's own
    # RedisClusterException (which is not a RedisError).
    with pytest.raises(LedgerError, match=r"RedisClusterException|ConnectionError"):
        list(store.records())
    with pytest.raises(LedgerError, match=r"RedisClusterException|ConnectionError"):
        store.totals(DAY)
    with pytest.raises(LedgerError):
        ledger.totals(DAY)
    # A write is kept in the ledger's spill, never raised.
    late = spend(time=T0 + 1)
    ledger.append(late)
    assert ledger.stats().failing
    assert ledger.stats().spill_size >= 1
    # The budget store fails as a store error, and each policy applies.
    with pytest.raises(BudgetStoreError, match=r"RedisClusterException|ConnectionError"):
        budget_store.read(["user:alice:day:2026-11-23"])
    with pytest.raises(BudgetStoreError):
        refuse.reserve(ALICE, D("0.1"), now=NOW)
    allow.reserve(ALICE, D("0.1"), now=NOW)
    allow.settle(reservation, D("0.5"), now=NOW)
    assert allow.stats().unchecked == 1
    assert time.monotonic() - started < 5  # nothing hung
    ledger.close()
    close_cluster_client(client)
    allow.close()
    refuse.close()
    budget_store.close()


def test_a_cluster_never_reached_is_a_store_error() -> None:
    # Construction touches no network; the first call finds nothing and says so.
    store = RedisBudgetStore(url_of(free_port()), cluster=True)
    assert "cluster=True" in repr(store)
    budgets = Budgets(store=store, limits=[user_day("1")], on_store_error="refuse")
    with pytest.raises(BudgetStoreError, match=r"RedisClusterException|ConnectionError"):
        budgets.reserve(ALICE, D("0.1"), now=NOW)
    store.close()
