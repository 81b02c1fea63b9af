"""Streams ↔ complete results: assembling what OpenAI streams, replaying what the cache holds.

Hand-written streams are parsed the way the SDK parses a live stream (``model_construct`` on
each event's JSON, no validation: ``openai._models.construct_type``), so the assemblers see
what they will see in production. Replayed chunks are checked against the same parse of their
own JSON: a user cannot tell them from chunks the SDK read off the wire.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionTokenLogprob
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta, ChoiceDeltaToolCall
from openai.types.completion_usage import CompletionUsage
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseStreamEvent,
)
from pydantic import TypeAdapter

from llmcache.openai._pieces import split_text, token_groups
from llmcache.openai.streams import (
    assemble_chat,
    assemble_completion,
    assemble_response,
    replay_chat,
    replay_completion,
    replay_response,
)

HEAD = {"id": "chatcmpl-9x", "created": 1_700_000_000, "model": "gpt-4o-mini-2024-07-18"}
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 7,
    "total_tokens": 19,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
EVENTS = TypeAdapter(ResponseStreamEvent)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sdk_chunk(choices: list[dict[str, Any]], **extra: Any) -> ChatCompletionChunk:
    """A chunk as the SDK parses one off the wire."""
    body = {
        **HEAD,
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_a1",
        "service_tier": "default",
        "choices": choices,
        **extra,
    }
    return ChatCompletionChunk.model_construct(**json.loads(json.dumps(body)))


def delta(index: int = 0, finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "logprobs": None, "finish_reason": finish}


def chat(
    choices: list[dict[str, Any]], usage: dict[str, Any] | None = USAGE, **top: Any
) -> ChatCompletion:
    body = {
        **HEAD,
        "object": "chat.completion",
        "system_fingerprint": "fp_a1",
        "service_tier": "default",
        "choices": choices,
        "usage": usage,
        **top,
    }
    return ChatCompletion.model_validate(body)


def message(
    index: int = 0, finish: str = "stop", logprobs: Any = None, **fields: Any
) -> dict[str, Any]:
    msg = {"role": "assistant", "content": None, "refusal": None, **fields}
    return {"index": index, "finish_reason": finish, "logprobs": logprobs, "message": msg}


def by_choice(chunks: list[ChatCompletionChunk]) -> dict[int, list[ChunkChoice]]:
    out: dict[int, list[ChunkChoice]] = defaultdict(list)
    for chunk in chunks:
        for choice in chunk.choices:
            out[choice.index].append(choice)
    return out


def assert_like_sdk_parsed(chunk: Any) -> None:
    """The chunk equals the SDK's parse of its own JSON, field set and all."""
    parsed = type(chunk).model_construct(**json.loads(chunk.to_json()))
    assert parsed.model_dump() == chunk.model_dump()
    assert parsed.to_dict() == chunk.to_dict()


# ---------------------------------------------------------------- chat: assembling real streams


def test_assemble_chat_openai_stream_with_usage_chunk() -> None:
    """Role chunk, content pieces, finish chunk, then the usage chunk with no choices."""
    chunks = [
        sdk_chunk(
            [delta(role="assistant", content="", refusal=None)], usage=None, obfuscation="x1"
        ),
        sdk_chunk([delta(content="Hello")], usage=None, obfuscation="y"),
        sdk_chunk([delta(content=", wörld ")], usage=None),
        sdk_chunk([delta(content="👋🏽!")], usage=None),
        sdk_chunk([delta(finish="stop")], usage=None),
        sdk_chunk([], usage=USAGE, obfuscation="zz"),
    ]
    got = assemble_chat(chunks)
    assert got is not None
    expected = chat([message(content="Hello, wörld 👋🏽!")])
    assert got.model_dump() == expected.model_dump()
    assert isinstance(got.usage, CompletionUsage)
    assert got.choices[0].message.tool_calls is None


def test_assemble_chat_interleaved_choices() -> None:
    chunks = [
        sdk_chunk([delta(0, role="assistant", content="")]),
        sdk_chunk([delta(1, role="assistant", content="")]),
        sdk_chunk([delta(1, content="Bonjour")]),
        sdk_chunk([delta(0, content="Hi")]),
        sdk_chunk([delta(0, content=" there")]),
        sdk_chunk([delta(1, finish="length")]),
        sdk_chunk([delta(0, finish="stop")]),
    ]
    got = assemble_chat(chunks)
    assert got is not None
    expected = chat(
        [message(0, content="Hi there"), message(1, "length", content="Bonjour")], usage=None
    )
    assert got.model_dump() == expected.model_dump()


def test_assemble_chat_parallel_tool_calls_split_over_deltas() -> None:
    def call(i: int, **fields: Any) -> dict[str, Any]:
        return delta(tool_calls=[{"index": i, **fields}])

    chunks = [
        sdk_chunk([delta(role="assistant", content=None, refusal=None)]),
        sdk_chunk(
            [
                call(
                    0,
                    id="call_a",
                    type="function",
                    function={"name": "get_weather", "arguments": ""},
                )
            ]
        ),
        sdk_chunk([call(0, function={"arguments": '{"ci'})]),
        sdk_chunk(
            [
                call(
                    1,
                    id="call_b",
                    type="function",
                    function={"name": "get_time", "arguments": '{"tz"'},
                )
            ]
        ),
        sdk_chunk([call(0, function={"arguments": 'ty": "Par'})]),
        sdk_chunk([call(1, function={"arguments": ': "CET"}'})]),
        sdk_chunk([call(0, function={"arguments": 'is"}'})]),
        sdk_chunk([delta(finish="tool_calls")]),
    ]
    got = assemble_chat(chunks)
    assert got is not None
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
        },
    ]
    expected = chat([message(finish="tool_calls", tool_calls=calls)], usage=None)
    assert got.model_dump() == expected.model_dump()
    assert got.choices[0].message.content is None


def test_assemble_chat_incomplete_streams_are_none() -> None:
    opening = sdk_chunk([delta(role="assistant", content="")])
    body = sdk_chunk([delta(content="Hel")])
    assert assemble_chat([]) is None
    assert assemble_chat([opening, body]) is None  # cut before the finish chunk
    assert assemble_chat([sdk_chunk([], usage=USAGE)]) is None  # no choice at all
    two = [sdk_chunk([delta(0, finish="stop")]), sdk_chunk([delta(1, content="x")])]
    assert assemble_chat(two) is None  # choice 1 never finished


def test_assemble_chat_skips_placeholder_opening_chunk_and_keeps_logprobs_and_extras() -> None:
    """Azure opens with id/model ""; DeepSeek-style providers stream reasoning_content."""
    token = {"token": "Hi", "bytes": [72, 105], "logprob": -0.1, "top_logprobs": []}
    placeholder = ChatCompletionChunk.model_construct(
        id="",
        object="chat.completion.chunk",
        created=0,
        model="",
        choices=[],
        prompt_filter_results=[],
    )
    chunks = [
        placeholder,
        sdk_chunk([delta(role="assistant", content="", reasoning_content="Let me ")]),
        sdk_chunk([delta(reasoning_content="think.")]),
        sdk_chunk([{**delta(content="Hi"), "logprobs": {"content": [token], "refusal": None}}]),
        sdk_chunk([delta(finish="stop")]),
    ]
    got = assemble_chat(chunks)
    assert got is not None
    assert (got.id, got.model, got.created) == (HEAD["id"], HEAD["model"], HEAD["created"])
    msg = got.choices[0].message
    assert msg.content == "Hi"
    assert msg.model_extra == {"reasoning_content": "Let me think."}
    logprobs = got.choices[0].logprobs
    assert logprobs is not None and logprobs.refusal is None
    assert [t.model_dump() for t in logprobs.content or ()] == [token]
    assert isinstance((logprobs.content or [])[0], ChatCompletionTokenLogprob)


# ---------------------------------------------------------------- chat: replaying


def test_replay_chat_is_an_openai_shaped_stream() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 12
    completion = chat([message(content=text, annotations=[])])
    chunks = replay_chat(completion, include_usage=True)
    opening, *middle, finish, usage = chunks
    assert opening.choices[0].delta.role == "assistant"
    assert opening.choices[0].delta.content == ""
    assert all(0 < len(c.choices[0].delta.content or "") <= 64 for c in middle)
    assert "".join(c.choices[0].delta.content or "" for c in middle) == text
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.model_dump(exclude_unset=True) == {}
    assert usage.choices == [] and usage.usage == completion.usage
    for chunk in chunks:
        assert (chunk.id, chunk.created, chunk.model) == (
            completion.id,
            completion.created,
            completion.model,
        )
        assert (chunk.object, chunk.system_fingerprint, chunk.service_tier) == (
            "chat.completion.chunk",
            "fp_a1",
            "default",
        )
        assert "usage" in chunk.model_fields_set
        assert_like_sdk_parsed(chunk)
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    assert isinstance(opening.choices[0], ChunkChoice) and isinstance(
        opening.choices[0].delta, ChoiceDelta
    )


def test_replay_chat_without_usage_has_no_usage_chunk() -> None:
    completion = chat([message(content="Hi")])
    chunks = replay_chat(completion, include_usage=False)
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, "stop"]
    assert all("usage" not in c.model_fields_set for c in chunks)
    assembled = assemble_chat(chunks)
    assert assembled is not None and assembled.usage is None
    assert replay_chat(chat([message(content="Hi")], usage=None), include_usage=True)[-1].choices


def test_replay_chat_interleaves_choices_round_robin() -> None:
    completion = chat([message(0, content="a" * 130), message(1, "length", content="b")])
    order = [c.choices[0].index for c in replay_chat(completion, include_usage=True) if c.choices]
    # choice 0: role, 3 pieces, finish (5 chunks); choice 1: role, 1 piece, finish (3 chunks)
    assert order == [0, 1, 0, 1, 0, 1, 0, 0]


def test_replay_chat_tool_call_deltas() -> None:
    args = json.dumps({"query": "weather in Paris " * 8})
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": args}},
        {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": ""}},
    ]
    chunks = replay_chat(
        chat([message(finish="tool_calls", tool_calls=calls)]), include_usage=False
    )
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or ()]
    assert all(isinstance(d, ChoiceDeltaToolCall) for d in deltas)
    first_a = deltas[0].model_dump(exclude_unset=True)
    assert first_a == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "search", "arguments": ""},
    }
    pieces = [d.function.arguments for d in deltas if d.index == 0 and d.id is None and d.function]
    assert len(pieces) == -(-len(args) // 64) and "".join(p or "" for p in pieces) == args
    assert [d.model_dump(exclude_unset=True) for d in deltas if d.index == 1] == [
        {
            "index": 1,
            "id": "call_2",
            "type": "function",
            "function": {"name": "noop", "arguments": ""},
        }
    ]
    assert chunks[0].choices[0].delta.content is None  # no content: null, as OpenAI sends


def test_replay_chat_logprobs_follow_tokens_or_ride_the_finish_chunk() -> None:
    def lp(token: str) -> dict[str, Any]:
        top = [{"token": token, "bytes": list(token.encode()), "logprob": -0.2}]
        return {"token": token, "bytes": list(token.encode()), "logprob": -0.2, "top_logprobs": top}

    tokens = ["Hello", ",", " world", "!", " " + "x" * 70, " end"]
    aligned = chat(
        [
            message(
                content="".join(tokens),
                logprobs={"content": [lp(t) for t in tokens], "refusal": None},
            )
        ]
    )
    chunks = replay_chat(aligned, include_usage=False)
    carried = [c for c in chunks if c.choices[0].delta.content]
    for chunk in carried:
        logprobs = chunk.choices[0].logprobs
        assert logprobs is not None
        assert "".join(t.token for t in logprobs.content or ()) == chunk.choices[0].delta.content
    assert [c.choices[0].delta.content for c in carried] == [
        "Hello, world!",
        " " + "x" * 70,
        " end",
    ]
    assert chunks[-1].choices[0].logprobs is None

    # Byte-level tokens that do not spell the text: all logprobs on the finish chunk.
    unaligned = chat(
        [message(content="héllo", logprobs={"content": [lp("h"), lp("\\xc3"), lp("llo")]})],
        usage=None,
    )
    chunks = replay_chat(unaligned, include_usage=False)
    assert all(c.choices[0].logprobs is None for c in chunks[:-1])
    finish_lp = chunks[-1].choices[0].logprobs
    assert finish_lp is not None and len(finish_lp.content or ()) == 3
    assembled = assemble_chat(chunks)
    assert assembled is not None and assembled.model_dump() == unaligned.model_dump()


URL_CITATION = {
    "type": "url_citation",
    "url_citation": {
        "start_index": 0,
        "end_index": 4,
        "title": "Paris",
        "url": "https://example.org/",
    },
}
AUDIO = {
    "id": "audio_1",
    "data": "UklGR" * 2000,
    "expires_at": 1_700_003_600,
    "transcript": "Bonjour " * 20,
}


@pytest.mark.parametrize(
    ("name", "completion"),
    [
        ("refusal", chat([message(refusal="I can't help with that request, sorry. " * 3)])),
        ("empty content", chat([message(content="", finish="length")])),
        ("empty refusal", chat([message(refusal="")])),
        ("annotations", chat([message(content="Paris is lovely.", annotations=[URL_CITATION])])),
        ("audio", chat([message(audio=AUDIO)])),
        (
            "legacy function_call",
            chat(
                [
                    message(
                        finish="function_call", function_call={"name": "f", "arguments": '{"a": 1}'}
                    )
                ]
            ),
        ),
        (
            "custom tool",
            chat(
                [
                    message(
                        finish="tool_calls",
                        tool_calls=[
                            {
                                "id": "call_c",
                                "type": "custom",
                                "custom": {"name": "shell", "input": "echo hello " * 10},
                            }
                        ],
                    )
                ]
            ),
        ),
        (
            "extras",
            chat(
                [message(content="4", reasoning_content="2+2 " * 30, reasoning_details=[{"k": 1}])]
            ),
        ),
        (
            "moderation",
            chat(
                [message(content="ok")],
                moderation={
                    "input": {"type": "error", "code": "c", "message": "m"},
                    "output": {"type": "error", "code": "c", "message": "m"},
                },
            ),
        ),
        (
            "no fingerprint",
            chat([message(content="ok")], system_fingerprint=None, service_tier=None),
        ),
        ("empty logprobs", chat([message(content="", logprobs={"content": [], "refusal": None})])),
        (
            "bare logprobs",
            chat([message(content="a", logprobs={"content": None, "refusal": None})]),
        ),
        ("three choices", chat([message(i, content=f"choice {i} " * 20) for i in range(3)])),
    ],
)
def test_replay_chat_round_trips(name: str, completion: ChatCompletion) -> None:
    chunks = replay_chat(completion, include_usage=True)
    for chunk in chunks:
        assert_like_sdk_parsed(chunk)
    assembled = assemble_chat(chunks)
    assert assembled is not None, name
    assert assembled.model_dump() == completion.model_dump(), name


def test_provider_values_outside_sdk_literals_round_trip() -> None:
    """Compatible providers send finish reasons OpenAI does not; the SDK keeps them, so do we."""
    body = chat([message(content="ok")]).model_dump()
    body["choices"][0]["finish_reason"] = "eos"
    odd = ChatCompletion.model_construct(**body)
    chunks = replay_chat(odd, include_usage=True)
    assert chunks[-2].choices[0].finish_reason == "eos"
    assembled = assemble_chat(chunks)
    assert assembled is not None and assembled.model_dump() == body


# ---------------------------------------------------------------- chat: property


texts = st.text(max_size=200)


@st.composite
def token_lists(draw: st.DrawFn, text: str | None) -> list[dict[str, Any]] | None:
    """Logprob tokens that spell ``text``, or arbitrary ones, or none."""
    kind = draw(st.sampled_from(["none", "spell", "other"]))
    if kind == "none":
        return None
    if kind == "spell" and text:
        cuts = (
            sorted(set(draw(st.lists(st.integers(1, len(text) - 1), max_size=30))))
            if len(text) > 1
            else []
        )
        bounds = [0, *cuts, len(text)]
        tokens = [text[a:b] for a, b in itertools.pairwise(bounds)]
    else:
        tokens = draw(st.lists(st.text(min_size=1, max_size=5), max_size=5))
    return [
        {
            "token": t,
            "bytes": list(t.encode("utf-8", "surrogatepass")),
            "logprob": -1.5,
            "top_logprobs": [],
        }
        for t in tokens
    ]


@st.composite
def chat_choices(draw: st.DrawFn, index: int) -> dict[str, Any]:
    content = draw(st.none() | texts)
    refusal = draw(st.none() | texts)
    fields: dict[str, Any] = {"content": content, "refusal": refusal}
    calls = draw(st.lists(st.tuples(st.text(min_size=1, max_size=20), texts), max_size=3))
    if calls:
        fields["tool_calls"] = [
            {
                "id": f"call_{index}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
            for i, (name, args) in enumerate(calls)
        ]
    fields["annotations"] = draw(st.sampled_from([None, [], [URL_CITATION]]))
    logprobs = None
    if draw(st.booleans()):
        logprobs = {"content": draw(token_lists(content)), "refusal": draw(token_lists(refusal))}
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    return message(index, finish, logprobs, **fields)


@st.composite
def chat_completions(draw: st.DrawFn) -> ChatCompletion:
    n = draw(st.integers(1, 3))
    usage = draw(st.sampled_from([None, USAGE]))
    top = {
        "system_fingerprint": draw(st.sampled_from([None, "fp_44709d6fcb"])),
        "service_tier": draw(st.sampled_from([None, "default", "flex"])),
    }
    return chat([draw(chat_choices(i)) for i in range(n)], usage=usage, **top)


@SETTINGS
@given(chat_completions())
def test_chat_round_trip_law(completion: ChatCompletion) -> None:
    chunks = replay_chat(completion, include_usage=True)
    assembled = assemble_chat(chunks)
    assert assembled is not None
    assert assembled.model_dump() == completion.model_dump()

    streamed = by_choice(chunks)
    for choice in completion.choices:
        mine = streamed[choice.index]
        assert "".join(c.delta.content or "" for c in mine) == (choice.message.content or "")
        assert "".join(c.delta.refusal or "" for c in mine) == (choice.message.refusal or "")
        if choice.logprobs is None:
            assert all(len(c.delta.content or "") <= 64 for c in mine)
        args: dict[int, str] = defaultdict(str)
        for c in mine:
            for call in c.delta.tool_calls or ():
                if call.function is not None:
                    args[call.index] += call.function.arguments or ""
        assert [args[i] for i in range(len(args))] == [
            t.function.arguments for t in choice.message.tool_calls or () if t.type == "function"
        ]
        assert [c.finish_reason for c in mine if c.finish_reason] == [choice.finish_reason]
        assert mine[-1].finish_reason == choice.finish_reason
    if completion.usage is None:
        assert chunks[-1].choices
    else:
        assert chunks[-1].choices == [] and chunks[-1].usage == completion.usage
    without = assemble_chat(replay_chat(completion, include_usage=False))
    assert without is not None
    assert without.model_dump() == completion.model_copy(update={"usage": None}).model_dump()


# ---------------------------------------------------------------- pieces


def test_split_text_never_cuts_a_surrogate_pair() -> None:
    pair = "\ud83d\ude00"  # a str built from lone surrogates (as surrogatepass decoding gives)
    text = "a" * 63 + pair + "b"
    pieces = split_text(text)
    assert pieces == ["a" * 63, pair + "b"]
    assert split_text("") == []
    assert split_text("😀" * 65) == ["😀" * 64, "😀"]


def test_token_groups() -> None:
    assert token_groups("abc", ["a", "b", "c"], size=2) == [range(0, 2), range(2, 3)]
    assert token_groups("abc", ["ab", "d"]) is None
    assert token_groups("", []) is None
    assert token_groups("abcd", ["abcd"], size=2) == [range(0, 1)]


# ---------------------------------------------------------------- legacy completions


def sdk_completion_chunk(choices: list[dict[str, Any]], **extra: Any) -> Completion:
    body = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "gpt-3.5-turbo-instruct",
    }
    return Completion.model_construct(
        **json.loads(json.dumps({**body, "choices": choices, **extra}))
    )


def text_choice(
    index: int, text: str, finish: str | None = None, logprobs: Any = None
) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}


def completion(choices: list[dict[str, Any]], usage: dict[str, Any] | None = USAGE) -> Completion:
    body = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "gpt-3.5-turbo-instruct",
    }
    return Completion.model_validate(
        {**body, "choices": choices, "usage": usage, "system_fingerprint": None}
    )


def test_assemble_completion_stream() -> None:
    lp1 = {
        "tokens": ["Hel", "lo"],
        "token_logprobs": [-0.1, -0.2],
        "top_logprobs": None,
        "text_offset": [0, 3],
    }
    lp2 = {"tokens": ["!"], "token_logprobs": [-0.3], "top_logprobs": None, "text_offset": [5]}
    chunks = [
        sdk_completion_chunk([text_choice(0, "Hello", logprobs=lp1)], system_fingerprint=None),
        sdk_completion_chunk([text_choice(1, "Bye")]),
        sdk_completion_chunk([text_choice(0, "!", "stop", logprobs=lp2)]),
        sdk_completion_chunk([text_choice(1, "", "length")]),
        sdk_completion_chunk([], usage=USAGE),
    ]
    got = assemble_completion(chunks)
    assert got is not None
    merged = {
        "tokens": ["Hel", "lo", "!"],
        "token_logprobs": [-0.1, -0.2, -0.3],
        "top_logprobs": None,
        "text_offset": [0, 3, 5],
    }
    expected = completion(
        [text_choice(0, "Hello!", "stop", merged), text_choice(1, "Bye", "length")]
    )
    assert got.model_dump() == expected.model_dump()
    assert assemble_completion(chunks[:3]) is None
    assert assemble_completion([]) is None
    assert assemble_completion(chunks[-1:]) is None


def test_replay_completion_shape() -> None:
    text = "Once upon a time, " * 10
    done = completion([text_choice(0, text, "length")])
    chunks = replay_completion(done, include_usage=True)
    *pieces, usage = chunks
    assert [c.choices[0].text for c in pieces] == split_text(text)
    assert [c.choices[0].finish_reason for c in pieces] == [None] * (len(pieces) - 1) + ["length"]
    assert usage.choices == [] and usage.usage == done.usage
    assert all(c.usage is None and c.object == "text_completion" for c in pieces)
    for chunk in chunks:
        assert_like_sdk_parsed(chunk)
    assert replay_completion(done, include_usage=False)[-1].choices[0].finish_reason == "length"


@st.composite
def completions(draw: st.DrawFn) -> Completion:
    choices = []
    for i in range(draw(st.integers(1, 3))):
        text = draw(texts)
        logprobs = None
        tokens = draw(token_lists(text))
        if tokens is not None:
            names = [t["token"] for t in tokens]
            logprobs = {
                "tokens": names,
                "token_logprobs": [t["logprob"] for t in tokens],
                "top_logprobs": draw(st.sampled_from([None, [{n: -1.0} for n in names]])),
                "text_offset": draw(st.sampled_from([None, list(range(len(names)))])),
            }
        choices.append(text_choice(i, text, draw(st.sampled_from(["stop", "length"])), logprobs))
    return completion(choices, usage=draw(st.sampled_from([None, USAGE])))


@SETTINGS
@given(completions())
def test_completion_round_trip_law(done: Completion) -> None:
    chunks = replay_completion(done, include_usage=True)
    assembled = assemble_completion(chunks)
    assert assembled is not None
    assert assembled.model_dump() == done.model_dump()
    for choice in done.choices:
        mine = [c for chunk in chunks for c in chunk.choices if c.index == choice.index]
        assert "".join(c.text for c in mine) == choice.text
        assert [c.finish_reason for c in mine][-1] == choice.finish_reason
        assert all(c.finish_reason is None for c in mine[:-1])
    assert (chunks[-1].usage == done.usage) if done.usage else chunks[-1].choices


# ---------------------------------------------------------------- responses


def response(output: list[dict[str, Any]], status: str = "completed", **top: Any) -> Response:
    body = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_700_000_000,
        "completed_at": 1_700_000_004,
        "model": "gpt-4.1-mini-2025-04-14",
        "status": status,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "usage": {
            "input_tokens": 20,
            "output_tokens": 9,
            "total_tokens": 29,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
        **top,
    }
    return Response.model_validate(body)


def output_text(text: str, **fields: Any) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], **fields}


def message_item(*parts: dict[str, Any], item_id: str = "msg_1") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "completed",
        "content": list(parts),
    }


FUNCTION_ITEM = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "get_weather",
    "arguments": json.dumps({"city": "Paris", "units": "celsius", "days": list(range(20))}),
    "status": "completed",
}
REASONING_ITEM = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "Thought."}],
}
ANNOTATION = {
    "type": "url_citation",
    "start_index": 0,
    "end_index": 5,
    "title": "T",
    "url": "https://example.org/",
}
LOGPROB = {
    "token": "Hi",
    "bytes": [72, 105],
    "logprob": -0.01,
    "top_logprobs": [{"token": "Hi", "bytes": [72, 105], "logprob": -0.01}],
}


def test_replay_response_event_sequence() -> None:
    text = "Paris is the capital of France. " * 5 + "🇫🇷"
    done = response(
        [
            REASONING_ITEM,
            message_item(
                output_text(text, annotations=[ANNOTATION]), {"type": "refusal", "refusal": "No."}
            ),
            FUNCTION_ITEM,
            {
                "type": "custom_tool_call",
                "id": "ctc_1",
                "call_id": "call_2",
                "name": "shell",
                "input": "echo hi",
            },
        ]
    )
    events = replay_response(done)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for event in events:  # each is the SDK's own event class, and survives its JSON
        again = EVENTS.validate_python(json.loads(event.to_json()))
        assert type(again) is type(event) and again.model_dump() == event.model_dump()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    opening = events[0].response  # type: ignore[union-attr]
    assert (opening.status, opening.output, opening.usage, opening.completed_at) == (
        "in_progress",
        [],
        None,
        None,
    )
    assert kinds[2:4] == [
        "response.output_item.added",
        "response.output_item.done",
    ]  # reasoning: whole
    message_kinds = kinds[4 : kinds.index("response.output_item.done", 4) + 1]
    assert message_kinds[:2] == ["response.output_item.added", "response.content_part.added"]
    assert message_kinds.count("response.output_text.delta") == len(split_text(text))
    assert message_kinds[-8:] == [
        "response.output_text.annotation.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    added = events[4].item  # type: ignore[union-attr]
    assert (
        isinstance(added, ResponseOutputMessage)
        and added.content == []
        and added.status == "in_progress"
    )
    part = events[5].part  # type: ignore[union-attr]
    assert isinstance(part, ResponseOutputText) and part.text == ""
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == done.output_text and all(len(d) <= 64 for d in deltas)
    fn_added = next(
        e.item for e in events if e.type == "response.output_item.added" and e.output_index == 2
    )
    assert isinstance(fn_added, ResponseFunctionToolCall)
    assert (fn_added.arguments, fn_added.status) == ("", "in_progress")
    args = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(args) == FUNCTION_ITEM["arguments"] and len(args) > 1
    assert all(
        e.item_id == "fc_1" for e in events if e.type.startswith("response.function_call_arguments")
    )
    custom = [e.delta for e in events if e.type == "response.custom_tool_call_input.delta"]
    assert custom == ["echo hi"]
    assert kinds[-1] == "response.completed" and events[-1].response is done  # type: ignore[union-attr]
    assembled = assemble_response(events)
    assert assembled is not None and assembled.model_dump() == done.model_dump()


def test_replay_response_incomplete_and_logprobs() -> None:
    done = response(
        [message_item(output_text("Hi", logprobs=[LOGPROB]))],
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
    )
    events = replay_response(done)
    assert events[-1].type == "response.incomplete"
    assert events[0].response.incomplete_details is None  # type: ignore[union-attr]
    text_done = next(e for e in events if e.type == "response.output_text.done")
    assert [lp.token for lp in text_done.logprobs] == ["Hi"]
    assert all(e.logprobs == [] for e in events if e.type == "response.output_text.delta")
    assembled = assemble_response(events)
    assert assembled is not None and assembled.model_dump() == done.model_dump()


def test_assemble_response_needs_a_terminal_event() -> None:
    done = response([message_item(output_text("Hello"))])
    events = replay_response(done)
    assert assemble_response(events[:-1]) is None
    assert assemble_response([]) is None
    error = EVENTS.validate_python({"type": "error", "message": "boom", "sequence_number": 99})
    assert assemble_response([*events, error]) is None
    failed = EVENTS.validate_python(
        {
            "type": "response.failed",
            "sequence_number": 5,
            "response": response([], status="failed").model_dump(),
        }
    )
    assert assemble_response([*events[:-1], failed]) is None
    # As the SDK parses a live stream (discriminated union, no validation).
    parsed = [EVENTS.validate_python(json.loads(e.to_json())) for e in events]
    got = assemble_response(parsed)
    assert got is not None and got.model_dump() == done.model_dump()


@st.composite
def responses(draw: st.DrawFn) -> Response:
    output: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["message", "function_call", "reasoning"]))
        if kind == "message":
            parts = draw(
                st.lists(
                    st.one_of(
                        texts.map(output_text),
                        texts.map(lambda t: {"type": "refusal", "refusal": t}),
                    ),
                    max_size=3,
                )
            )
            output.append(message_item(*parts, item_id=f"msg_{i}"))
        elif kind == "function_call":
            output.append({**FUNCTION_ITEM, "id": f"fc_{i}", "arguments": draw(texts)})
        else:
            output.append({**REASONING_ITEM, "id": f"rs_{i}"})
    return response(output, status=draw(st.sampled_from(["completed", "incomplete"])))


@SETTINGS
@given(responses())
def test_response_round_trip_law(done: Response) -> None:
    events = replay_response(done)
    assembled = assemble_response(events)
    assert assembled is not None and assembled.model_dump() == done.model_dump()
    assert (
        "".join(e.delta for e in events if e.type == "response.output_text.delta")
        == done.output_text
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_assemble_chat_accepts_a_finish_chunk_without_delta() -> None:
    # Some providers send {"delta": null} with the finish reason; the SDK builds such chunks
    # leniently (construct), and assembling them must not fail.
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        ChatCompletionChunk.construct(
            **base, choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]
        ),
        ChatCompletionChunk.construct(
            **base, choices=[{"index": 0, "delta": None, "finish_reason": "stop"}]
        ),
    ]
    done = assemble_chat(chunks)
    assert done is not None
    assert done.choices[0].message.content == "Hi"
    assert done.choices[0].finish_reason == "stop"
