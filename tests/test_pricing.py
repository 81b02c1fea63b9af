"""accounting.pricing: exact costs, exact model lookups, offline genai-prices, configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices import data_snapshot
from genai_prices import types as gp
from genai_prices.data import providers as bundled_providers

from accounting import ConfigError, Cost, TokenUsage, UnknownModelError
from accounting.money import ZERO
from accounting.pricing import (
    GenaiPricesSource,
    ModelPrice,
    OverrideSource,
    PriceBook,
    PriceConfig,
    PriceSource,
    PriceTier,
    cost_of,
    load_price_config,
)

D = Decimal

# genai-prices's own data, read separately from our table, to compare against.
BUNDLED = {p.id: p for p in bundled_providers}


def bundled_model(provider: str, model_id: str) -> gp.ModelInfo:
    return next(m for m in BUNDLED[provider].models if m.id == model_id)


@pytest.fixture(scope="module")
def genai_source() -> GenaiPricesSource:
    source = GenaiPricesSource()
    source.preload()
    return source


@pytest.fixture(scope="module")
def book(genai_source: GenaiPricesSource) -> PriceBook:
    return PriceBook(sources=(genai_source,))


# --- cost_of: exact, by token type -------------------------------------------------------------

CHAT_USAGE = {  # an OpenAI chat.completions usage object, as the API returns it
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 192,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

RESPONSES_USAGE = {  # the Responses API shape
    "input_tokens": 5000,
    "input_tokens_details": {"cached_tokens": 4096},
    "output_tokens": 1200,
    "output_tokens_details": {"reasoning_tokens": 1024},
    "total_tokens": 6200,
}


def test_chat_usage_with_cached_and_reasoning_tokens_prices_exactly() -> None:
    price = ModelPrice(
        input=D("1.10"), cached_input=D("0.275"), output=D("4.40"), reasoning=D("5.00")
    )
    book = PriceBook(overrides={("openai", "my-reasoner"): price}, sources=())
    cost = book.cost(TokenUsage.from_provider(CHAT_USAGE), "my-reasoner", "openai")
    # By hand: (2006-1920)=86 x 1.10 = 94.6; 1920 x 0.275 = 528; (300-192)=108 x 4.40 = 475.2;
    # 192 x 5.00 = 960; each / 1e6.
    assert cost is not None
    assert cost.input == D("0.0000946")
    assert cost.cached_input == D("0.000528")
    assert cost.cache_write == ZERO
    assert cost.output == D("0.0004752")
    assert cost.reasoning == D("0.00096")
    assert cost.total == D("0.0020578")


def test_responses_usage_bills_reasoning_at_the_output_rate_by_default() -> None:
    price = ModelPrice(input=D("2"), cached_input=D("0.5"), output=D("8"))
    cost = cost_of(TokenUsage.from_provider(RESPONSES_USAGE), price)
    # 904 x 2 = 1808; 4096 x 0.5 = 2048; 176 x 8 = 1408; 1024 x 8 = 8192; each / 1e6.
    assert cost == Cost(
        input=D("0.001808"),
        cached_input=D("0.002048"),
        output=D("0.001408"),
        reasoning=D("0.008192"),
    )
    assert cost.total == D("0.013456")


def test_missing_cache_rates_bill_cached_and_written_tokens_at_the_input_rate() -> None:
    usage = TokenUsage(input=1000, cached_input=600, cache_write=300, output=10)
    cost = cost_of(usage, ModelPrice(input=D("3"), output=D("15")))
    assert (cost.input, cost.cached_input, cost.cache_write) == (
        D("0.0003"),
        D("0.0018"),
        D("0.0009"),
    )
    assert cost.total == D("0.00315")  # 1000 x 3 + 10 x 15, nothing free, nothing double


def test_anthropic_usage_with_cache_write() -> None:
    usage = TokenUsage.from_provider(
        {
            "input_tokens": 100,
            "cache_creation_input_tokens": 2000,
            "cache_read_input_tokens": 30000,
            "output_tokens": 500,
        }
    )
    price = ModelPrice(input=D("3"), cached_input=D("0.30"), cache_write=D("3.75"), output=D("15"))
    # 100 x 3 = 300; 30000 x 0.3 = 9000; 2000 x 3.75 = 7500; 500 x 15 = 7500; / 1e6.
    assert cost_of(usage, price).total == D("0.0243")


def test_zero_token_parts_are_exactly_zero() -> None:
    cost = cost_of(TokenUsage(input=10), ModelPrice(input=D("0.15"), output=D("0.60")))
    assert cost.input == D("0.0000015")
    for part in (cost.cached_input, cost.cache_write, cost.output, cost.reasoning):
        assert part == 0
        assert str(part) == "0"


def test_tiers_are_a_cliff_on_the_input_tokens() -> None:
    price = ModelPrice(
        input=D("1.25"),
        output=D("10"),
        tiers=(PriceTier(above_input_tokens=200_000, input=D("2.50"), output=D("15")),),
    )
    below = cost_of(TokenUsage(input=200_000, output=1000), price)
    above = cost_of(TokenUsage(input=200_001, output=1000), price)
    assert below.total == D("0.26")  # 200000 x 1.25 + 1000 x 10
    assert above.total == D("0.5150025")  # 200001 x 2.5 + 1000 x 15: every token at the tier
    assert price.rates_for(200_001).input == D("2.50")
    assert price.rates_for(10) is price


def test_model_price_refuses_floats_negative_rates_and_unordered_tiers() -> None:
    with pytest.raises(TypeError, match=r"ModelPrice\.input.*float"):
        ModelPrice(input=0.15, output=D("1"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ModelPrice\.output"):
        ModelPrice(input=D("1"), output=D("-1"))
    with pytest.raises(ValueError, match="max_output_tokens"):
        ModelPrice(input=D("1"), output=D("1"), max_output_tokens=0)
    tier = PriceTier(above_input_tokens=100, input=D("2"), output=D("2"))
    with pytest.raises(ValueError, match="increasing"):
        ModelPrice(input=D("1"), output=D("1"), tiers=(tier, tier))


# --- genai-prices defaults, compared with genai-prices itself --------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "model_id"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
    ],
)
def test_default_prices_match_genai_prices(
    book: PriceBook, model: str, provider: str, model_id: str
) -> None:
    info = bundled_model(provider, model_id)
    assert isinstance(info.prices, gp.ModelPrice)
    price = book.require(model, provider)

    def base(value: Any) -> Any:
        return value.base if isinstance(value, gp.TieredPrices) else value

    assert price.input == base(info.prices.input_mtok)
    assert price.output == base(info.prices.output_mtok)
    assert price.cached_input == base(info.prices.cache_read_mtok)
    assert price.cache_write == base(info.prices.cache_write_mtok)
    assert price.context_window == info.context_window
    assert price.max_output_tokens is None  # genai-prices does not know output limits

    for usage in (
        TokenUsage(input=3000, cached_input=1024, output=700, reasoning=200),
        TokenUsage(input=250_000, cached_input=30_000, cache_write=2000, output=500),
    ):
        theirs = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.input,
                cache_read_tokens=usage.cached_input,
                cache_write_tokens=usage.cache_write,
                output_tokens=usage.output,
            ),
            model,
            provider_id=provider,
        )
        assert theirs.model.id == model_id
        cost = book.cost(usage, model, provider)
        assert cost is not None
        assert cost.total == theirs.total_price


def test_time_dependent_prices_follow_the_call_time(book: PriceBook) -> None:
    usage = TokenUsage(input=1000, cached_input=200, output=1000)
    totals = set()
    for hour in (3, 20):  # DeepSeek's standard hours, then its off-peak discount
        at = datetime(2026, 5, 1, hour, tzinfo=UTC)
        theirs = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=1000, cache_read_tokens=200, output_tokens=1000),
            "deepseek-chat",
            provider_id="deepseek",
            genai_request_timestamp=at,
        )
        cost = book.cost(usage, "deepseek-chat", "deepseek", at)
        assert cost is not None
        assert cost.total == theirs.total_price
        totals.add(cost.total)
    assert len(totals) == 2


def test_start_date_constraints() -> None:
    early = gp.ModelPrice(input_mtok=D("1"), output_mtok=D("2"))
    late = gp.ModelPrice(input_mtok=D("3"), output_mtok=D("4"))
    model = gp.ModelInfo(
        id="m1",
        match=gp.ClauseEquals(equals="m1"),
        prices=[
            gp.ConditionalPrice(prices=early),
            gp.ConditionalPrice(constraint=gp.StartDateConstraint(date(2026, 3, 1)), prices=late),
        ],
    )
    source = GenaiPricesSource(providers=[provider("acme", [model])])
    before = source.price_for("m1", at=datetime(2026, 2, 28, 23, 59))  # naive: UTC
    after = source.price_for("m1", at=datetime(2026, 3, 1, tzinfo=UTC))
    assert before is not None and after is not None
    assert (before.input, after.input) == (D("1"), D("3"))


# --- exact lookups ------------------------------------------------------------------------------


def test_gpt_4o_mini_is_never_priced_as_gpt_4o(book: PriceBook) -> None:
    mini, full = book.require("gpt-4o-mini"), book.require("gpt-4o")
    assert mini != full
    info = bundled_model("openai", "gpt-4o-mini")
    assert isinstance(info.prices, gp.ModelPrice)
    assert (mini.input, mini.output) == (info.prices.input_mtok, info.prices.output_mtok)


@pytest.mark.parametrize(
    ("made_up", "provider_id"),
    [
        ("gpt-4o-evil", "openai"),
        ("gpt-4o-realtime-evil", "openai"),  # genai-prices: starts_with 'gpt-4o-realtime'
        ("claude-sonnet-4-5-evil", "anthropic"),  # genai-prices: starts_with 'claude-sonnet-4-5'
        ("gpt-4o-2099-01-01", "openai"),  # gpt-4o lists its snapshots; this one is unknown
        ("claude-sonnet-4-5-20251399", "anthropic"),  # not a date
        ("gpt-4o-min", "openai"),
        ("o", "openai"),
    ],
)
def test_made_up_names_are_unpriced(book: PriceBook, made_up: str, provider_id: str) -> None:
    assert book.price_for(made_up) is None
    assert book.price_for(made_up, provider_id) is None
    assert book.cost(TokenUsage(input=10, output=10), made_up, provider_id) is None


def test_genai_prices_fuzzy_matches_are_not_inherited() -> None:
    # The same names *are* matched by genai-prices's own prefix clauses: we must differ.
    assert BUNDLED["openai"].find_model("gpt-4o-realtime-evil") is not None
    assert BUNDLED["anthropic"].find_model("claude-sonnet-4-5-evil") is not None


def test_dated_snapshots(book: PriceBook) -> None:
    gpt_4o = book.require("gpt-4o", "openai")
    assert book.price_for("gpt-4o-2024-08-06", "openai") == gpt_4o  # listed by genai-prices
    assert book.price_for("gpt-4o-2024-05-13", "openai") != gpt_4o  # a snapshot's own price
    sonnet = book.require("claude-sonnet-4-5", "anthropic")
    # Anthropic reports dated ids; the model's data accepts any dated snapshot.
    assert book.price_for("claude-sonnet-4-5-20250929", "anthropic") == sonnet
    assert book.price_for("claude-sonnet-4-5-20250929") == sonnet
    assert book.price_for("claude-sonnet-4-5@20250929", "vertex") is not None


def test_names_and_providers_ignore_case_but_nothing_else(book: PriceBook) -> None:
    assert book.price_for("GPT-4o", "OpenAI") == book.price_for("gpt-4o", "openai")
    assert book.price_for(" gpt-4o", "openai") is None
    assert book.price_for("gpt-4o", "open") is None
    assert book.price_for("gpt-4o", "no-such-provider") is None


def test_provider_none_prefers_the_model_maker(book: PriceBook) -> None:
    assert book.price_for("gpt-4o") == book.price_for("gpt-4o", "openai")
    # Google also serves Claude; with no provider, Anthropic (the maker) prices it.
    assert book.price_for("claude-sonnet-4-5") == book.price_for("claude-sonnet-4-5", "anthropic")
    assert book.price_for("grok-4", "xai") == book.price_for("grok-4", "x-ai") is not None


def provider(pid: str, models: list[gp.ModelInfo], **kwargs: Any) -> gp.Provider:
    return gp.Provider(id=pid, name=pid, api_pattern=f"https://{pid}", models=models, **kwargs)


def model(mid: str, match: Any, input_mtok: str = "1") -> gp.ModelInfo:
    return gp.ModelInfo(
        id=mid, match=match, prices=gp.ModelPrice(input_mtok=D(input_mtok), output_mtok=D("9"))
    )


def test_provider_rules_on_hand_built_data() -> None:
    data = [
        provider("maker", [model("m", gp.ClauseEquals(equals="m"), "1")]),
        provider(
            "host-a",
            [
                model("shared", gp.ClauseEquals(equals="shared"), "2"),
                model("only-a", gp.ClauseEquals(equals="only-a"), "3"),
            ],
            fallback_model_providers=["maker"],
        ),
        provider("host-b", [model("shared", gp.ClauseEquals(equals="shared"), "4")]),
    ]
    source = GenaiPricesSource(providers=data, provider_order=("maker",))

    def rate(name: str, provider_id: str | None = None) -> Decimal | None:
        price = source.price_for(name, provider_id)
        return None if price is None else price.input

    assert rate("m") == D("1")
    assert rate("m", "host-a") == D("1")  # host-a falls back to the maker's models
    assert rate("m", "host-b") is None  # host-b does not
    assert rate("shared", "host-a") == D("2")
    assert rate("shared", "host-b") == D("4")
    assert rate("shared") is None  # two hosts, two prices: ambiguous without a provider
    assert rate("only-a") == D("3")  # a single host lists it


def test_a_listed_name_that_genai_prices_resolves_elsewhere_is_left_out() -> None:
    greedy = model("foo", gp.ClauseStartsWith(starts_with="foo"), "1")
    shadowed = model("foo-bar", gp.ClauseEquals(equals="foo-bar"), "2")
    source = GenaiPricesSource(providers=[provider("p", [greedy, shadowed])])
    found = source.price_for("foo")
    assert found is not None and found.input == D("1")
    assert source.price_for("foo-bar") is None  # the two would disagree: unpriced
    assert source.price_for("foo-baz") is None  # never by prefix


def test_the_exact_table_is_built_once_under_concurrency() -> None:
    release = threading.Event()
    builds = []

    class Counting(GenaiPricesSource):
        def _build(self) -> Any:
            builds.append(1)
            assert release.wait(10)  # keep the first builder inside while the others arrive
            return super()._build()

    source = Counting(providers=[provider("p", [model("m", gp.ClauseEquals(equals="m"))])])
    results: list[ModelPrice | None] = []
    threads = [
        threading.Thread(target=lambda: results.append(source.price_for("m"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(builds) == 1
    assert len(results) == 8 and len({id(r) for r in results}) == 1 and results[0] is not None


# --- overrides, aliases, the book --------------------------------------------------------------


def test_overrides_win_over_genai_prices(genai_source: GenaiPricesSource) -> None:
    mine = ModelPrice(input=D("1"), output=D("2"), max_output_tokens=16384)
    book = PriceBook(overrides={("openai", "gpt-4o"): mine}, sources=(genai_source,))
    assert book.price_for("gpt-4o", "openai") is mine
    assert book.price_for("gpt-4o") is mine  # the only override for this model
    assert book.price_for("gpt-4o", "azure") == genai_source.price_for("gpt-4o", "azure")
    assert book.price_for("gpt-4o-mini", "openai") == genai_source.price_for("gpt-4o-mini")


def test_override_source_lookup_rules() -> None:
    a, b, c = (ModelPrice(input=D(n), output=D(n)) for n in "123")
    source = OverrideSource({("openai", "m"): a, ("azure", "m"): b, (None, "x"): c})
    assert source.price_for("M", "OpenAI") is a
    assert source.price_for("m", "azure") is b
    assert source.price_for("m", "anthropic") is None  # never another provider's price
    assert source.price_for("m") is None  # two providers: ambiguous
    assert source.price_for("x", "anyone") is c
    assert source.price_for("x") is c
    assert isinstance(source, PriceSource)
    with pytest.raises(ValueError, match="twice"):
        OverrideSource({("openai", "m"): a, ("OPENAI", "M"): b})


def test_aliases(genai_source: GenaiPricesSource) -> None:
    book = PriceBook(aliases={"My-Prod-Model": "gpt-4o"}, sources=(genai_source,))
    assert book.price_for("my-prod-model", "openai") == genai_source.price_for("gpt-4o")
    with pytest.raises(ConfigError, match="another alias") as info:
        PriceBook(aliases={"a": "b", "b": "gpt-4o"}, sources=())
    assert info.value.where == "PriceBook(aliases=...).a"
    with pytest.raises(ConfigError, match="itself"):
        PriceBook(aliases={"a": "A"}, sources=())


def test_unpriced_is_none_and_strict_lookup_raises(book: PriceBook) -> None:
    assert book.cost(TokenUsage(input=5, output=5), "no-such-model") is None
    with pytest.raises(UnknownModelError) as info:
        book.require("no-such-model", "openai")
    assert (info.value.model, info.value.provider) == ("no-such-model", "openai")
    assert "no-such-model" in str(info.value)


def test_a_failing_source_is_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def price_for(
            self, model: str, provider: str | None = None, *, at: datetime | None = None
        ) -> ModelPrice | None:
            raise RuntimeError("price service down")

    fallback = OverrideSource({(None, "m"): ModelPrice(input=D("1"), output=D("1"))})
    book = PriceBook(sources=(Broken(), fallback))
    cost = book.cost(TokenUsage(input=1_000_000), "m")
    assert cost is not None and cost.total == D("1")
    assert book.errors == 1
    assert "price source Broken failed" in caplog.text


# --- configuration -----------------------------------------------------------------------------

TOML = """
[prices.openai."gpt-4.1"]
input = 2
cached_input = "0.50"
output = 8.00
max_output_tokens = 32768

[prices."*"."my-finetune"]
input = 0.1234567890123456789
output = "12"
tiers = [{ above_input_tokens = 200000, input = "0.3", output = "24" }]

[aliases]
"prod" = "gpt-4.1"
"""


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(TOML, encoding="utf-8")
    return path


def test_toml_config_is_exact(toml_file: Path) -> None:
    config = load_price_config(toml_file)
    gpt = config.prices[("openai", "gpt-4.1")]
    assert gpt == ModelPrice(
        input=D("2"), cached_input=D("0.5"), output=D("8"), max_output_tokens=32768
    )
    tuned = config.prices[(None, "my-finetune")]
    # A bare TOML decimal is read from its text, never through a float (which would give
    # 0.12345678901234568).
    assert str(tuned.input) == "0.1234567890123456789"
    assert tuned.tiers == (PriceTier(above_input_tokens=200000, input=D("0.3"), output=D("24")),)
    assert config.aliases == {"prod": "gpt-4.1"}
    book = PriceBook.from_config(toml_file, sources=())
    assert book.price_for("PROD", "openai") == gpt
    assert book.price_for("my-finetune", "anything") == tuned


def test_json_config_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        '{"prices": {"*": {"m": {"input": 0.1234567890123456789, "output": 3}}}}', "utf-8"
    )
    price = load_price_config(path).prices[(None, "m")]
    assert str(price.input) == "0.1234567890123456789"


def test_mapping_config_converts_floats_from_their_repr() -> None:
    config = load_price_config({"prices": {"openai": {"m": {"input": 0.15, "output": D("0.6")}}}})
    assert str(config.prices[("openai", "m")].input) == "0.15"
    assert isinstance(config, PriceConfig)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('[prices.openai."gpt-4o"]\ninput = "abc"\noutput = 1', "openai.gpt-4o.input", "'abc'"),
        ('[prices.openai."gpt-4.1"]\ninput = -1\noutput = 1', 'openai."gpt-4.1".input', "-1"),
        ("[prices.openai.m]\ninput = true\noutput = 1", "openai.m.input", "True"),
        ("[prices.openai.m]\ninput = 1", "openai.m.output", "required"),
        ("[prices.openai.m]\ninput = 1\noutput = 1\ncache_input = 1", "m.cache_input", "unknown"),
        (
            "[prices.openai.m]\ninput = 1\noutput = 1\nmax_output_tokens = 0",
            "max_output_tokens",
            "0",
        ),
        ("[prices.openai.m]\ninput = 1\noutput = 1\ntiers = 3", "openai.m.tiers", "3"),
        ("[prices.openai]\nm = 3", "prices.openai.m", "3"),
        ("[pricez.openai]", "pricez", "unknown key"),
        ("[aliases]\na = 1", "aliases.a", "1"),
        ("[aliases]\na = 'b'\nb = 'c'", "aliases.a", "another alias"),
    ],
)
def test_config_errors_name_the_file_the_key_and_the_value(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_price_config(path)
    assert info.value.where.startswith(f"{path}:")
    assert info.value.where.endswith(where)
    assert message in str(info.value)


def test_tiers_out_of_order_are_a_config_error() -> None:
    tiers = [
        {"above_input_tokens": 200, "input": "2", "output": "2"},
        {"above_input_tokens": 100, "input": "3", "output": "3"},
    ]
    with pytest.raises(ConfigError, match="increasing") as info:
        load_price_config({"prices": {"*": {"m": {"input": 1, "output": 1, "tiers": tiers}}}})
    assert info.value.where == '<mapping>:prices."*".m.tiers'


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "[prices\n", "invalid TOML"),
        ("bad.json", '{"prices": NaN}', "NaN"),
        ("bad.json", "{", "invalid JSON"),
        ("prices.yaml", "prices: {}", "use .toml or .json"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_price_config(path)
    assert info.value.where == str(path)
    with pytest.raises(ConfigError, match="cannot read") as missing:
        load_price_config(tmp_path / "missing.toml")
    assert missing.value.where == str(tmp_path / "missing.toml")


# --- offline -----------------------------------------------------------------------------------

OFFLINE = """
import sys, threading

def no_network(event, args):
    if event.startswith("socket."):
        raise RuntimeError("network access: " + event)

sys.addaudithook(no_network)

from accounting import TokenUsage
from accounting.pricing import PriceBook

book = PriceBook()
usage = TokenUsage(input=1000, cached_input=100, output=50)
assert book.cost(usage, "gpt-4o", "openai") is not None
assert book.cost(usage, "claude-sonnet-4-5-20250929") is not None
assert book.cost(usage, "deepseek-chat", "deepseek") is not None
assert book.cost(usage, "no-such-model") is None
assert book.cost(usage, "gpt-4o-2099-01-01") is None
assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]
import socket
try:
    socket.socket()
except RuntimeError:
    print("offline ok")
"""


def test_prices_are_read_offline_without_any_socket(tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env = {
        **os.environ,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "ALL_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
        "NO_PROXY": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # The hook did fire on the deliberate socket at the end: it would have caught any other.
    assert done.stdout.strip() == "offline ok"


def test_the_bundled_snapshot_is_used_even_if_someone_installs_another() -> None:
    fake = data_snapshot.DataSnapshot(
        providers=[provider("openai", [model("gpt-4o", gp.ClauseEquals(equals="gpt-4o"), "999")])],
        from_auto_update=True,
    )
    data_snapshot.set_custom_snapshot(fake)  # what genai_prices.UpdatePrices does after a fetch
    try:
        price = GenaiPricesSource().price_for("gpt-4o", "openai")
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert price is not None and price.input != D("999")


def json_roundtrip(cost: Cost) -> Cost:
    return Cost.from_dict(json.loads(json.dumps(cost.to_dict())))


def test_costs_survive_the_ledger_json_form(book: PriceBook) -> None:
    cost = book.cost(TokenUsage.from_provider(CHAT_USAGE), "gpt-4o-mini", "openai")
    assert cost is not None
    assert json_roundtrip(cost) == cost


@pytest.fixture(autouse=True)
def _no_stray_updater() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]


def test_every_bundled_rate_prices_whole_pico_dollars() -> None:
    # genai-prices's data carries binary-float residues (0.18000000000000002 per 1M tokens);
    # rounded off, every cost priced from the table adds up exactly in shared counters.
    from accounting.money import to_picos  # noqa: PLC0415
    from accounting.pricing.genai import GenaiPricesSource  # noqa: PLC0415

    tables = GenaiPricesSource()._get_tables()
    prices = []
    for entry in tables.exact.values():
        prices += [entry.fixed, *(price for _, price in entry.timed)]
    rates = [
        rate
        for price in prices
        if price is not None
        for level in (price, *price.tiers)
        for rate in (
            level.input,
            level.output,
            level.cached_input,
            level.cache_write,
            level.reasoning,
        )
        if rate is not None
    ]
    assert len(rates) > 1000
    usage = TokenUsage(
        input=1_234_567, cached_input=1_001, cache_write=7, output=3_333, reasoning=9
    )
    for price in prices:
        if price is None:
            continue
        total = cost_of(usage, price.rates_for(usage.input)).total
        assert Decimal(to_picos(total)).scaleb(-12) == total, price
    assert all(rate.as_tuple().exponent >= -6 for rate in rates)  # type: ignore[operator]
