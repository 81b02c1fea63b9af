"""``POST /v1/responses``: the Responses API, built as pure values.

``input`` is a string (one user message) or a list of items: messages (``role`` + ``content``
as a string or ``input_text`` parts), ``function_call`` and ``function_call_output`` items.
The answer is a ``message`` output item quoting the last user message, or one ``function_call``
item when function ``tools`` are given, ``tool_choice`` is not ``"none"`` and the last item is
not a ``function_call_output``. ``max_output_tokens`` cuts the text (``status: "incomplete"``,
``incomplete_details.reason: "max_output_tokens"``); ``[content_filter]`` in the last user
message cuts it short (reason ``"content_filter"``).

``usage.input_tokens`` is :func:`accounting.count_message_tokens` of ``instructions`` (as a
system message) followed by the input messages, tool items counted by their text.

Streams send ``event: <type>`` + ``data:`` lines with increasing ``sequence_number``:
``response.created``, ``response.in_progress``, ``response.output_item.added``, then
``response.content_part.added``, ``response.output_text.delta`` (one per token),
``response.output_text.done``, ``response.content_part.done`` for a message (or
``response.function_call_arguments.delta``/``.done`` for a call), ``response.output_item.done``,
and ``response.completed`` (``response.incomplete`` when cut, as OpenAI does).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from llmcache.testing.answers import Answer, answer_text, cut, hex_id, request_seed
from llmcache.testing.sse import Event, json_event
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

__all__ = ["responses"]

_MAX_TOKENS = 1 << 20


def _turns(raw: object) -> list[dict[str, Any]]:
    """The ``input`` as chat messages; items of other types are skipped."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise BadRequest("'input' must be a string or an array of items", param="input")
    turns: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise BadRequest(f"input[{i}] must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "message" and isinstance(item.get("role"), str):
            turns.append({"role": item["role"], "content": message_text(item.get("content"))})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else message_text(output)
            turns.append({"role": "tool", "content": text})
        elif kind == "function_call":
            turns.append({"role": "assistant", "content": str(item.get("arguments", ""))})
        # Other items (reasoning, web search calls …) carry nothing this server answers from.
    if not turns:
        raise BadRequest("'input' holds no message or function call output", param="input")
    return turns


def _conversation(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request as chat messages (instructions first), for counting and quoting."""
    turns = _turns(require(body, "input"))
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        return [{"role": "system", "content": instructions}, *turns]
    return turns


def _functions(body: Mapping[str, Any]) -> tuple[list[tuple[str, object]], str | None, bool]:
    tools = body.get("tools")
    functions = [
        (tool["name"], tool.get("parameters"))
        for tool in (tools if isinstance(tools, list) else ())
        if isinstance(tool, Mapping) and tool.get("type") == "function"
        if isinstance(tool.get("name"), str)
    ]
    choice = body.get("tool_choice")
    forced = choice.get("name") if isinstance(choice, Mapping) else None
    return (
        functions,
        forced if isinstance(forced, str) else None,
        bool(functions) and (choice != "none"),
    )


def _tools(body: Mapping[str, Any]) -> list[Any]:
    """The request's tools as the response echoes them (function tools completed)."""
    tools = body.get("tools")
    echoed: list[Any] = []
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, Mapping) and tool.get("type") == "function":
            echoed.append({"description": None, "parameters": None, "strict": True, **tool})
        else:
            echoed.append(tool)
    return echoed


def responses(body: Mapping[str, Any], *, now: int) -> Reply:
    """The answer to a Responses API request.

    Args:
        body: the decoded request body.
        now: the ``created_at`` timestamp.

    Returns:
        A ``response`` document, or the stream's events when ``stream``.

    Raises:
        BadRequest: a required field is missing or a field is invalid.
    """
    model = require(body, "model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string", param="model")
    messages = _conversation(body)
    limit = int_field(body, "max_output_tokens", low=1, high=_MAX_TOKENS)
    seed = request_seed("responses", body)
    users = [m for m in messages if m["role"] == "user"]
    user_text = users[-1]["content"] if users else ""
    last = messages[-1]
    quote = last["content"] if last["role"] == "tool" else user_text
    functions, forced, call = _functions(body)
    answer: Answer | ToolCall
    if call and last["role"] != "tool":
        name, parameters = choose_function(functions, forced)
        answer = ToolCall.make(name, parameters, seed=seed, quote=quote, index=0, model=model)
    else:
        text = answer_text(seed, quote)
        answer = cut(text, model, max_tokens=limit, content_filter=wants_filter(user_text))
    input_tokens = prompt_tokens(messages, model)
    incomplete = None
    if isinstance(answer, Answer) and answer.finish_reason != "stop":
        reason = (
            "content_filter" if answer.finish_reason == "content_filter" else "max_output_tokens"
        )
        incomplete = {"reason": reason}
    response = {
        "id": f"resp_{hex_id(seed, 'response', 48)}",
        "object": "response",
        "created_at": now,
        "status": "completed" if incomplete is None else "incomplete",
        "background": False,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": limit,
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": [_item(seed, answer, done=True)],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": _tools(body),
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": answer.tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + answer.tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    if body.get("stream") is not True:
        return Reply(body=response)
    return Reply(events=_events(seed, answer, response))


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _item(seed: bytes, answer: Answer | ToolCall, *, done: bool) -> dict[str, Any]:
    """The output item; ``done=False`` gives it as ``response.output_item.added`` shows it."""
    if isinstance(answer, ToolCall):
        return {
            "type": "function_call",
            "id": f"fc_{hex_id(seed, 'function_call', 48)}",
            "call_id": answer.call_id,
            "name": answer.name,
            "arguments": answer.arguments if done else "",
            "status": "completed" if done else "in_progress",
        }
    status = "completed" if answer.finish_reason == "stop" else "incomplete"
    return {
        "type": "message",
        "id": f"msg_{hex_id(seed, 'message', 48)}",
        "status": status if done else "in_progress",
        "role": "assistant",
        "content": [_part(answer.text)] if done else [],
    }


def _events(seed: bytes, answer: Answer | ToolCall, response: Mapping[str, Any]) -> list[Event]:
    numbers = itertools.count()

    def event(kind: str, paced: bool = False, **fields: Any) -> Event:
        payload = {"type": kind, "sequence_number": next(numbers), **fields}
        return json_event(payload, event=kind, delta=paced)

    started = {**response, "status": "in_progress", "output": [], "usage": None}
    started["incomplete_details"] = None
    events = [
        event("response.created", response=started),
        event("response.in_progress", response=started),
        event("response.output_item.added", output_index=0, item=_item(seed, answer, done=False)),
    ]
    item = _item(seed, answer, done=True)
    where = {"item_id": item["id"], "output_index": 0}
    if isinstance(answer, ToolCall):
        events.extend(
            event("response.function_call_arguments.delta", paced=True, **where, delta=piece)
            for piece in answer.pieces
        )
        events.append(
            event("response.function_call_arguments.done", **where, arguments=answer.arguments)
        )
    else:
        at = {**where, "content_index": 0}
        events.append(event("response.content_part.added", **at, part=_part("")))
        events.extend(
            event("response.output_text.delta", paced=True, **at, delta=piece, logprobs=[])
            for piece in answer.pieces
        )
        events.append(event("response.output_text.done", **at, text=answer.text, logprobs=[]))
        events.append(event("response.content_part.done", **at, part=_part(answer.text)))
    events.append(event("response.output_item.done", output_index=0, item=item))
    final = "response.completed" if response["status"] == "completed" else "response.incomplete"
    events.append(event(final, response=response))
    return events
