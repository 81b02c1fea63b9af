"""llmcache.testing.LocalServer, driven over real HTTP by the real openai SDK (sync and async)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseTextDeltaEvent,
)

import llmcache.testing
from accounting import count_message_tokens, count_tokens
from llmcache.testing import CONTENT_FILTER_MARKER, Fault, LocalServer
from llmcache.testing.__main__ import add_arguments, main, run

MODEL = "gpt-4o"
ASK: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "detailed": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server: LocalServer) -> None:
    server.reset()
    server.ttft = 0.0
    server.tokens_per_second = None


@pytest.fixture
def client(server: LocalServer) -> Iterator[OpenAI]:
    # Strict validation: every answer must parse into the SDK's types, required fields and all.
    with OpenAI(
        base_url=server.base_url, api_key="test", max_retries=0, _strict_response_validation=True
    ) as sdk:
        yield sdk


@pytest.fixture
def loose(server: LocalServer) -> Iterator[OpenAI]:
    # The SDK validates embeddings before decoding its own base64 default, so not strictly.
    with OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


def post(server: LocalServer, path: str, body: bytes) -> tuple[int, Message, bytes]:
    """A raw POST with urllib: status, headers, body."""
    request = urllib.request.Request(
        f"{server.base_url}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Bearer secret"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


# -- chat completions -----------------------------------------------------------------------------


def test_chat_stream_matches_the_non_streamed_answer(client: OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=ASK)
    assert whole.object == "chat.completion"
    assert re.fullmatch(r"chatcmpl-[0-9a-f]+", whole.id)
    assert whole.model == MODEL and whole.system_fingerprint
    content = whole.choices[0].message.content
    assert content and "What is the capital of France?" in content
    assert whole.choices[0].finish_reason == "stop"

    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # ends normally: the SDK saw [DONE]
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices]
    assert len([t for t in texts if t]) > 5  # one delta per token
    assert "".join(t or "" for t in texts) == content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {whole.id}


def test_stream_wire_format_without_usage(server: LocalServer) -> None:
    body = json.dumps({"model": MODEL, "messages": ASK, "stream": True}).encode()
    status, headers, raw = post(server, "/chat/completions", body)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["x-request-id"].startswith("req_")
    events = raw.decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert all("usage" not in p for p in payloads)  # only with include_usage, as OpenAI does
    assert payloads[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_answers_are_deterministic(client: OpenAI) -> None:
    def ask(**changes: Any) -> tuple[str, str | None]:
        request: dict[str, Any] = {"model": MODEL, "messages": ASK, **changes}
        reply = client.chat.completions.create(**request)
        return reply.id, reply.choices[0].message.content

    first = ask()
    assert ask() == first
    assert ask(seed=7) == ask(seed=7) != first
    assert ask(temperature=0.2) != first
    other = [*ASK[:1], {"role": "user", "content": "And of Spain?"}]
    assert ask(messages=other)[1] != first[1]
    assert "And of Spain?" in (ask(messages=other)[1] or "")


def test_n_choices_differ(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ASK, n=3)
    texts = [c.message.content or "" for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len(set(texts)) == 3
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sum(count_tokens(t, MODEL) for t in texts)

    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        n=3,
        stream=True,
    )
    joined = ["", "", ""]
    for chunk in stream:
        for choice in chunk.choices:
            joined[choice.index] += choice.delta.content or ""
    assert joined == texts


def test_tool_calls_streamed_and_not(client: OpenAI) -> None:
    ask = [{"role": "user", "content": "Weather in Paris tomorrow?"}]
    reply = client.chat.completions.create(model=MODEL, messages=ask, tools=[WEATHER, TIME])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit", "days", "detailed"}
    assert arguments["city"] in {"Weather", "Paris", "tomorrow"}
    assert arguments["unit"] in {"celsius", "fahrenheit"}
    assert isinstance(arguments["days"], int) and isinstance(arguments["detailed"], bool)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == count_tokens("get_weather", MODEL) + count_tokens(
        call.function.arguments, MODEL
    )

    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ask,
            tools=[WEATHER, TIME],
            stream=True,
        )
    )
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    first = deltas[0][0]
    assert (first.index, first.id, first.type) == (0, call.id, "function")
    assert first.function is not None
    assert (first.function.name, first.function.arguments) == ("get_weather", "")
    pieces = [d[0].function.arguments or "" for d in deltas[1:] if d[0].function]
    assert len(pieces) > 2
    assert "".join(pieces) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_and_tool_results(client: OpenAI) -> None:
    ask: list[Any] = [{"role": "user", "content": "What time is it in Tokyo?"}]
    forced = client.chat.completions.create(
        model=MODEL,
        messages=ask,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert forced.choices[0].message.tool_calls is not None
    call = forced.choices[0].message.tool_calls[0]
    assert call.function.name == "get_time"

    none = client.chat.completions.create(
        model=MODEL,
        messages=ask,
        tools=[WEATHER, TIME],
        tool_choice="none",
    )
    assert none.choices[0].finish_reason == "stop" and none.choices[0].message.content

    answered = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "It is 9:30 in Tokyo."},
    ]
    after = client.chat.completions.create(model=MODEL, messages=answered, tools=[TIME])
    assert after.choices[0].finish_reason == "stop"
    assert "It is 9:30 in Tokyo." in (after.choices[0].message.content or "")

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL,
            messages=ask,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert refused.value.param == "tool_choice"


def test_length_and_content_filter(client: OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=ASK).choices[0].message.content
    assert full is not None
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3}):
        cut = client.chat.completions.create(model=MODEL, messages=ASK, **limit)
        text = cut.choices[0].message.content or ""
        assert cut.choices[0].finish_reason == "length"
        assert full.startswith(text) and 0 < count_tokens(text, MODEL) <= 3
        assert cut.usage is not None and cut.usage.completion_tokens == count_tokens(text, MODEL)
    roomy = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=500)
    assert roomy.choices[0].finish_reason == "stop"

    flagged = [{"role": "user", "content": f"Tell me a secret {CONTENT_FILTER_MARKER}"}]
    reply = client.chat.completions.create(model=MODEL, messages=flagged)
    assert reply.choices[0].finish_reason == "content_filter"
    chunks = list(client.chat.completions.create(model=MODEL, messages=flagged, stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == reply.choices[0].message.content
    with_seed = client.chat.completions.create(model=MODEL, messages=flagged, seed=1)
    assert with_seed.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "my-local-model"])
def test_usage_is_counted_with_accounting(client: OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=ASK)
    counted = model if model != "my-local-model" else "gpt-4o"  # unknown: gpt-4o's rule
    assert reply.model == model
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_message_tokens(ASK, counted)
    assert reply.usage.completion_tokens == count_tokens(
        reply.choices[0].message.content or "", counted
    )
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


def test_async_client_streams_the_same_answer(server: LocalServer, client: OpenAI) -> None:
    expected = client.chat.completions.create(model=MODEL, messages=ASK)

    async def go() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as sdk:
            whole = await sdk.chat.completions.create(model=MODEL, messages=ASK)
            stream = await sdk.chat.completions.create(model=MODEL, messages=ASK, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            return whole.choices[0].message.content or "", text

    whole, streamed = asyncio.run(go())
    assert whole == streamed == expected.choices[0].message.content


# -- legacy completions, embeddings, models -------------------------------------------------------


def test_legacy_completions(client: OpenAI, loose: OpenAI) -> None:
    whole = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "stop"
    text = whole.choices[0].text
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == count_tokens("Say hello", "gpt-3.5-turbo-instruct")
    # Streamed like OpenAI (finish_reason null until the end), which the SDK's Completion type
    # does not allow under strict validation: read the stream loosely.
    chunks = list(
        loose.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hello",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage == whole.usage and chunks[-2].choices[0].finish_reason == "stop"
    two = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=["a", "b"], max_tokens=2)
    assert len(two.choices) == 2 and {c.finish_reason for c in two.choices} == {"length"}


def test_embeddings_float_and_base64(loose: OpenAI) -> None:
    texts = ["first text", "second text"]
    default = loose.embeddings.create(model="text-embedding-3-small", input=texts)  # base64
    floats = loose.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    vectors = [d.embedding for d in default.data]
    assert vectors == [d.embedding for d in floats.data]
    assert all(len(v) == 16 for v in vectors) and vectors[0] != vectors[1]
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    expected = sum(count_tokens(t, "text-embedding-3-small") for t in texts)
    assert default.usage.prompt_tokens == default.usage.total_tokens == expected

    short = loose.embeddings.create(
        model="text-embedding-3-small", input="first text", dimensions=4
    )
    (vector,) = [d.embedding for d in short.data]
    assert len(vector) == 4
    prefix = vectors[0][:4]
    norm = math.sqrt(math.fsum(x * x for x in prefix))
    assert vector == pytest.approx([x / norm for x in prefix], rel=1e-5)
    tokens = loose.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]])
    assert tokens.usage.prompt_tokens == 3


def test_models(client: OpenAI, server: LocalServer) -> None:
    listed = [m.id for m in client.models.list()]
    assert listed == list(server.models) and MODEL in listed
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "llmcache-testing")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    assert server.count("models") == 3


# -- responses ------------------------------------------------------------------------------------


def test_responses_stream_matches_the_non_streamed_response(client: OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "input": [{"role": "user", "content": "Summarise the plot of Hamlet."}],
        "instructions": "Be brief.",
    }
    whole = client.responses.create(**request)
    assert Response.model_validate(whole.model_dump()) == whole
    assert whole.status == "completed" and whole.id.startswith("resp_")
    assert "Summarise the plot of Hamlet." in whole.output_text
    assert whole.usage is not None
    counted = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise the plot of Hamlet."},
    ]
    assert whole.usage.input_tokens == count_message_tokens(counted, MODEL)
    assert whole.usage.output_tokens == count_tokens(whole.output_text, MODEL)

    events = list(client.responses.create(**request, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-5:] == [
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert len(deltas) > 5 and "".join(deltas) == whole.output_text
    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent)
    assert final.response.model_dump(exclude={"created_at"}) == whole.model_dump(
        exclude={"created_at"}
    )


def test_responses_function_call_and_max_output_tokens(client: OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        **{"parameters": WEATHER["function"]["parameters"]},
    }
    whole = client.responses.create(model=MODEL, input="Weather in Oslo?", tools=[tool])
    (item,) = whole.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert json.loads(item.arguments)["city"] in {"Weather", "Oslo"}
    events = list(
        client.responses.create(model=MODEL, input="Weather in Oslo?", tools=[tool], stream=True)
    )
    pieces = [e.delta for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    done = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDoneEvent)]
    assert len(pieces) > 2 and "".join(pieces) == done[0].arguments == item.arguments

    cut = client.responses.create(model=MODEL, input="Tell me a story", max_output_tokens=4)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage is not None and 0 < cut.usage.output_tokens <= 4
    streamed = list(
        client.responses.create(
            model=MODEL, input="Tell me a story", max_output_tokens=4, stream=True
        )
    )
    assert isinstance(streamed[-1], ResponseIncompleteEvent)
    assert streamed[-1].response.output_text == cut.output_text

    flagged = client.responses.create(model=MODEL, input=f"Secrets {CONTENT_FILTER_MARKER}")
    assert flagged.incomplete_details is not None
    assert flagged.incomplete_details.reason == "content_filter"
    result = client.responses.create(
        model=MODEL,
        tools=[tool],
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            item.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": item.call_id, "output": "Sunny, 21 C"},
        ],
    )
    assert result.status == "completed" and "Sunny, 21 C" in result.output_text


# -- errors and faults ----------------------------------------------------------------------------


def test_request_errors_are_openai_shaped(server: LocalServer, client: OpenAI) -> None:
    status, headers, raw = post(server, "/nothing/here", b"{}")
    assert status == 404 and json.loads(raw)["error"]["code"] == "unknown_url"
    assert headers["x-request-id"]
    status, _, raw = post(server, "/chat/completions", b"{not json")
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, raw = post(server, "/chat/completions", json.dumps({"model": MODEL}).encode())
    assert status == 400 and json.loads(raw)["error"]["param"] == "messages"
    status, _, raw = post(server, "/responses", json.dumps({"input": "hi"}).encode())
    assert status == 400 and json.loads(raw)["error"]["param"] == "model"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[])
    assert refused.value.param == "messages"
    assert server.count("chat.completions") == 3 and server.count("responses") == 1


def test_rate_limit_and_server_error(server: LocalServer, client: OpenAI) -> None:
    server.fault(Fault.RATE_LIMIT, retry_after=2)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=ASK)
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.code == "rate_limit_exceeded"
    server.fault(Fault.SERVER_ERROR, endpoint="embeddings")
    client.chat.completions.create(model=MODEL, messages=ASK)
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert server.count("chat.completions") == 2 and server.count("embeddings") == 1

    # The SDK's own retries: two 429s then an answer, three requests seen.
    server.fault(Fault.RATE_LIMIT, times=2, retry_after=0.01)
    with OpenAI(base_url=server.base_url, api_key="test", max_retries=2) as retrying:
        assert retrying.chat.completions.create(model=MODEL, messages=ASK).choices
    assert server.count("chat.completions") == 5


def test_drop_stream(server: LocalServer, client: OpenAI) -> None:
    server.fault(Fault.DROP_STREAM, after_chunks=2)
    received: list[Any] = []
    stream = client.chat.completions.create(model=MODEL, messages=ASK, stream=True)
    # What the SDK does: the chunks sent arrive, then the cut-off body raises a connection error.
    with pytest.raises(openai.APIConnectionError):
        received.extend(stream)
    assert len(received) == 2 and all(c.choices[0].finish_reason is None for c in received)

    server.fault(Fault.DROP_STREAM)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=ASK)
    assert client.chat.completions.create(model=MODEL, messages=ASK).choices
    assert server.count("chat.completions") == 3


def test_malformed_json(server: LocalServer, client: OpenAI) -> None:
    server.fault(Fault.MALFORMED_JSON, times=2)
    # The SDK does not wrap a body it cannot decode: json's own error reaches the caller.
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model=MODEL, messages=ASK)
    stream = client.chat.completions.create(model=MODEL, messages=ASK, stream=True)
    with pytest.raises(json.JSONDecodeError):
        list(stream)
    assert client.chat.completions.create(model=MODEL, messages=ASK).choices


def test_counters(server: LocalServer, client: OpenAI) -> None:
    def work() -> None:
        with OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as own:
            for _ in range(10):
                own.chat.completions.create(model=MODEL, messages=ASK)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.responses.create(model=MODEL, input="hi")
    snapshot = server.requests
    assert dict(snapshot) == {
        "chat.completions": 40,
        "completions": 0,
        "embeddings": 0,
        "responses": 1,
        "models": 0,
    }
    with pytest.raises(TypeError):
        snapshot["models"] = 1
    with pytest.raises(ValueError, match="endpoint"):
        server.count("chat")
    server.fault(Fault.SERVER_ERROR)
    server.reset()
    assert server.count("chat.completions") == 0
    assert client.chat.completions.create(model=MODEL, messages=ASK).choices


# -- latency --------------------------------------------------------------------------------------


def test_ttft_and_pacing(server: LocalServer, client: OpenAI) -> None:
    server.ttft = 0.2
    start = time.monotonic()
    stream = client.chat.completions.create(model=MODEL, messages=ASK, stream=True)
    next(iter(stream))
    assert time.monotonic() - start >= 0.2
    stream.close()
    start = time.monotonic()
    client.chat.completions.create(model=MODEL, messages=ASK)
    assert time.monotonic() - start >= 0.2

    server.ttft = 0.0
    server.tokens_per_second = 100
    start = time.monotonic()
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, stream=True))
    deltas = sum(1 for c in chunks if c.choices[0].delta.content)
    assert deltas > 10
    assert time.monotonic() - start >= (deltas - 1) / 100


def test_lifecycle_and_validation() -> None:
    server = LocalServer()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.stop()  # not started: nothing to do
    server.start()
    port = server.port
    assert server.base_url == f"http://127.0.0.1:{port}/v1"
    with OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as sdk:
        sdk.models.list()  # leaves a kept-alive connection open
        server.stop()
        server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    for bad in ({"ttft": -1}, {"tokens_per_second": 0}, {"port": 70000}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LocalServer(**bad)
    with pytest.raises(ValueError, match="times"):
        LocalServer().fault(Fault.RATE_LIMIT, times=0)
    assert set(llmcache.testing.__all__) == {"CONTENT_FILTER_MARKER", "Fault", "LocalServer"}


# -- command line ---------------------------------------------------------------------------------


def test_command_line_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "llmcache.testing", "--port", "0", "--ttft", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.fullmatch(r"llmcache test server: (http://127\.0\.0\.1:\d+/v1)\n", line)
        assert found, line
        with OpenAI(base_url=found[1], api_key="test", max_retries=0) as sdk:
            reply = sdk.chat.completions.create(model=MODEL, messages=ASK)
        assert reply.choices[0].message.content
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        assert process.returncode == 0 and err == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_options_parse() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "8123", "--ttft", "0.5", "--tokens-per-second", "40"])
    assert (args.host, args.port, args.ttft, args.tokens_per_second) == (
        "127.0.0.1",
        8123,
        0.5,
        40.0,
    )
    assert callable(run) and callable(main)
    assert main(["--ttft", "-1"]) == 2
