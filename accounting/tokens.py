"""Token counts with tiktoken, offline: text, chat messages, tool definitions.

Which tokenizer: the model name goes through tiktoken's own mapping
(``tiktoken.encoding_name_for_model``: exact names, then tiktoken's table of dated-version
prefixes such as ``gpt-4o-`` → ``o200k_base``); we add no matching of our own. o200k_base serves
gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and the o-series, cl100k_base gpt-4 and gpt-3.5-turbo. The BPE
files come verified from the bpe-openai package (see :mod:`accounting._bpe`), so no network is
ever used.

What is exact and what is not:

- :func:`count_tokens` and :func:`count_message_tokens` answer only for models tiktoken maps to
  cl100k_base or o200k_base; otherwise they raise :class:`UnknownModelError`. Models tiktoken
  maps to other encodings (p50k_base, r50k_base, gpt2 for retired completion models,
  o200k_harmony for gpt-oss) raise too: their files are not available offline, or their chat
  format is not OpenAI's.
- :func:`estimate_prompt_tokens` always answers, for budgets before a call, and labels its
  answer: ``estimated=False`` only when the model's own tokenizer and OpenAI's published counting
  rules give the number exactly. For any other model (another provider's) it counts with
  o200k_base and says ``estimated=True``: that provider's reported usage is the truth.
- Message rules (OpenAI cookbook "How to count tokens with tiktoken"): 3 tokens per message, 1
  per ``name``, 3 priming the reply; ``gpt-3.5-turbo-0301`` (and Azure's ``gpt-35-turbo-0301``),
  matched exactly, had 4 per message and -1 per name.
- Tool definitions follow the cookbook's ``num_tokens_for_tools``; it is an approximation
  (``estimated=True``), exact for the cookbook's example.
- Text in messages is counted as ordinary text: ``"<|endoftext|>"`` typed by a user is what the
  API sees too, not a special token.

Long texts (system prompts above all) are counted once: a bounded LRU keyed on the encoding and a
128-bit blake2b digest of the text keeps the count, so a large prompt costs 16 bytes of key, not
its own size. Encodings are loaded once per process, lazily, thread-safely.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import tiktoken

from accounting import _bpe
from accounting._exceptions import ConfigError, UnknownModelError

__all__ = [
    "Encoder",
    "TokenCacheInfo",
    "TokenCounter",
    "TokenEstimate",
    "count_message_tokens",
    "count_tokens",
    "estimate_prompt_tokens",
]

#: The encoding used to estimate models tiktoken does not know (OpenAI's current one).
ESTIMATE_ENCODING = "o200k_base"


class Encoder(Protocol):
    """The part of :class:`tiktoken.Encoding` a counter uses."""

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of ``text``, special-token text treated as plain text."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenEstimate:
    """A prompt's token count before the call, and whether it is exact.

    Attributes:
        tokens: the count.
        estimated: ``False`` only when the model's own tokenizer and OpenAI's published rules
            give the count exactly (text messages of an OpenAI model tiktoken knows); ``True`` for
            other providers' models, tool definitions, tool calls, images and content lists.
        encoding: the tiktoken encoding that counted the text.
    """

    tokens: int
    estimated: bool
    encoding: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenCacheInfo:
    """Counters of a :class:`TokenCounter`'s cache of long-text counts.

    Attributes:
        hits: counts answered from the cache.
        misses: long texts encoded (short texts are encoded directly and not counted here).
        size: entries held now.
        max_size: the bound on entries.
    """

    hits: int
    misses: int
    size: int
    max_size: int


@dataclass(frozen=True, slots=True)
class _ChatRule:
    """Per-message overheads, from OpenAI's cookbook "How to count tokens with tiktoken"."""

    per_message: int
    per_name: int
    reply_priming: int


# Cookbook, num_tokens_from_messages: "every message follows <|start|>{role/name}\n{content}
# <|end|>\n" (3 tokens), a name adds 1, and "every reply is primed with
# <|start|>assistant<|message|>" (3). Verified there against the API for gpt-3.5-turbo, gpt-4,
# gpt-4o and gpt-4o-mini.
_CHAT = _ChatRule(per_message=3, per_name=1, reply_priming=3)
# Same source, its 2023 version: gpt-3.5-turbo-0301 spent 4 per message and a name replaced the
# role (-1). Exact names only.
_CHAT_0301 = _ChatRule(per_message=4, per_name=-1, reply_priming=3)
_RULE_BY_MODEL: Mapping[str, _ChatRule] = {
    "gpt-3.5-turbo-0301": _CHAT_0301,
    "gpt-35-turbo-0301": _CHAT_0301,
}


@dataclass(frozen=True, slots=True)
class _ToolRule:
    """Overheads of tool definitions, from the cookbook's ``num_tokens_for_tools``."""

    func_init: int
    prop_init: int
    prop_key: int
    enum_init: int
    enum_item: int
    func_end: int


# The cookbook gives these per model (gpt-4o/gpt-4o-mini: 7; gpt-3.5-turbo/gpt-4: 10); the
# split follows the encoding, which is what distinguishes those two families.
_TOOL_RULES: Mapping[str, _ToolRule] = {
    "o200k_base": _ToolRule(7, 3, 3, -3, 3, 12),
    "cl100k_base": _ToolRule(10, 3, 3, -3, 3, 12),
}

# OpenAI's vision pricing guide (gpt-4o, gpt-4-turbo): detail "low" costs 85 tokens; otherwise
# 85 + 170 per 512 px tile of the image scaled into 2048 px and then to 768 px on its short side,
# at most 2 x 4 tiles. Without the image's size we take that maximum.
_IMAGE_LOW_DETAIL = 85
_IMAGE_MAX = 85 + 170 * 8

_TEXT_PARTS = {"text": "text", "refusal": "refusal"}


def _encoding_name(model: str) -> str | None:
    """tiktoken's encoding for ``model``, or ``None`` when tiktoken does not know it."""
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None


def _exact_encoding(model: str) -> str:
    """The encoding that counts ``model``'s tokens exactly, or :class:`UnknownModelError`."""
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, got {type(model).__name__}")
    name = _encoding_name(model)
    if name is None:
        raise UnknownModelError(
            f"no tokenizer is known for model {model!r} (tiktoken does not map it); the "
            "provider's reported usage is its count, and estimate_prompt_tokens() gives a "
            "pre-call estimate labelled as one",
            model=model,
        )
    if name not in _bpe.SPECS:
        raise UnknownModelError(
            f"tiktoken maps model {model!r} to {name}, which cannot be counted offline (the "
            f"verified BPE files available are {', '.join(sorted(_bpe.SPECS))}); "
            "estimate_prompt_tokens() gives a pre-call estimate labelled as one",
            model=model,
        )
    return name


def _as_mapping(value: object, what: str) -> Mapping[str, Any]:
    """A message, part or tool as a mapping: a dict, or a pydantic object (the OpenAI SDK's)."""
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump(exclude_none=True)
        if isinstance(dumped, Mapping):
            return dumped
    raise TypeError(f"{what} must be a mapping, got {type(value).__name__}")


def _json(value: object) -> str:
    """Compact JSON text of a structured value we count as text (an approximation)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


class TokenCounter:
    """Counts tokens with tiktoken and remembers the counts of long texts.

    One per process is enough; the module functions share a default one. Thread-safe.

    Args:
        max_cached_texts: how many long-text counts to keep (least recently used go first);
            0 turns the cache off.
        min_cached_chars: texts shorter than this are encoded every time (it takes
            microseconds, and caching each user turn would only churn the cache).
        load_encoding: returns the encoder for an encoding name; the process-wide, lazily
            loaded tiktoken encodings by default. Tests pass a wrapper that counts calls.

    Raises:
        ConfigError: a bound is negative.
    """

    def __init__(
        self,
        *,
        max_cached_texts: int = 1024,
        min_cached_chars: int = 256,
        load_encoding: Callable[[str], Encoder] | None = None,
    ) -> None:
        for field, value in (
            ("max_cached_texts", max_cached_texts),
            ("min_cached_chars", min_cached_chars),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"must be a non-negative int, got {value!r}", where=f"TokenCounter.{field}"
                )
        self._max_cached = max_cached_texts
        self._min_chars = min_cached_chars
        self._load: Callable[[str], Encoder] = load_encoding or _bpe.get_encoding
        self._encoders: dict[str, Encoder] = {}
        self._lock = threading.Lock()
        self._counts: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._hits = 0
        self._misses = 0

    # -- public -------------------------------------------------------------------------------

    def count_tokens(self, text: str, model: str) -> int:
        """Tokens of ``text`` for ``model``, as its tokenizer splits it.

        Args:
            text: any text; special-token markers in it count as plain text.
            model: an OpenAI model name tiktoken maps (``"gpt-4o"``, ``"gpt-4-0613"`` …).

        Returns:
            The number of tokens.

        Raises:
            UnknownModelError: tiktoken does not map ``model`` to cl100k_base or o200k_base.
            TypeError: ``text`` is not a str.
        """
        encoding = _exact_encoding(model)
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._text(encoding, text)

    def count_message_tokens(self, messages: Iterable[Any], model: str) -> int:
        """Prompt tokens of a chat conversation, as OpenAI bills them.

        OpenAI cookbook "How to count tokens with tiktoken": each message costs 3 tokens plus
        the tokens of each of its string fields (role, content, name, tool_call_id …), a
        ``name`` 1 more, and the reply is primed with 3 (``gpt-3.5-turbo-0301``: 4 and -1).
        Beyond the cookbook, as approximations: a content list counts its text and refusal
        parts; an assistant's ``tool_calls`` (and legacy ``function_call``) count each call's
        function name and arguments plus a message's framing (3 tokens); other structured
        fields count their compact JSON; ``None`` fields count nothing. Use
        :meth:`estimate_prompt_tokens` to learn whether a count is exact.

        Args:
            messages: chat messages: dicts, or the OpenAI SDK's message objects.
            model: an OpenAI model name tiktoken maps.

        Returns:
            The number of prompt tokens (tool definitions not included).

        Raises:
            UnknownModelError: tiktoken does not map ``model`` to cl100k_base or o200k_base.
            ValueError: a content part is not text (an image, audio, a file): its cost cannot
                be counted from the message; :meth:`estimate_prompt_tokens` estimates images.
            TypeError: ``messages`` or a message has the wrong shape.
        """
        encoding = _exact_encoding(model)
        tokens, _ = self._messages(messages, encoding, _RULE_BY_MODEL.get(model, _CHAT), True)
        return tokens

    def estimate_prompt_tokens(
        self,
        messages: Iterable[Any],
        model: str,
        *,
        tools: Iterable[Any] | None = None,
    ) -> TokenEstimate:
        """Prompt tokens of a chat request before it is sent, labelled exact or estimated.

        Counts as :meth:`count_message_tokens` does, plus:

        - a model tiktoken does not map (another provider's) or maps to an encoding we cannot
          load offline is counted with o200k_base, ``estimated=True``;
        - ``tools`` are counted by the cookbook's ``num_tokens_for_tools``: per function 7
          (o200k_base) or 10 (cl100k_base) tokens, ``name:description`` (one trailing period
          dropped), 3 if it has properties, per property 3 plus ``name:type:description``, per
          enum -3 plus 3 and the value per item, and 12 after the last function. Schema keys the
          cookbook does not cover (nested objects, ``items``, ``anyOf`` …) add their compact JSON,
          and a tool that is not a function counts its JSON; ``estimated=True``;
        - an image part counts 85 tokens with ``detail="low"``, else 1445, the most a gpt-4o
          image costs (OpenAI vision guide); models that bill images otherwise (gpt-4o-mini
          multiplies image tokens) are not covered. Other non-text parts count their JSON.

        Args:
            messages: chat messages: dicts, or the OpenAI SDK's message objects.
            model: any model name.
            tools: the request's ``tools`` (or legacy ``functions``), if any.

        Returns:
            The count, whether it is an estimate, and the encoding used.

        Raises:
            TypeError: ``messages``, a message or a tool has the wrong shape.
        """
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, got {type(model).__name__}")
        encoding = _encoding_name(model)
        known = encoding in _bpe.SPECS
        if encoding is None or not known:
            encoding = ESTIMATE_ENCODING
        tokens, exact = self._messages(messages, encoding, _RULE_BY_MODEL.get(model, _CHAT), False)
        tool_list = [] if tools is None else list(tools)
        if tool_list:
            tokens += self._tools(tool_list, encoding)
            exact = False
        return TokenEstimate(tokens=tokens, estimated=not (known and exact), encoding=encoding)

    def cache_info(self) -> TokenCacheInfo:
        """Hits, misses and size of the long-text cache."""
        with self._lock:
            return TokenCacheInfo(
                hits=self._hits,
                misses=self._misses,
                size=len(self._counts),
                max_size=self._max_cached,
            )

    # -- text ---------------------------------------------------------------------------------

    def _encoder(self, encoding: str) -> Encoder:
        encoder = self._encoders.get(encoding)
        if encoder is None:
            # The default loader is already once per process; this keeps a custom one so too.
            encoder = self._load(encoding)
            with self._lock:
                encoder = self._encoders.setdefault(encoding, encoder)
        return encoder

    def _text(self, encoding: str, text: str) -> int:
        """Tokens of ``text``; long texts are looked up by digest before being encoded."""
        if self._max_cached == 0 or len(text) < self._min_chars:
            return len(self._encoder(encoding).encode_ordinary(text))
        # A digest, not the text, is the key: a 1 MB prompt costs the cache 16 bytes.
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        key = (encoding, digest)
        with self._lock:
            cached = self._counts.get(key)
            if cached is not None:
                self._counts.move_to_end(key)
                self._hits += 1
                return cached
            self._misses += 1
        # Encoded outside the lock: two threads may both encode a new text once, never wait.
        count = len(self._encoder(encoding).encode_ordinary(text))
        with self._lock:
            self._counts[key] = count
            self._counts.move_to_end(key)
            while len(self._counts) > self._max_cached:
                self._counts.popitem(last=False)
        return count

    # -- messages -----------------------------------------------------------------------------

    def _messages(
        self, messages: Iterable[Any], encoding: str, rule: _ChatRule, strict: bool
    ) -> tuple[int, bool]:
        """(tokens, exact) of a conversation; ``strict`` refuses parts that are not text."""
        if isinstance(messages, (str, bytes, Mapping)):
            raise TypeError("messages must be a list of messages, not a single str or dict")
        tokens = rule.reply_priming
        exact = True
        for message in messages:
            fields = _as_mapping(message, "a message")
            tokens += rule.per_message
            for key, value in fields.items():
                if value is None or (isinstance(value, (list, tuple)) and not value):
                    # The SDK's "content": None beside tool_calls, an empty list: nothing is sent.
                    continue
                if isinstance(value, str):
                    tokens += self._text(encoding, value)
                    if key == "name":
                        tokens += rule.per_name
                    continue
                exact = False
                if key == "content":
                    tokens += self._parts(value, encoding, strict)
                elif key == "tool_calls":
                    tokens += sum(self._call(call, encoding, rule) for call in value)
                elif key == "function_call":
                    tokens += self._call({"function": value}, encoding, rule)
                else:
                    tokens += self._text(encoding, _json(value))
        return tokens, exact

    def _parts(self, parts: Any, encoding: str, strict: bool) -> int:
        if isinstance(parts, (bytes, Mapping)) or not isinstance(parts, Iterable):
            raise TypeError(f"content must be a str or a list of parts, got {type(parts).__name__}")
        tokens = 0
        for raw in parts:
            if isinstance(raw, str):
                tokens += self._text(encoding, raw)
                continue
            part = _as_mapping(raw, "a content part")
            kind = part.get("type")
            field = _TEXT_PARTS.get(kind) if isinstance(kind, str) else None
            if field is not None and isinstance(part.get(field), str):
                tokens += self._text(encoding, part[field])
            elif strict:
                raise ValueError(
                    f"cannot count a {kind!r} content part exactly; estimate_prompt_tokens() "
                    "gives a labelled estimate, the provider's usage the real count"
                )
            elif kind == "image_url":
                image = part.get("image_url")
                low = isinstance(image, Mapping) and image.get("detail") == "low"
                tokens += _IMAGE_LOW_DETAIL if low else _IMAGE_MAX
            else:
                tokens += self._text(encoding, _json(part))
        return tokens

    def _call(self, call: Any, encoding: str, rule: _ChatRule) -> int:
        """One tool call of an assistant message: framing, function name and arguments."""
        fields = _as_mapping(call, "a tool call")
        function = fields.get("function")
        # An assumption, not a published rule: a call is framed like a message.
        tokens = rule.per_message
        if isinstance(function, Mapping):
            for key in ("name", "arguments"):
                value = function.get(key)
                if isinstance(value, str):
                    tokens += self._text(encoding, value)
        else:
            tokens += self._text(encoding, _json(dict(fields)))
        return tokens

    # -- tools --------------------------------------------------------------------------------

    def _tools(self, tools: list[Any], encoding: str) -> int:
        """Tool definitions, by the cookbook's ``num_tokens_for_tools``."""
        rule = _TOOL_RULES[encoding]
        tokens = 0
        for raw in tools:
            tool = _as_mapping(raw, "a tool")
            nested = tool.get("function")
            if isinstance(nested, Mapping):
                function: Mapping[str, Any] = nested
            elif isinstance(tool.get("name"), str):
                # Legacy ``functions=[...]`` entries and Responses-style flat function tools.
                function = tool
            else:
                tokens += self._text(encoding, _json(dict(tool)))
                continue
            tokens += rule.func_init
            description = str(function.get("description") or "").removesuffix(".")
            tokens += self._text(encoding, f"{function.get('name', '')}:{description}")
            parameters = function.get("parameters")
            properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
            if isinstance(properties, Mapping) and properties:
                tokens += rule.prop_init
                for key, prop in properties.items():
                    tokens += rule.prop_key + self._property(str(key), prop, encoding, rule)
        return tokens + rule.func_end

    def _property(self, key: str, prop: Any, encoding: str, rule: _ToolRule) -> int:
        if not isinstance(prop, Mapping):
            return self._text(encoding, f"{key}:{_json(prop)}")
        tokens = 0
        enum = prop.get("enum")
        if isinstance(enum, list):
            tokens += rule.enum_init
            for item in enum:
                tokens += rule.enum_item + self._text(encoding, str(item))
        kind = prop.get("type")
        type_text = "|".join(map(str, kind)) if isinstance(kind, list) else str(kind or "")
        description = str(prop.get("description") or "").removesuffix(".")
        tokens += self._text(encoding, f"{key}:{type_text}:{description}")
        # Nested schemas are beyond the cookbook's rule: count their JSON rather than nothing.
        rest = {k: v for k, v in prop.items() if k not in ("type", "description", "enum")}
        if rest:
            tokens += self._text(encoding, _json(rest))
        return tokens


_default_lock = threading.Lock()
_default: TokenCounter | None = None


def _default_counter() -> TokenCounter:
    """The counter behind the module functions, made on first use (not at import)."""
    global _default  # noqa: PLW0603 - a lazily made process-wide cache, by design
    counter = _default
    if counter is None:
        with _default_lock:
            if _default is None:
                _default = TokenCounter()
            counter = _default
    return counter


def count_tokens(text: str, model: str) -> int:
    """Tokens of ``text`` for OpenAI model ``model``; see :meth:`TokenCounter.count_tokens`.

    Raises:
        UnknownModelError: tiktoken does not map ``model`` to cl100k_base or o200k_base.
    """
    return _default_counter().count_tokens(text, model)


def count_message_tokens(messages: Iterable[Any], model: str) -> int:
    """Prompt tokens of chat ``messages`` as OpenAI bills them (3 per message, 1 per name, 3
    priming the reply: OpenAI cookbook); see :meth:`TokenCounter.count_message_tokens`.

    Raises:
        UnknownModelError: tiktoken does not map ``model`` to cl100k_base or o200k_base.
        ValueError: a content part is not text.
    """
    return _default_counter().count_message_tokens(messages, model)


def estimate_prompt_tokens(
    messages: Iterable[Any], model: str, *, tools: Iterable[Any] | None = None
) -> TokenEstimate:
    """Pre-call prompt tokens for any model, labelled exact or estimated; for budgets.

    See :meth:`TokenCounter.estimate_prompt_tokens`.
    """
    return _default_counter().estimate_prompt_tokens(messages, model, tools=tools)
