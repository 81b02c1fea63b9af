"""``POST /v1/chat/completions`` and ``POST /v1/completions`` (legacy), built as pure values.

The answer to a chat request (see :mod:`llmcache.testing.answers`):

- text quoting the last user message (or the last tool result), one per ``n`` choice;
- a call of the first function tool, or the one ``tool_choice`` names, when ``tools`` are given,
  ``tool_choice`` is not ``"none"`` and the last message is not a ``tool`` message
  (``finish_reason: "tool_calls"``, ``content: null``; ``max_tokens`` does not cut calls);
- cut to ``max_completion_tokens`` / ``max_tokens`` (``finish_reason: "length"``), or cut short
  when the last user message contains ``[content_filter]`` (``"content_filter"``).

``usage.prompt_tokens`` is :func:`accounting.count_message_tokens` of ``messages`` (tool
definitions not included); ``completion_tokens`` the tokens of the text sent, or of the called
function's name plus its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from accounting import count_tokens
from llmcache.testing.answers import (
    Answer,
    answer_text,
    counting_model,
    cut,
    hex_id,
    request_seed,
)
from llmcache.testing.sse import DONE, Event, json_event
from llmcache.testing.wire import (
    BadRequest,
    Reply,
    ToolCall,
    choose_function,
    int_field,
    message_text,
    prompt_tokens,
    require,
    wants_filter,
)

__all__ = ["FINGERPRINT", "chat_completions", "completions"]

#: The ``system_fingerprint`` of every answer.
FINGERPRINT = "fp_llmcache_testing"

_MAX_N = 128
_MAX_TOKENS = 1 << 20


def _model(body: Mapping[str, Any]) -> str:
    model = require(body, "model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string", param="model")
    return model


def _limit(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = int_field(body, name, low=1, high=_MAX_TOKENS)
        if value is not None:
            return value
    return None


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = require(body, "messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a 'role'", param="messages")
    return messages


def _functions(body: Mapping[str, Any]) -> tuple[list[tuple[str, object]], str | None, bool]:
    """(function tools as (name, parameters), the name tool_choice forces, whether to call)."""
    tools = body.get("tools")
    functions: list[tuple[str, object]] = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            functions.append((function["name"], function.get("parameters")))
    choice = body.get("tool_choice")
    forced = None
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        forced = choice["function"].get("name")
    return (
        functions,
        forced if isinstance(forced, str) else None,
        bool(functions) and (choice != "none"),
    )


def chat_completions(body: Mapping[str, Any], *, now: int) -> Reply:
    """The answer to a chat completions request.

    Args:
        body: the decoded request body.
        now: the ``created`` timestamp.

    Returns:
        A ``chat.completion`` document, or ``chat.completion.chunk`` events when ``stream``.

    Raises:
        BadRequest: a required field is missing or a field is invalid.
    """
    model = _model(body)
    messages = _messages(body)
    n = int_field(body, "n", low=1, high=_MAX_N) or 1
    limit = _limit(body, "max_completion_tokens", "max_tokens")
    seed = request_seed("chat.completions", body)
    users = [m for m in messages if m["role"] == "user"]
    user_text = message_text(users[-1].get("content")) if users else ""
    last = messages[-1]
    quote = message_text(last.get("content")) if last["role"] == "tool" else user_text
    functions, forced, call = _functions(body)
    choices: list[Answer | ToolCall] = []
    for index in range(n):
        if call and last["role"] != "tool":
            name, parameters = choose_function(functions, forced)
            choices.append(
                ToolCall.make(name, parameters, seed=seed, quote=quote, index=index, model=model)
            )
        else:
            text = answer_text(seed, quote, index)
            choices.append(
                cut(text, model, max_tokens=limit, content_filter=wants_filter(user_text))
            )
    usage = _usage(prompt_tokens(messages, model), sum(c.tokens for c in choices))
    head = {
        "id": f"chatcmpl-{hex_id(seed, 'chat')}",
        "created": now,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    if body.get("stream") is not True:
        return Reply(
            body={
                **head,
                "object": "chat.completion",
                "choices": [_choice(i, c) for i, c in enumerate(choices)],
                "usage": usage,
            }
        )
    return Reply(events=_chat_events(head, choices, usage if _include_usage(body) else None))


def _choice(index: int, answer: Answer | ToolCall) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "refusal": None, "annotations": []}
    if isinstance(answer, ToolCall):
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": answer.call_id,
                "type": "function",
                "function": {"name": answer.name, "arguments": answer.arguments},
            }
        ]
        reason = "tool_calls"
    else:
        message["content"] = answer.text
        reason = answer.finish_reason
    return {"index": index, "message": message, "logprobs": None, "finish_reason": reason}


def _chat_events(
    head: Mapping[str, Any], choices: Sequence[Answer | ToolCall], usage: Mapping[str, Any] | None
) -> list[Event]:
    # With include_usage every chunk carries "usage": null until the last one, as OpenAI does.
    extra = {} if usage is None else {"usage": None}

    def chunk(index: int, delta: Mapping[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**head, "object": "chat.completion.chunk", "choices": [choice], **extra}

    events: list[Event] = []
    for index, answer in enumerate(choices):
        if isinstance(answer, ToolCall):
            call = {
                "index": 0,
                "id": answer.call_id,
                "type": "function",
                "function": {"name": answer.name, "arguments": ""},
            }
            first = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
            events.append(json_event(chunk(index, first)))
            events.extend(
                json_event(
                    chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    delta=True,
                )
                for piece in answer.pieces
            )
            events.append(json_event(chunk(index, {}, "tool_calls")))
        else:
            first = {"role": "assistant", "content": "", "refusal": None}
            events.append(json_event(chunk(index, first)))
            events.extend(
                json_event(chunk(index, {"content": piece}), delta=True) for piece in answer.pieces
            )
            events.append(json_event(chunk(index, {}, answer.finish_reason)))
    if usage is not None:
        events.append(
            json_event({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        )
    events.append(DONE)
    return events


def _prompts(body: Mapping[str, Any]) -> list[str | list[int]]:
    prompt = require(body, "prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [prompt]
        if all(isinstance(p, str) for p in prompt) or all(
            isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt
        ):
            return list(prompt)
    raise BadRequest(
        "'prompt' must be a string, an array of strings, or token arrays", param="prompt"
    )


def completions(body: Mapping[str, Any], *, now: int) -> Reply:
    """The answer to a legacy completions request: ``n`` choices per prompt.

    Args:
        body: the decoded request body.
        now: the ``created`` timestamp.

    Returns:
        A ``text_completion`` document, or ``text_completion`` chunk events when ``stream``.

    Raises:
        BadRequest: a required field is missing or a field is invalid.
    """
    model = _model(body)
    prompts = _prompts(body)
    n = int_field(body, "n", low=1, high=_MAX_N) or 1
    limit = _limit(body, "max_tokens")
    seed = request_seed("completions", body)
    counted = counting_model(model)
    prompt = 0
    answers: list[Answer] = []
    for text in prompts:
        quote = text if isinstance(text, str) else ""
        prompt += count_tokens(text, counted) if isinstance(text, str) else len(text)
        for _ in range(n):
            full = answer_text(seed, quote, len(answers))
            answers.append(cut(full, model, max_tokens=limit, content_filter=wants_filter(quote)))
    completion = sum(a.tokens for a in answers)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    head = {
        "id": f"cmpl-{hex_id(seed, 'completion')}",
        "object": "text_completion",
        "created": now,
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }
    if body.get("stream") is not True:
        choices = [
            {"text": a.text, "index": i, "logprobs": None, "finish_reason": a.finish_reason}
            for i, a in enumerate(answers)
        ]
        return Reply(body={**head, "choices": choices, "usage": usage})
    include_usage = _include_usage(body)
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, text: str, reason: str | None = None) -> dict[str, Any]:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
        return {**head, "choices": [choice], **extra}

    events: list[Event] = []
    for index, answer in enumerate(answers):
        events.extend(json_event(chunk(index, piece), delta=True) for piece in answer.pieces)
        events.append(json_event(chunk(index, "", answer.finish_reason)))
    if include_usage:
        events.append(json_event({**head, "choices": [], "usage": usage}))
    events.append(DONE)
    return Reply(events=events)
