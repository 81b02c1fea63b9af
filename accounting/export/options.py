"""Choices about what the exported spans and metric points carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from accounting._exceptions import ConfigError

__all__ = ["ATTRIBUTION_DIMENSIONS", "ExportOptions"]

#: The attribution fields metric points may carry (tags never do: their values are unbounded).
ATTRIBUTION_DIMENSIONS = frozenset({"user", "feature", "task"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportOptions:
    """What to write beyond the GenAI conventions' attributes.

    Attributes:
        gen_ai_usage_cost: also write the call's cost as ``gen_ai.usage.cost`` (USD, float),
            the attribute Langfuse and OpenLIT read; not part of the conventions.
        user_id_attribute: also write the user as ``user.id`` on spans (Langfuse reads it
            as the trace's user).
        metric_attribution: which attribution fields the cost and cache metric points carry.
            Drop ``"user"`` when user ids are too many for the metrics backend: spans keep it.
        provider_names: extra ``{our provider name: gen_ai.provider.name}`` entries, consulted
            before the built-in table (exact names).

    Raises:
        ConfigError: ``metric_attribution`` names a field other than user, feature, task.
    """

    gen_ai_usage_cost: bool = True
    user_id_attribute: bool = True
    metric_attribution: frozenset[str] = ATTRIBUTION_DIMENSIONS
    provider_names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        unknown = set(self.metric_attribution) - ATTRIBUTION_DIMENSIONS
        if unknown:
            raise ConfigError(
                f"unknown fields {sorted(unknown)}; allowed: {sorted(ATTRIBUTION_DIMENSIONS)}",
                where="ExportOptions.metric_attribution",
            )
        object.__setattr__(self, "metric_attribution", frozenset(self.metric_attribution))
        object.__setattr__(self, "provider_names", MappingProxyType(dict(self.provider_names)))
