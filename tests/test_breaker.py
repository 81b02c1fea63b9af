"""The circuit breaker's states, on plain values (no server involved)."""

from __future__ import annotations

import time

import pytest

from llmcache.tiers.breaker import CircuitBreaker


def wait_for_probe(breaker: CircuitBreaker) -> None:
    deadline = time.monotonic() + 5
    while not breaker.allow():
        assert time.monotonic() < deadline, "no probe allowed after the cool-down"
        time.sleep(0.005)


def test_opens_after_threshold_and_skips() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    assert breaker.allow()
    assert not breaker.failure()
    assert not breaker.failure()
    assert breaker.failure()  # the third consecutive failure opens it
    assert breaker.is_open
    assert not breaker.allow()


def test_a_success_in_between_resets_the_count() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=60)
    breaker.failure()
    breaker.success()
    assert not breaker.failure()
    assert breaker.allow()


def test_one_probe_after_cooldown_closes_or_reopens() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.05)
    breaker.failure()
    wait_for_probe(breaker)
    assert not breaker.allow()  # only one probe at a time
    breaker.failure()  # the probe failed: open for another cool-down
    assert not breaker.allow()
    wait_for_probe(breaker)
    assert breaker.success(time.monotonic())  # the probe succeeded: closed
    assert breaker.allow()
    assert not breaker.is_open


def test_a_probe_that_never_reports_back_costs_one_cooldown() -> None:
    # A probe cancelled by its caller, or ended by an error that is neither a success nor a
    # failure, reports nothing: the breaker must let the next probe through a cool-down later.
    breaker = CircuitBreaker(threshold=1, cooldown=0.05)
    breaker.failure()
    for _ in range(3):
        wait_for_probe(breaker)  # let through, then never heard from again
        assert not breaker.allow()  # still one probe per cool-down
    assert breaker.is_open
    assert breaker.success(time.monotonic())


def test_a_late_success_from_before_the_breaker_opened_does_not_close_it() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=60)
    started_long_ago = time.monotonic()
    breaker.failure()
    assert not breaker.success(started_long_ago)
    assert breaker.is_open
    assert not breaker.allow()


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"threshold": 0}, "threshold"), ({"cooldown": 0}, "cooldown")]
)
def test_bad_options(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
