"""accounting.tokens: real tiktoken, offline, with OpenAI's published counting rules.

The chat and tool examples and their counts are those of OpenAI's cookbook notebook
"How to count tokens with tiktoken" (openai/openai-cookbook,
examples/How_to_count_tokens_with_tiktoken.ipynb, sections 6 and 7), where each count printed by
the notebook's function is printed beside the same count reported by the OpenAI API.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs
import pytest
import tiktoken
from conftest import free_port
from openai.types.chat import ChatCompletionMessage
from tiktoken_ext import openai_public  # type: ignore[import-untyped]

from accounting import _bpe
from accounting._exceptions import ConfigError, UnknownModelError
from accounting.tokens import (
    TokenCounter,
    TokenEstimate,
    _default_counter,
    count_message_tokens,
    count_tokens,
    estimate_prompt_tokens,
)

# Cookbook section 6: "129 prompt tokens counted by the OpenAI API" for gpt-3.5-turbo, gpt-4-0613
# and gpt-4; "124" for gpt-4o and gpt-4o-mini.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
COOKBOOK_COUNTS = {
    "gpt-3.5-turbo": 129,
    "gpt-4-0613": 129,
    "gpt-4": 129,
    "gpt-4o": 124,
    "gpt-4o-mini": 124,
}

# Cookbook section 7: "105 prompt tokens counted by the OpenAI API" for gpt-3.5-turbo and gpt-4,
# "101" for gpt-4o and gpt-4o-mini.
COOKBOOK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
COOKBOOK_TOOL_COUNTS = {"gpt-3.5-turbo": 105, "gpt-4": 105, "gpt-4o": 101, "gpt-4o-mini": 101}

LONG_SYSTEM_PROMPT = "You are a meticulous assistant; answer in plain English. " * 60


@pytest.fixture(scope="module", autouse=True)
def _private_bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """If this module loads the process-wide encodings first, they are seeded in a temp dir."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TIKTOKEN_CACHE_DIR", raising=False)
        mp.delenv("DATA_GYM_CACHE_DIR", raising=False)
        mp.setenv("LLMCACHE_DIR", str(tmp_path_factory.mktemp("llmcache")))
        yield


def tokens(text: str, encoding: str) -> int:
    """Reference count straight from the encoding."""
    return len(_bpe.get_encoding(encoding).encode_ordinary(text))


def dead_proxy_env(mp: pytest.MonkeyPatch) -> None:
    """Any HTTP request fails at once instead of reaching the internet."""
    dead = f"http://127.0.0.1:{free_port()}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        mp.setenv(var, dead)
    for var in ("NO_PROXY", "no_proxy"):
        mp.delenv(var, raising=False)


# -- OpenAI's published examples --------------------------------------------------------------


@pytest.mark.parametrize(("model", "expected"), COOKBOOK_COUNTS.items())
def test_cookbook_chat_example_counts(model: str, expected: int) -> None:
    assert count_message_tokens(COOKBOOK_MESSAGES, model) == expected
    estimate = estimate_prompt_tokens(COOKBOOK_MESSAGES, model)
    assert estimate.tokens == expected
    assert estimate.estimated is False


@pytest.mark.parametrize(("model", "expected"), COOKBOOK_TOOL_COUNTS.items())
def test_cookbook_tools_example_counts(model: str, expected: int) -> None:
    estimate = estimate_prompt_tokens(COOKBOOK_TOOL_MESSAGES, model, tools=COOKBOOK_TOOLS)
    assert estimate.tokens == expected
    # The tool rule is an approximation, so the count is labelled as one even when it matches.
    assert estimate.estimated is True


def test_cookbook_string_examples() -> None:
    # Cookbook sections 3 and 5: "tiktoken is great!" is 6 cl100k_base tokens,
    # "antidisestablishmentarianism" 6, "2 + 2 = 4" 7.
    assert count_tokens("tiktoken is great!", "gpt-3.5-turbo") == 6
    assert count_tokens("antidisestablishmentarianism", "gpt-4") == 6
    assert count_tokens("2 + 2 = 4", "gpt-4") == 7
    assert _bpe.get_encoding("cl100k_base").encode_ordinary("tiktoken is great!") == [
        83,
        1609,
        5963,
        374,
        2294,
        0,
    ]


def test_gpt_35_turbo_0301_rule_is_matched_exactly() -> None:
    # Cookbook (2023): gpt-3.5-turbo-0301 spent 4 tokens per message and -1 for a name.
    # The example has 6 messages, 4 of them named: 129 + 6 * (4 - 3) + 4 * (-1 - 1) = 127.
    assert count_message_tokens(COOKBOOK_MESSAGES, "gpt-3.5-turbo-0301") == 127
    assert count_message_tokens(COOKBOOK_MESSAGES, "gpt-35-turbo-0301") == 127
    assert count_message_tokens(COOKBOOK_MESSAGES, "gpt-3.5-turbo-0125") == 129


def test_empty_conversation_is_the_reply_priming() -> None:
    assert count_message_tokens([], "gpt-4o") == 3


# -- model to encoding: tiktoken's mapping ----------------------------------------------------

O200K_MODELS = [
    "gpt-4o",
    "gpt-4o-2024-08-06",
    "gpt-4o-mini",
    "chatgpt-4o-latest",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5",
    "gpt-5-mini",
    "o1",
    "o3",
    "o4-mini",
]
CL100K_MODELS = [
    "gpt-4",
    "gpt-4-0613",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-35-turbo",
    "text-embedding-3-small",
]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [(m, "o200k_base") for m in O200K_MODELS] + [(m, "cl100k_base") for m in CL100K_MODELS],
)
def test_models_use_tiktokens_mapping(model: str, encoding: str) -> None:
    assert tiktoken.encoding_name_for_model(model) == encoding
    text = "Ünïcode, emoji 🎉 and code: def f(x): return x**2  # 42"
    assert count_tokens(text, model) == tokens(text, encoding)
    estimate = estimate_prompt_tokens([{"role": "user", "content": text}], model)
    expected = 3 + 3 + tokens("user", encoding) + tokens(text, encoding)
    assert estimate == TokenEstimate(tokens=expected, estimated=False, encoding=encoding)


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5", "gemini-2.5-pro", "openai/gpt-4o", "GPT-4O", "my-finetune"]
)
def test_unknown_models_raise_for_counts_and_are_estimated_with_o200k(model: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        count_tokens("hello", model)
    assert info.value.model == model
    assert "estimate_prompt_tokens" in str(info.value)
    with pytest.raises(UnknownModelError):
        count_message_tokens(COOKBOOK_MESSAGES, model)
    estimate = estimate_prompt_tokens(COOKBOOK_MESSAGES, model)
    assert estimate == TokenEstimate(tokens=124, estimated=True, encoding="o200k_base")


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("text-davinci-003", "p50k_base"),
        ("davinci", "r50k_base"),
        ("gpt2", "gpt2"),
        ("gpt-oss-120b", "o200k_harmony"),
    ],
)
def test_models_whose_encoding_is_not_offline_raise(model: str, encoding: str) -> None:
    with pytest.raises(UnknownModelError, match=encoding) as info:
        count_tokens("hello", model)
    assert info.value.model == model
    estimate = estimate_prompt_tokens([{"role": "user", "content": "hello"}], model)
    assert estimate.estimated is True
    assert estimate.encoding == "o200k_base"


def test_special_token_text_counts_as_plain_text() -> None:
    # The API does not parse special tokens out of message text; neither do we (and
    # tiktoken's encode() would raise on it).
    text = "<|endoftext|> is not special here"
    assert count_tokens(text, "gpt-4o") == tokens(text, "o200k_base") > 1


def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError):
        count_tokens(b"bytes", "gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        count_tokens("text", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        count_message_tokens("hello", "gpt-4o")
    with pytest.raises(TypeError):
        count_message_tokens({"role": "user", "content": "hi"}, "gpt-4o")
    with pytest.raises(TypeError):
        count_message_tokens([42], "gpt-4o")


# -- message shapes beyond the cookbook -------------------------------------------------------


def test_text_parts_are_counted_and_labelled_estimated() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
        },
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't do that."}]},
    ]
    expected = (
        3
        + (3 + tokens("user", "o200k_base") + tokens("Hello", "o200k_base"))
        + tokens(" world", "o200k_base")
        + (3 + tokens("assistant", "o200k_base") + tokens("I can't do that.", "o200k_base"))
    )
    assert count_message_tokens(messages, "gpt-4o") == expected
    assert estimate_prompt_tokens(messages, "gpt-4o") == TokenEstimate(
        tokens=expected, estimated=True, encoding="o200k_base"
    )


def test_image_parts_are_refused_by_counts_and_estimated_by_the_vision_rule() -> None:
    text_only = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}]
    base = count_message_tokens(text_only, "gpt-4o")

    def with_image(detail: str | None) -> list[dict[str, Any]]:
        image: dict[str, Any] = {"url": "https://example.com/cat.png"}
        if detail is not None:
            image["detail"] = detail
        parts = [*text_only[0]["content"], {"type": "image_url", "image_url": image}]
        return [{"role": "user", "content": parts}]

    with pytest.raises(ValueError, match="image_url"):
        count_message_tokens(with_image(None), "gpt-4o")
    # OpenAI vision guide: 85 tokens at detail "low"; at most 85 + 8 * 170 otherwise.
    assert estimate_prompt_tokens(with_image("low"), "gpt-4o").tokens == base + 85
    assert estimate_prompt_tokens(with_image("high"), "gpt-4o").tokens == base + 1445
    assert estimate_prompt_tokens(with_image(None), "gpt-4o") == TokenEstimate(
        tokens=base + 1445, estimated=True, encoding="o200k_base"
    )


def test_other_non_text_parts_are_refused_by_counts_and_estimated_from_json() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    messages = [{"role": "user", "content": [part]}]
    with pytest.raises(ValueError, match="input_audio"):
        count_message_tokens(messages, "gpt-4o")
    estimate = estimate_prompt_tokens(messages, "gpt-4o")
    assert estimate.estimated is True
    as_json = json.dumps(part, separators=(",", ":"))
    assert estimate.tokens == 3 + 3 + tokens("user", "o200k_base") + tokens(as_json, "o200k_base")


def test_tool_calls_and_tool_messages() -> None:
    arguments = '{"location":"Paris, FR"}'
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]

    def t(text: str) -> int:
        return tokens(text, "o200k_base")

    expected = (
        3
        + (3 + t("user") + t("Weather in Paris?"))
        # content None counts nothing; a call: 3 of framing, its name and its arguments.
        + (3 + t("assistant") + 3 + t("get_current_weather") + t(arguments))
        + (3 + t("tool") + t("call_1") + t('{"temp_c": 21}'))
    )
    assert count_message_tokens(messages, "gpt-4o") == expected
    assert estimate_prompt_tokens(messages, "gpt-4o") == TokenEstimate(
        tokens=expected, estimated=True, encoding="o200k_base"
    )
    legacy = [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]
    assert count_message_tokens(legacy, "gpt-4") == 3 + 3 + t_cl("assistant") + 3 + t_cl(
        "f"
    ) + t_cl("{}")


def t_cl(text: str) -> int:
    return tokens(text, "cl100k_base")


def test_openai_sdk_message_objects_count_like_dicts() -> None:
    as_dict = [{"role": "assistant", "content": "Hi there, how can I help?"}]
    sdk = [ChatCompletionMessage(role="assistant", content="Hi there, how can I help?")]
    assert count_message_tokens(sdk, "gpt-4o") == count_message_tokens(as_dict, "gpt-4o")


def test_tool_shapes_beyond_the_cookbook() -> None:
    counter = TokenCounter()
    bare = dict(COOKBOOK_TOOLS[0]["function"])  # legacy functions=[...]
    wrapped = counter.estimate_prompt_tokens([], "gpt-4o", tools=COOKBOOK_TOOLS)
    assert counter.estimate_prompt_tokens([], "gpt-4o", tools=[bare]) == wrapped
    nested = json.loads(json.dumps(COOKBOOK_TOOLS))
    nested[0]["function"]["parameters"]["properties"]["when"] = {
        "type": "object",
        "description": "A date range",
        "properties": {"start": {"type": "string"}, "end": {"type": "string"}},
    }
    flat = json.loads(json.dumps(nested))
    del flat[0]["function"]["parameters"]["properties"]["when"]["properties"]
    with_nested = counter.estimate_prompt_tokens([], "gpt-4o", tools=nested).tokens
    without = counter.estimate_prompt_tokens([], "gpt-4o", tools=flat).tokens
    # The nested schema's JSON is counted rather than dropped.
    nested_json = json.dumps(
        {"properties": {"start": {"type": "string"}, "end": {"type": "string"}}},
        separators=(",", ":"),
    )
    assert with_nested - without == tokens(nested_json, "o200k_base")
    minimal = counter.estimate_prompt_tokens([], "gpt-4o", tools=[{"name": "ping"}])
    assert minimal.tokens == 3 + 7 + tokens("ping:", "o200k_base") + 12
    other = counter.estimate_prompt_tokens([], "gpt-4o", tools=[{"type": "web_search"}])
    assert other.tokens == 3 + tokens('{"type":"web_search"}', "o200k_base") + 12
    assert other.estimated is True


# -- the long-text cache ----------------------------------------------------------------------


class CountingEncoder:
    """Wraps a real tiktoken encoding and records every text it is asked to encode."""

    def __init__(self, name: str) -> None:
        self.inner = _bpe.get_encoding(name)
        self.texts: list[str] = []

    def encode_ordinary(self, text: str) -> list[int]:
        self.texts.append(text)
        return self.inner.encode_ordinary(text)


def counting_counter(
    *, max_cached_texts: int = 1024, min_cached_chars: int = 256
) -> tuple[TokenCounter, dict[str, CountingEncoder]]:
    """A counter whose encoders record their calls, by encoding name."""
    encoders: dict[str, CountingEncoder] = {}

    def load(name: str) -> CountingEncoder:
        return encoders.setdefault(name, CountingEncoder(name))

    counter = TokenCounter(
        max_cached_texts=max_cached_texts, min_cached_chars=min_cached_chars, load_encoding=load
    )
    return counter, encoders


def test_a_repeated_system_prompt_is_encoded_once() -> None:
    counter, encoders = counting_counter()
    first = [{"role": "system", "content": LONG_SYSTEM_PROMPT}, {"role": "user", "content": "Hi"}]
    second = [{"role": "system", "content": LONG_SYSTEM_PROMPT}, {"role": "user", "content": "Yo"}]
    a = counter.count_message_tokens(first, "gpt-4o")
    b = counter.count_message_tokens(second, "gpt-4o")
    fixed = 3 + 2 * 3 + tokens("system", "o200k_base") + tokens("user", "o200k_base")
    fixed += tokens(LONG_SYSTEM_PROMPT, "o200k_base")
    assert (a, b) == (fixed + tokens("Hi", "o200k_base"), fixed + tokens("Yo", "o200k_base"))
    texts = encoders["o200k_base"].texts
    assert texts.count(LONG_SYSTEM_PROMPT) == 1
    # Short texts are encoded each time, outside the cache.
    assert texts.count("system") == 2
    info = counter.cache_info()
    assert (info.hits, info.misses, info.size) == (1, 1, 1)
    # The key includes the encoding: the same text for a cl100k model is encoded again.
    counter.count_tokens(LONG_SYSTEM_PROMPT, "gpt-4")
    assert encoders["cl100k_base"].texts == [LONG_SYSTEM_PROMPT]


def test_the_cache_is_bounded_by_entries_and_evicts_the_least_recently_used() -> None:
    counter, encoders = counting_counter(max_cached_texts=2, min_cached_chars=10)
    a, b, c = ("alpha " * 10, "bravo " * 10, "charlie " * 10)
    for text in (a, b, a, c):  # a is used again before c arrives, so b goes
        counter.count_tokens(text, "gpt-4o")
    assert counter.cache_info().size == 2
    counter.count_tokens(a, "gpt-4o")
    counter.count_tokens(b, "gpt-4o")
    assert encoders["o200k_base"].texts == [a, b, c, b]


def test_the_cache_does_not_keep_giant_texts() -> None:
    counter = TokenCounter()
    giant = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20_000  # 1.1 MB
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert counter.count_tokens(giant, "gpt-4o") == tokens(giant, "o200k_base")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert counter.cache_info().size == 1
    # A 16-byte digest is the key; the text itself is not retained.
    assert held < 50_000


def test_cache_disabled_and_bad_options() -> None:
    counter, encoders = counting_counter(max_cached_texts=0)
    counter.count_tokens(LONG_SYSTEM_PROMPT, "gpt-4o")
    counter.count_tokens(LONG_SYSTEM_PROMPT, "gpt-4o")
    assert len(encoders["o200k_base"].texts) == 2
    assert counter.cache_info().size == 0
    for field, value in (("max_cached_texts", -1), ("min_cached_chars", True)):
        with pytest.raises(ConfigError) as info:
            TokenCounter(**{field: value})  # type: ignore[arg-type]
        assert info.value.where == f"TokenCounter.{field}"


def test_threads_share_a_counter_and_get_the_serial_answers() -> None:
    counter = TokenCounter(max_cached_texts=3, min_cached_chars=20)
    texts = [f"{i} {LONG_SYSTEM_PROMPT[: 40 * (i + 1)]}" for i in range(8)] + ["short"]
    models = ["gpt-4o", "gpt-4"]
    expected = {(t, m): count_tokens(t, m) for t in texts for m in models}
    barrier = threading.Barrier(8)
    wrong: list[tuple[str, str]] = []

    def work(offset: int) -> None:
        barrier.wait()
        for round_ in range(30):
            for i, text in enumerate(texts):
                model = models[(i + offset + round_) % 2]
                if counter.count_tokens(text, model) != expected[(text, model)]:
                    wrong.append((text, model))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert counter.cache_info().size <= 3


# -- encodings loaded once per process --------------------------------------------------------


def test_encodings_load_once_even_when_threads_race() -> None:
    calls: list[str] = []
    second_entered = threading.Event()

    def load(name: str) -> tiktoken.Encoding:
        calls.append(name)
        if len(calls) > 1:
            second_entered.set()
        # Without the lock a second thread would get here within this window.
        second_entered.wait(timeout=0.3)
        return _bpe.get_encoding(name)

    cache = _bpe.EncodingCache(load=load)
    barrier = threading.Barrier(6)
    got: list[tiktoken.Encoding] = []

    def work() -> None:
        barrier.wait()
        got.append(cache.get("cl100k_base"))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["cl100k_base"]
    assert len(got) == 6
    assert all(encoding is got[0] for encoding in got)
    assert _bpe.get_encoding("o200k_base") is _bpe.get_encoding("o200k_base")
    assert _default_counter() is _default_counter()


# -- offline BPE files ------------------------------------------------------------------------


def test_offline_in_a_fresh_process_with_no_network(tmp_path: Path) -> None:
    """Empty TIKTOKEN_CACHE_DIR, proxies on a dead port, and an audit hook on every socket."""
    cache_dir = tmp_path / "tiktoken-cache"
    cache_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_PROXY", "no_proxy")}
    dead = f"http://127.0.0.1:{free_port()}"
    env |= {"TIKTOKEN_CACHE_DIR": str(cache_dir), "LLMCACHE_DIR": str(tmp_path / "unused")}
    env |= {var: dead for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env.pop("DATA_GYM_CACHE_DIR", None)
    script = """
import json, sys
events = []
sys.addaudithook(lambda event, args: event.startswith("socket.") and events.append(event))
import tiktoken
from accounting.tokens import count_message_tokens, count_tokens
messages = json.loads(sys.argv[1])
out = {m: count_message_tokens(messages, m) for m in ("gpt-4o", "gpt-4")}
out["text"] = count_tokens("tiktoken is great!", "gpt-3.5-turbo")
# Plain tiktoken now finds the seeded files, under its own hash check, with no download.
out["plain"] = [len(tiktoken.get_encoding(n).encode("tiktoken is great!"))
                for n in ("cl100k_base", "o200k_base")]
out["events"] = events
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(COOKBOOK_MESSAGES)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    plain = [tokens("tiktoken is great!", n) for n in ("cl100k_base", "o200k_base")]
    assert out == {"gpt-4o": 124, "gpt-4": 129, "text": 6, "plain": plain, "events": []}
    for spec in _bpe.SPECS.values():
        seeded = cache_dir / hashlib.sha1(spec.url.encode()).hexdigest()
        assert hashlib.sha256(seeded.read_bytes()).hexdigest() == spec.sha256
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        hashlib.sha1(s.url.encode()).hexdigest() for s in _bpe.SPECS.values()
    )
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("name", sorted(_bpe.SPECS))
def test_our_encoding_is_tiktokens_own(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashes, split pattern, special tokens and ranks equal what tiktoken's constructor builds."""
    data = _bpe.read_verified_bpe(name, tmp_path)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    dead_proxy_env(monkeypatch)
    # tiktoken's own constructor reads our seeded file and checks its own expected hash
    # (a mismatch would make it delete the file and try the dead proxy).
    params = getattr(openai_public, name)()
    spec = _bpe.SPECS[name]
    assert params["name"] == spec.name
    assert params["pat_str"] == spec.pat_str
    assert params["special_tokens"] == dict(spec.special_tokens)
    assert params["mergeable_ranks"] == _bpe.parse_ranks(data)
    theirs = tiktoken.Encoding(**params)
    ours = _bpe.get_encoding(name)
    sample = "Hello, wörld! 你好\uff0c世界\u3002 def f(x):\n\treturn x**2  # 12345678\r\n  ok?? 🎉"
    assert ours.encode_ordinary(sample) == theirs.encode_ordinary(sample)
    assert ours.encode("<|endoftext|>", allowed_special="all") == theirs.encode(
        "<|endoftext|>", allowed_special="all"
    )


def test_cache_dir_rules() -> None:
    own = Path(platformdirs.user_cache_dir("llmcache", appauthor=False)) / "tiktoken"
    assert _bpe.bpe_cache_dir({}) == own
    assert _bpe.bpe_cache_dir({"LLMCACHE_DIR": "/srv/llm"}) == Path("/srv/llm/tiktoken")
    assert _bpe.bpe_cache_dir({"TIKTOKEN_CACHE_DIR": "/t", "LLMCACHE_DIR": "/srv/llm"}) == Path(
        "/t"
    )
    assert _bpe.bpe_cache_dir({"DATA_GYM_CACHE_DIR": "/d"}) == Path("/d")
    # tiktoken reads TIKTOKEN_CACHE_DIR first, and an empty one turns its cache off: ours then.
    assert _bpe.bpe_cache_dir({"TIKTOKEN_CACHE_DIR": "/t", "DATA_GYM_CACHE_DIR": "/d"}) == Path(
        "/t"
    )
    assert _bpe.bpe_cache_dir({"TIKTOKEN_CACHE_DIR": "", "DATA_GYM_CACHE_DIR": "/d"}) == own
    assert _bpe.bpe_cache_dir({"TIKTOKEN_CACHE_DIR": "", "LLMCACHE_DIR": "/x"}) == Path(
        "/x/tiktoken"
    )


def test_a_corrupt_seeded_file_is_replaced_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = _bpe.SPECS["cl100k_base"]
    good = _bpe.read_verified_bpe("cl100k_base", tmp_path)
    seeded = _bpe.cache_file(spec, tmp_path)
    # Still a well-formed BPE file, just missing ranks: it would silently miscount.
    seeded.write_bytes(b"\n".join(good.splitlines()[:-1000]) + b"\n")
    with caplog.at_level(logging.WARNING, logger="accounting._bpe"):
        again = _bpe.read_verified_bpe("cl100k_base", tmp_path)
    assert again == good
    assert hashlib.sha256(seeded.read_bytes()).hexdigest() == spec.sha256
    assert str(seeded) in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == [seeded.name]  # no temp files left


def test_corrupt_or_missing_package_data_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "cl100k_base.tiktoken.gz"
    fake.write_bytes(gzip.compress(b"dGVzdA== 0\n"))
    with pytest.raises(ConfigError, match="does not match") as info:
        _bpe.read_verified_bpe("cl100k_base", tmp_path / "seed", packaged=fake)
    assert info.value.where == str(fake)
    assert not (tmp_path / "seed").exists()  # nothing unverified is written
    fake.write_bytes(b"not gzip")
    with pytest.raises(ConfigError) as info:
        _bpe.read_verified_bpe("cl100k_base", tmp_path / "seed", packaged=fake)
    assert info.value.where == str(fake)
    with pytest.raises(ConfigError) as info:
        _bpe.read_verified_bpe("cl100k_base", tmp_path / "seed", packaged=tmp_path / "gone.gz")
    assert info.value.where == str(tmp_path / "gone.gz")


def test_an_unwritable_directory_still_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="accounting._bpe"):
        encoding = _bpe.load_encoding("cl100k_base", blocker / "tiktoken")
    assert encoding.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert "cannot write" in caplog.text


def test_the_packaged_files_are_found_without_importing_bpe_openai() -> None:
    code = (
        "import sys; from accounting import _bpe; "
        "p = _bpe.packaged_file(_bpe.SPECS['o200k_base']); "
        "print(p.is_file(), 'bpe_openai' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["True", "False"]
