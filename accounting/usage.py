"""Token usage of one call, by token type, read from whatever shape the provider reported.

The counts follow OpenTelemetry's GenAI conventions: ``input`` counts every prompt token,
including those read from (``cached_input``) or written to (``cache_write``) the provider's
prompt cache; ``output`` counts every generated token, including ``reasoning`` tokens.
Pricing bills each subset at its own rate and the rest at the plain rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenUsage"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenUsage:
    """Tokens of one call by type.

    Attributes:
        input: all prompt tokens, cached ones included.
        cached_input: prompt tokens served from the provider's prompt cache (a subset of input).
        cache_write: prompt tokens written to the provider's prompt cache (a subset of input).
        output: all generated tokens, reasoning included.
        reasoning: reasoning tokens (a subset of output).
        estimated: True when counted locally (tiktoken) rather than reported by the provider.
    """

    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    estimated: bool = False

    def __post_init__(self) -> None:
        for name in ("input", "cached_input", "cache_write", "output", "reasoning"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TokenUsage.{name} must be a non-negative int, got {value!r}")
        if self.cached_input + self.cache_write > self.input:
            raise ValueError(
                f"TokenUsage: cached_input ({self.cached_input}) + cache_write "
                f"({self.cache_write}) exceed input ({self.input})"
            )
        if self.reasoning > self.output:
            raise ValueError(
                f"TokenUsage: reasoning ({self.reasoning}) exceeds output ({self.output})"
            )

    @property
    def total(self) -> int:
        """Input plus output tokens."""
        return self.input + self.output

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (the ledger's)."""
        return {
            "input": self.input,
            "cached_input": self.cached_input,
            "cache_write": self.cache_write,
            "output": self.output,
            "reasoning": self.reasoning,
            "estimated": self.estimated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenUsage:
        """Inverse of :meth:`to_dict`."""
        return cls(
            input=int(data.get("input", 0)),
            cached_input=int(data.get("cached_input", 0)),
            cache_write=int(data.get("cache_write", 0)),
            output=int(data.get("output", 0)),
            reasoning=int(data.get("reasoning", 0)),
            estimated=bool(data.get("estimated", False)),
        )

    @classmethod
    def from_provider(cls, usage: Any) -> TokenUsage:
        """Read a provider's usage object (an SDK model or a plain mapping).

        Understands OpenAI chat/completions/embeddings (``prompt_tokens``,
        ``prompt_tokens_details.cached_tokens`` and ``.cache_write_tokens``,
        ``completion_tokens_details.reasoning_tokens``), the Responses API (``input_tokens``,
        ``input_tokens_details.cached_tokens`` and ``.cache_write_tokens``,
        ``output_tokens_details.reasoning_tokens``), Anthropic-style counts (``input_tokens``
        without the cache, plus ``cache_read_input_tokens`` and ``cache_creation_input_tokens``)
        and DeepSeek's ``prompt_cache_hit_tokens``.

        Counts that contradict each other are read the one way that makes them add up, since
        the provider has billed them either way: reasoning tokens above the output tokens
        mean the output count left them out (some gateways in front of Gemini report
        ``completion_tokens=0, reasoning_tokens=60``), so they are added to it; cached plus
        cache-write tokens above the prompt tokens likewise.

        Raises:
            ValueError: ``usage`` has none of the known fields, or a count is not an int.
        """
        data = _as_mapping(usage)
        if "prompt_tokens" in data:
            details = _as_mapping(data.get("prompt_tokens_details"))
            return _consistent(
                prompt=_int(data, "prompt_tokens"),
                cached=_int(details, "cached_tokens") or _int(data, "prompt_cache_hit_tokens"),
                write=_int(details, "cache_write_tokens"),
                output=_int(data, "completion_tokens"),
                reasoning=_int(
                    _as_mapping(data.get("completion_tokens_details")), "reasoning_tokens"
                ),
            )
        if "input_tokens" in data:
            plain = _int(data, "input_tokens")
            details = _as_mapping(data.get("input_tokens_details"))
            read = _int(data, "cache_read_input_tokens")
            write = _int(data, "cache_creation_input_tokens")
            output = _int(data, "output_tokens")
            reasoning = _int(_as_mapping(data.get("output_tokens_details")), "reasoning_tokens")
            if read or write:
                # Anthropic counts input_tokens *after* the cache; ours include it.
                return _consistent(
                    prompt=plain + read + write,
                    cached=read,
                    write=write,
                    output=output,
                    reasoning=reasoning,
                )
            return _consistent(
                prompt=plain,
                cached=_int(details, "cached_tokens"),
                write=_int(details, "cache_write_tokens"),
                output=output,
                reasoning=reasoning,
            )
        raise ValueError(
            f"usage has neither prompt_tokens nor input_tokens: fields are {sorted(data) or 'none'}"
        )


def _consistent(*, prompt: int, cached: int, write: int, output: int, reasoning: int) -> TokenUsage:
    if reasoning > output:
        output += reasoning
    if cached + write > prompt:
        prompt += cached + write
    return TokenUsage(
        input=prompt, cached_input=cached, cache_write=write, output=output, reasoning=reasoning
    )


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    raise ValueError(f"usage must be a mapping or a pydantic model, got {type(value).__name__}")


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"usage.{name} must be an int, got {value!r}")
    return value
