"""Streams ↔ complete results for chat, legacy completions and the Responses API (pure).

A cache entry is the complete result whether the request streamed or not. A streamed miss is
*assembled* from the chunks the caller read; a streamed hit is *replayed*: the stored result
is turned back into the SDK's own chunk and event objects. For every complete result ``r``,
``assemble(replay(r))`` has the same ``model_dump()`` as ``r`` (chat and completions with
``include_usage=True``; without it the usage is not streamed, as with OpenAI).

Replay choices:

- Text (content, refusal, tool-call arguments, reasoning text, response output text) is cut
  into pieces of at most 64 code points; a surrogate pair is never cut. Chat content and
  completion text whose logprob tokens spell it exactly are cut on token boundaries instead
  (pieces of whole tokens, ≤ 64 code points unless one token is longer) and each chunk carries
  its own tokens' logprobs, as OpenAI's chunks do; logprobs that do not spell the text ride
  whole on the choice's finish chunk (chat) or last chunk (completions).
- Chat, per choice: a role delta (``role="assistant"``, ``content=""``, or ``None`` when the
  message has no content, ``refusal=None``), audio (id, transcript pieces, base64 data in
  4096-character pieces, expiry), string extras (``reasoning_content`` of compatible
  providers), content, refusal, annotations (on the role delta when ``[]``), other extras, tool
  calls (first delta: index, id, type, name, empty arguments; then argument pieces; custom
  tool calls as ``custom: {name, input}``), legacy ``function_call``, then an empty delta with
  the ``finish_reason``. Several choices are interleaved round-robin, one choice per chunk,
  as OpenAI interleaves them. The completion's ``moderation`` rides on the last choice chunk.
- Every chunk shares id, created, model, system_fingerprint, service_tier; with
  ``include_usage`` each has ``usage=None`` and a last chunk with ``choices=[]`` carries the
  usage (only when the result has usage).
- Responses: ``response.created`` and ``response.in_progress`` (the response with status
  ``in_progress``, no output, usage, ``completed_at`` or ``incomplete_details``), then per
  output item the events OpenAI sends for it (text deltas carry ``logprobs=[]``; the text's
  logprobs ride on ``response.output_text.done``), and ``response.completed``,
  ``response.incomplete`` or ``response.failed`` after the response's status.

What does not round-trip (no chunk field carries it): a chat completion's ``metadata``,
chunk-level and choice-level extra fields, ``obfuscation``, message extras whose value is
``null``, and ``tool_calls=[]`` (comes back as ``None``). A result with no choices cannot be
assembled. Objects are built by validating plain data (pydantic-core, a few µs per chunk),
falling back to the SDK's lenient construction for values outside the SDK's literals. Built
objects may share leaf objects (logprob entries, usage, response items) with their source:
treat both as read-only.
"""

from __future__ import annotations

from llmcache.openai._chat_stream import assemble_chat, replay_chat
from llmcache.openai._completion_stream import assemble_completion, replay_completion
from llmcache.openai._response_stream import assemble_response, replay_response

__all__ = [
    "assemble_chat",
    "assemble_completion",
    "assemble_response",
    "replay_chat",
    "replay_completion",
    "replay_response",
]
