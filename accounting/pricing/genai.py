"""Default prices from genai-prices's bundled data, looked up exactly and fully offline.

Offline: this module reads ``genai_prices.data.providers``, the snapshot shipped inside the
installed package. It never calls ``calc_price`` or ``get_snapshot`` (which return a snapshot
fetched by ``genai_prices.UpdatePrices`` if anyone in the process started one) and never starts
an updater, so no price ever comes from the network and results only change when the package
is upgraded.

Exact names (STYLE rule 12). genai-prices matches model names with ``starts_with``,
``contains`` and regex clauses; we do not. For each provider the table holds, per model, its
``id`` and every ``equals`` clause value, and keeps a name only when genai-prices's own matcher
resolves that name to that same model (so the two never disagree on a listed name). A
lookup is then one dict get, case-insensitive (genai-prices lowercases names too).

Dated snapshots (what a provider reports as the served model, e.g. ``gpt-4o-2024-08-06`` or
``claude-sonnet-4-5-20250929``):

1. a dated name genai-prices lists by ``equals`` is simply in the table (``gpt-4o-2024-08-06``);
2. otherwise a name ``<base><sep><date>``, with ``<sep>`` ``-`` or ``@`` and ``<date>`` a real
   calendar date written ``YYYY-MM-DD`` or ``YYYYMMDD`` (year 20xx), is priced as ``<base>``
   only when ``<base>`` is an exact name in the table *and* genai-prices's matcher resolves
   the full dated name to that same model. So ``claude-sonnet-4-5-20250929`` is priced (the
   model's data accepts dated names) while ``gpt-4o-2099-01-01`` is not (gpt-4o lists its
   snapshots one by one: an unknown snapshot may have another price, as ``gpt-4o-2024-05-13``
   does). Anything else after a known name (``gpt-4o-evil``) is never priced.

Providers. ``provider`` is a genai-prices provider id (``openai``, ``anthropic``, ``google``,
``x-ai``, ...), case-insensitive, or an exact alias from :data:`PROVIDER_ALIASES` or the data's
own ``equals`` provider clauses (``xai``). A provider's table includes, after its own models,
those of the providers its data names as fallbacks (Azure serves OpenAI's models). With
``provider=None`` the model makers are tried in :data:`DEFAULT_PROVIDER_ORDER` (a model's maker
prices it first: ``claude-*`` is Anthropic's even though Google also serves it); a name no
maker lists is priced only when exactly one other provider lists it (hosts price the same
model differently, so an ambiguous name stays unpriced). Unknown providers are unpriced.

Time and size. Prices that change over time (genai-prices's start-date and time-of-day
constraints, e.g. DeepSeek's off-peak hours) are resolved for the call's time ``at``; tiered
prices become :class:`~accounting.pricing.price.PriceTier` s applied by
:func:`~accounting.pricing.price.cost_of`.

Not modelled: genai-prices's request variants (batch, flex/priority service tiers), Anthropic's
1-hour cache-write rate (cache writes are billed at the 5-minute rate), and units other than
text tokens (audio, images, web searches, requests). Models priced only in such units are
unpriced.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from accounting.pricing._genai_data import Entry, equals_names, own_names
from accounting.pricing.price import ModelPrice

if TYPE_CHECKING:
    from genai_prices import types as gp

__all__ = ["DEFAULT_PROVIDER_ORDER", "PROVIDER_ALIASES", "GenaiPricesSource"]

#: Model makers, tried in this order when no provider is given.
DEFAULT_PROVIDER_ORDER: tuple[str, ...] = (
    "openai",
    "anthropic",
    "google",
    "mistral",
    "deepseek",
    "x-ai",
    "meta",
    "cohere",
    "moonshotai",
    "minimax",
    "zai",
    "zhipuai",
    "voyageai",
    "perplexity",
    "arcee",
    "elevenlabs",
    "cursor",
)

#: Other spellings of provider ids seen in SDKs and gateways (exact, case-insensitive).
PROVIDER_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "xai": "x-ai",
        "gemini": "google",
        "google-gla": "google",
        "google-vertex": "google",
        "vertex": "google",
        "vertex_ai": "google",
        "bedrock": "aws",
        "mistralai": "mistral",
        "azure-openai": "azure",
        "azure_openai": "azure",
    }
)

# <base><sep><date>, date YYYY-MM-DD or YYYYMMDD; the base must then be an exact name.
_DATED = re.compile(
    r"(?P<base>.+)[-@]"
    r"(?:(?P<y1>20\d\d)-(?P<m1>\d\d)-(?P<d1>\d\d)|(?P<y2>20\d\d)(?P<m2>\d\d)(?P<d2>\d\d))"
)
# Dated names resolved (or not) are remembered, up to this many: lookups stay dict gets, and
# a stream of made-up names cannot grow memory without bound.
_MEMO_LIMIT = 4096
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class _Tables:
    # Plain dicts, never mutated once built: a dict get is the whole cost of a lookup.
    exact: dict[tuple[str | None, str], Entry]
    provider_ids: dict[str, str]


class GenaiPricesSource:
    """Prices from genai-prices's bundled data, by exact name (see the module doc for the rules).

    The exact table is built once, on first use, under a lock (about half a second, the import
    of genai-prices included); call :meth:`preload` at startup to pay that before any request.

    Args:
        providers: genai-prices provider data; ``None`` (the default) uses the snapshot bundled
            with the installed genai-prices, never a fetched one.
        provider_order: model makers tried in order when no provider is given; ids absent from
            the data are skipped.
        provider_aliases: extra exact provider spellings, added to :data:`PROVIDER_ALIASES`.
    """

    __slots__ = ("_aliases", "_lock", "_memo", "_order", "_providers", "_tables")

    def __init__(
        self,
        *,
        providers: Sequence[gp.Provider] | None = None,
        provider_order: Sequence[str] = DEFAULT_PROVIDER_ORDER,
        provider_aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._providers = None if providers is None else tuple(providers)
        self._order = tuple(p.lower() for p in provider_order)
        self._aliases = {
            k.lower(): v.lower()
            for k, v in {**PROVIDER_ALIASES, **(provider_aliases or {})}.items()
        }
        self._lock = threading.Lock()
        self._tables: _Tables | None = None
        self._memo: dict[tuple[str | None, str], Entry | None] = {}

    def preload(self) -> None:
        """Build the exact table now rather than at the first lookup."""
        self._get_tables()

    def price_for(
        self, model: str, provider: str | None = None, *, at: datetime | None = None
    ) -> ModelPrice | None:
        """genai-prices's price for ``model`` by ``provider`` at ``at``, or ``None``.

        Args:
            model: the model name as sent or as reported by the provider.
            provider: a genai-prices provider id or alias; ``None``: see the module doc.
            at: the call's time, for time-dependent prices; ``None`` is now (UTC).

        Returns:
            The price, or ``None`` for an unknown model or provider.
        """
        tables = self._get_tables()
        if provider is None:
            key: str | None = None
        else:
            key = tables.provider_ids.get(provider.lower())
            if key is None:
                return None
        name = model.lower()
        entry = tables.exact.get((key, name))
        if entry is None:
            entry = self._memo.get((key, name), _MISSING)
            if entry is _MISSING:
                entry = _dated(tables, key, name)
                if len(self._memo) < _MEMO_LIMIT:
                    self._memo[(key, name)] = entry
            if entry is None:
                return None
        return entry.price_at(at)

    def _get_tables(self) -> _Tables:
        tables = self._tables
        if tables is None:
            with self._lock:
                tables = self._tables
                if tables is None:
                    tables = self._tables = self._build()
        return tables

    def _build(self) -> _Tables:
        providers = self._providers
        if providers is None:
            # The bundled snapshot: a plain module import, no network. genai-prices is imported
            # here, not at the top, because it takes ~0.3 s (0.5 s with its data) and
            # `import accounting` must stay cheap for those who never price a call.
            from genai_prices.data import providers as bundled  # noqa: PLC0415

            providers = tuple(bundled)
        own = {p.id.lower(): own_names(p) for p in providers}
        exact: dict[tuple[str | None, str], Entry] = {}
        for p in providers:
            pid = p.id.lower()
            for fallback in (pid, *(f.lower() for f in p.fallback_model_providers or ())):
                for name, entry in own.get(fallback, {}).items():
                    exact.setdefault((pid, name), entry)
        for pid in self._order:
            for name, entry in own.get(pid, {}).items():
                exact.setdefault((None, name), entry)
        listed_by: dict[str, list[Entry]] = {}
        for pid, names in own.items():
            if pid not in self._order:
                for name, entry in names.items():
                    listed_by.setdefault(name, []).append(entry)
        for name, entries in listed_by.items():
            if len(entries) == 1:
                exact.setdefault((None, name), entries[0])
        provider_ids = {pid: pid for pid in own}
        for p in providers:
            for alias in equals_names(p.provider_match):
                provider_ids.setdefault(alias, p.id.lower())
        for alias, target in self._aliases.items():
            if target in own:
                provider_ids[alias] = target
        return _Tables(exact=exact, provider_ids=provider_ids)


def _dated(tables: _Tables, key: str | None, name: str) -> Entry | None:
    match = _DATED.fullmatch(name)
    if match is None:
        return None
    year, month, day = (match["y1"], match["m1"], match["d1"])
    if year is None:
        year, month, day = (match["y2"], match["m2"], match["d2"])
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        return None
    base = tables.exact.get((key, match["base"]))
    # genai-prices must itself resolve the dated name to the base's model: the data then says
    # that any snapshot of this model has its price.
    if base is None or base.origin.find_model(name) is not base.model:
        return None
    return base
