"""TokenUsage from provider shapes, exact money, and the ledger record's JSON form."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from openai.types import CompletionUsage
from openai.types.responses import ResponseUsage

from accounting import Attribution, CacheOutcome, CallRecord, Cost, Status, TokenUsage
from accounting.money import from_picos, to_picos, usd
from accounting.record import new_record_id


def test_usage_from_an_openai_chat_usage_object() -> None:
    usage = CompletionUsage.model_validate(
        {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 256},
        }
    )
    assert TokenUsage.from_provider(usage) == TokenUsage(
        input=1200, cached_input=1024, cache_write=100, output=300, reasoning=256
    )


def test_usage_from_a_responses_api_usage_object() -> None:
    usage = ResponseUsage.model_validate(
        {
            "input_tokens": 900,
            "input_tokens_details": {"cached_tokens": 512, "cache_write_tokens": 128},
            "output_tokens": 120,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 1020,
        }
    )
    assert TokenUsage.from_provider(usage) == TokenUsage(
        input=900, cached_input=512, cache_write=128, output=120, reasoning=64
    )


def test_usage_from_anthropic_counts_puts_the_cache_inside_input() -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 300,
        "output_tokens": 50,
    }
    assert TokenUsage.from_provider(usage) == TokenUsage(
        input=2310, cached_input=2000, cache_write=300, output=50
    )


def test_usage_from_embeddings_and_deepseek() -> None:
    assert TokenUsage.from_provider({"prompt_tokens": 8, "total_tokens": 8}) == TokenUsage(input=8)
    deepseek = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}
    assert TokenUsage.from_provider(deepseek).cached_input == 64


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        ({"tokens": 3}, "neither prompt_tokens nor input_tokens"),
        ({"prompt_tokens": "12"}, "prompt_tokens must be an int"),
        ({"prompt_tokens": 5, "completion_tokens": -1}, "non-negative"),
        ("12 tokens", "mapping or a pydantic model"),
    ],
)
def test_usage_rejects_what_it_cannot_read(usage: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenUsage.from_provider(usage)


def test_usage_whose_counts_contradict_each_other_is_read_so_they_add_up() -> None:
    # A gateway in front of Gemini: the reasoning tokens are not in completion_tokens.
    gemini = {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 72,
              "completion_tokens_details": {"reasoning_tokens": 60}}  # fmt: skip
    assert TokenUsage.from_provider(gemini) == TokenUsage(input=12, output=60, reasoning=60)
    both = {"prompt_tokens": 12, "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 60}}  # fmt: skip
    assert TokenUsage.from_provider(both) == TokenUsage(input=12, output=65, reasoning=60)
    cached = {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 6}}
    assert TokenUsage.from_provider(cached) == TokenUsage(input=11, cached_input=6)
    # Built by hand, inconsistent counts are still an error.
    with pytest.raises(ValueError, match="exceed input"):
        TokenUsage(input=5, cached_input=6)


def test_money_is_exact_and_refuses_floats() -> None:
    assert usd("0.1") + usd("0.2") == usd("0.3")
    with pytest.raises(TypeError, match="float"):
        usd(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        usd("NaN")
    assert to_picos(usd("0.000000150")) == 150_000
    assert from_picos(150_000) == Decimal("1.5E-7")
    assert from_picos(to_picos(usd("12.5"))) == Decimal("12.5")
    # Sub-pico fractions (a price override with many decimals) round half-even.
    assert to_picos(usd("1.5e-12")) == 2
    assert to_picos(usd("2.5e-12")) == 2
    assert to_picos(usd("-0.4e-12")) == 0


def test_cost_total_and_json_form() -> None:
    cost = Cost(input=usd("0.0015"), cached_input=usd("0.0001"), output=usd("0.006"))
    assert cost.total == Decimal("0.0076")
    data = cost.to_dict()
    assert data["total"] == "0.0076"
    # One gpt-4o-mini input token: written out, never in exponent form.
    assert Cost(input=Decimal("1.5E-7")).to_dict()["input"] == "0.00000015"
    assert Cost.from_dict(json.loads(json.dumps(data))) == cost


def test_record_ids_are_uuid7_and_time_ordered() -> None:
    ids = [new_record_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps)


def test_record_json_round_trip_keeps_every_field() -> None:
    record = CallRecord(
        provider="openai",
        operation="chat",
        model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini-2024-07-18",
        usage=TokenUsage(input=100, cached_input=20, output=10, reasoning=4),
        cost=Cost(input=usd("0.000012"), output=usd("0.000006")),
        cache=CacheOutcome.MISS,
        latency=0.25,
        attribution=Attribution(user="ann", tags={"team": "core"}),
    )
    data = json.loads(json.dumps(record.to_dict()))
    assert CallRecord.from_dict(data) == record
    assert record.spent and record.priced


def test_hit_and_unpriced_records() -> None:
    hit = CallRecord(
        provider="openai",
        model_requested="gpt-4o",
        cost=Cost(),
        cache=CacheOutcome.HIT,
        cache_tier="memory",
        saved=usd("0.0042"),
    )
    assert not hit.spent
    assert CallRecord.from_dict(hit.to_dict()).saved == Decimal("0.0042")
    unpriced = CallRecord(provider="acme", model_requested="acme-1")
    assert not unpriced.priced
    assert unpriced.to_dict()["cost"] is None
    refused = CallRecord(provider="openai", model_requested="gpt-4o", status=Status.REFUSED)
    assert not refused.spent


def test_record_from_dict_names_what_is_wrong() -> None:
    data = CallRecord(provider="openai", model_requested="gpt-4o").to_dict()
    with pytest.raises(ValueError, match="version"):
        CallRecord.from_dict({**data, "v": 99})
    with pytest.raises(ValueError, match=data["id"]):
        CallRecord.from_dict({**data, "status": "lost"})
