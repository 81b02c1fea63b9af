"""Responses API: a ``ResponseStreamEvent`` stream → ``Response`` and back.

See :mod:`llmcache.openai.streams` for the rules both directions follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseCustomToolCallInputDoneEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputTextAnnotationAddedEvent,
    ResponseRefusalDeltaEvent,
    ResponseRefusalDoneEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from pydantic import BaseModel

from llmcache.openai._pieces import build, split_text

__all__ = ["assemble_response", "replay_response"]

_TERMINAL = {"response.completed", "response.incomplete"}
_FAILED = {"response.failed", "error"}
_FINAL_EVENT: dict[str | None, type[BaseModel]] = {
    "incomplete": ResponseIncompleteEvent,
    "failed": ResponseFailedEvent,
}


def assemble_response(events: Sequence[ResponseStreamEvent]) -> Response | None:
    """The complete ``Response`` of a Responses API stream.

    Args:
        events: the events as the SDK yielded them.

    Returns:
        The ``response`` of the last ``response.completed`` or ``response.incomplete`` event;
        ``None`` when there is none or the stream reported a failure (``response.failed``,
        ``error``).
    """
    final: Response | None = None
    for event in events:
        kind = getattr(event, "type", None)
        if kind in _FAILED:
            return None
        if kind in _TERMINAL:
            final = getattr(event, "response", None)
    return final


class _Events:
    """Events being numbered as they are made."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def add(self, cls: type[BaseModel], **fields: Any) -> None:
        # Every event class's ``type`` is a one-value Literal: the event's name.
        fields["type"] = get_args(cls.model_fields["type"].annotation)[0]
        fields["sequence_number"] = len(self.events)
        self.events.append(build(cls, fields))


def replay_response(response: Response) -> list[ResponseStreamEvent]:
    """The events a Responses API stream would have sent for ``response``.

    Args:
        response: the complete result.

    Returns:
        The events, numbered from 0; :func:`assemble_response` gives ``response`` back from
        them (unless its status is ``"failed"``, replayed as ``response.failed``).
    """
    out = _Events()
    # The opening snapshots: nothing produced yet.
    opening = response.model_copy(
        update={
            "status": "in_progress",
            "output": [],
            "usage": None,
            "completed_at": None,
            "incomplete_details": None,
        }
    )
    out.add(ResponseCreatedEvent, response=opening)
    out.add(ResponseInProgressEvent, response=opening)
    for index, item in enumerate(response.output):
        _item_events(out, index, item)
    out.add(_FINAL_EVENT.get(response.status, ResponseCompletedEvent), response=response)
    return out.events


def _item_events(out: _Events, index: int, item: Any) -> None:
    """``output_item.added``, what builds the item up, ``output_item.done``."""
    item_id = getattr(item, "id", None) or ""
    where = {"item_id": item_id, "output_index": index}
    if item.type == "message":
        added = item.model_copy(update={"content": [], "status": "in_progress"})
        out.add(ResponseOutputItemAddedEvent, item=added, output_index=index)
        for content_index, part in enumerate(item.content):
            _part_events(out, {**where, "content_index": content_index}, part)
    elif item.type == "function_call":
        added = item.model_copy(update={"arguments": "", "status": "in_progress"})
        out.add(ResponseOutputItemAddedEvent, item=added, output_index=index)
        for piece in split_text(item.arguments):
            out.add(ResponseFunctionCallArgumentsDeltaEvent, delta=piece, **where)
        out.add(ResponseFunctionCallArgumentsDoneEvent, arguments=item.arguments, **where)
    elif item.type == "custom_tool_call":
        out.add(
            ResponseOutputItemAddedEvent,
            item=item.model_copy(update={"input": ""}),
            output_index=index,
        )
        for piece in split_text(item.input):
            out.add(ResponseCustomToolCallInputDeltaEvent, delta=piece, **where)
        out.add(ResponseCustomToolCallInputDoneEvent, input=item.input, **where)
    else:  # reasoning, web search, file search …: the finished item, twice
        out.add(ResponseOutputItemAddedEvent, item=item, output_index=index)
    out.add(ResponseOutputItemDoneEvent, item=item, output_index=index)


def _part_events(out: _Events, where: dict[str, Any], part: Any) -> None:
    """One message content part: added (empty), its deltas, the text's done, part done."""
    if part.type == "output_text":
        empty: dict[str, Any] = {"text": "", "annotations": []}
        if part.logprobs is not None:
            empty["logprobs"] = []
        out.add(ResponseContentPartAddedEvent, part=part.model_copy(update=empty), **where)
        for piece in split_text(part.text):
            # The delta event's logprobs are required; the tokens ride on the done event.
            out.add(ResponseTextDeltaEvent, delta=piece, logprobs=[], **where)
        for i, annotation in enumerate(part.annotations):
            out.add(
                ResponseOutputTextAnnotationAddedEvent,
                annotation=annotation.model_dump(),
                annotation_index=i,
                **where,
            )
        logprobs = [_token(lp) for lp in part.logprobs or ()]
        out.add(ResponseTextDoneEvent, text=part.text, logprobs=logprobs, **where)
    elif part.type == "refusal":
        out.add(
            ResponseContentPartAddedEvent, part=part.model_copy(update={"refusal": ""}), **where
        )
        for piece in split_text(part.refusal):
            out.add(ResponseRefusalDeltaEvent, delta=piece, **where)
        out.add(ResponseRefusalDoneEvent, refusal=part.refusal, **where)
    else:  # a part type this SDK does not know: announce it whole
        out.add(ResponseContentPartAddedEvent, part=part, **where)
    out.add(ResponseContentPartDoneEvent, part=part, **where)


def _token(logprob: Any) -> dict[str, Any]:
    """An output text logprob as the done event's (distinct, byte-less) logprob type."""
    top = [{"token": t.token, "logprob": t.logprob} for t in logprob.top_logprobs]
    return {"token": logprob.token, "logprob": logprob.logprob, "top_logprobs": top}
