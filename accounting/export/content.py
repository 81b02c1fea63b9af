"""Prompt and completion text in the GenAI conventions' message format (opt-in only).

Nothing here runs unless the user switches content capture on. The conventions record the
prompt as ``gen_ai.input.messages`` and the completion as ``gen_ai.output.messages``: a list of
``{"role", "parts": [...]}`` objects (``docs/gen-ai/gen-ai-input-messages.json`` and
``gen-ai-output-messages.json`` of the semantic conventions), serialized to a JSON string on
spans, since span attributes cannot hold structured values yet ("Recording content on
attributes"). Media (images, audio, files) is replaced by a part naming its type: the
payload would be large and is not text.

Pure functions on plain values: OpenAI-style message mappings, pydantic models from the
OpenAI SDK (read through ``model_dump``), or plain strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["input_messages_json", "output_messages_json"]

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


def _plain(value: Any) -> Any:
    """``value`` as plain data: pydantic models dumped, everything else as is."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, Mapping):
        return dump()
    return value


def _parts(content: Any) -> list[dict[str, Any]]:
    content = _plain(content)
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, Sequence):
        for raw in content:
            item = _plain(raw)
            if isinstance(item, str):
                parts.append({"type": "text", "content": item})
            elif isinstance(item, Mapping):
                kind = str(item.get("type", "unknown"))
                if kind in _TEXT_PART_TYPES:
                    parts.append({"type": "text", "content": str(item.get("text", ""))})
                else:
                    parts.append({"type": kind})  # media: its type, not its bytes
    return parts


def _arguments(raw: Any) -> Any:
    # The conventions want tool arguments as an object; OpenAI sends a JSON string.
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for raw in calls or ():
        call = _plain(raw)
        if not isinstance(call, Mapping):
            continue
        function = _plain(call.get("function")) or {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": str(function.get("name", "")),
                "arguments": _arguments(function.get("arguments")),
            }
        )
    return parts


def _message(message: Any) -> dict[str, Any]:
    message = _plain(message)
    if isinstance(message, str):
        return {"role": "user", "parts": [{"type": "text", "content": message}]}
    if not isinstance(message, Mapping):
        return {"role": "user", "parts": [{"type": "text", "content": str(message)}]}
    role = str(message.get("role", "user"))
    if role == "tool":
        parts: list[dict[str, Any]] = [
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id"),
                "response": _plain(message.get("content")),
            }
        ]
    else:
        parts = _parts(message.get("content"))
        parts.extend(_tool_calls(message.get("tool_calls")))
    out: dict[str, Any] = {"role": role, "parts": parts}
    if isinstance(message.get("name"), str):
        out["name"] = message["name"]
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def input_messages_json(messages: Sequence[Any] | str) -> str:
    """The prompt as the JSON of ``gen_ai.input.messages``.

    Args:
        messages: OpenAI chat messages (mappings or SDK models), or a plain prompt string
            (legacy completions, embeddings input), or a list of such strings.

    Returns:
        A JSON array of ``{"role", "parts"}`` messages.
    """
    if isinstance(messages, str):
        return _dumps([_message(messages)])
    return _dumps([_message(m) for m in messages])


def output_messages_json(outputs: Sequence[Any], finish_reasons: Sequence[str] = ()) -> str:
    """The completion as the JSON of ``gen_ai.output.messages``.

    Args:
        outputs: OpenAI ``choices`` (each with ``message`` and ``finish_reason``), or
            assistant messages, or strings.
        finish_reasons: used for an output that does not carry its own, by position.

    Returns:
        A JSON array of ``{"role", "parts", "finish_reason"}`` messages.
    """
    result = []
    for index, output in enumerate(outputs):
        item = _plain(output)
        reason: Any = None
        if isinstance(item, Mapping) and "message" in item:
            reason = item.get("finish_reason")
            item = item["message"]
        elif isinstance(item, Mapping):
            reason = item.get("finish_reason")
        message = _message(item)
        if not isinstance(item, Mapping) or "role" not in item:
            message["role"] = "assistant"
        if reason is None and index < len(finish_reasons):
            reason = finish_reasons[index]
        message["finish_reason"] = str(reason) if reason is not None else "unknown"
        result.append(message)
    return _dumps(result)
