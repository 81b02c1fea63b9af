"""Budget configuration: limits in USD per user, feature, task or globally, and the policies.

A limit caps what one *subject* may spend in one *period*:

- ``scope`` is ``"user"``, ``"feature"``, ``"task"`` (matched against the call's
  :class:`~accounting.Attribution`) or ``"global"`` (every call).
- ``name`` picks one user/feature/task. ``name=None`` on a user, feature or task scope is a
  *generic* limit: each user (feature, task) gets it separately. A named limit overrides the
  generic one of the same scope and period for that name only. A global limit has no name.
- ``period`` is ``"day"``, ``"month"`` or ``"total"``. Days and months are calendar periods in
  **UTC**, whatever the host's time zone; ``"total"`` never resets.

Configuration files are TOML or JSON; amounts may be written as numbers (read exactly, as
:class:`~decimal.Decimal`, never through a float) or strings::

    on_store_error = "allow"         # or "refuse"; optional
    on_unpriced = "refuse"           # or "allow"; optional
    reservation_ttl = 600            # seconds; optional
    thresholds = [0.8, 1.0]          # fractions of a limit that trigger on_threshold; optional

    [[budgets]]
    scope = "user"                   # every user: $1.00 a day
    period = "day"
    usd = "1.00"

    [[budgets]]
    scope = "user"                   # ... but alice gets $5.00 a day
    name = "alice"
    period = "day"
    usd = "5.00"

    [[budgets]]
    scope = "global"
    period = "month"
    usd = 2000
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, cast

from accounting._exceptions import ConfigError

__all__ = [
    "DEFAULT_RESERVATION_TTL",
    "MAX_LIMIT",
    "PERIODS",
    "SCOPES",
    "BudgetConfig",
    "BudgetLimit",
    "load_budget_config",
]

Scope = Literal["user", "feature", "task", "global"]
Period = Literal["day", "month", "total"]
Policy = Literal["allow", "refuse"]

#: In the order limits are checked, and reported when several would be crossed at once.
SCOPES: tuple[Scope, ...] = ("user", "feature", "task", "global")
PERIODS: tuple[Period, ...] = ("day", "month", "total")
#: Seconds a reservation holds its amount before later reservations reclaim it (10 minutes).
DEFAULT_RESERVATION_TTL = 600.0
#: Stores count integer pico-dollars in signed 64-bit integers (Redis, SQLite): a ceiling of
#: $9,223,372.04 per counter. Limits stay below it with room for overspend by settled calls.
MAX_LIMIT = Decimal(9_000_000)

_POLICIES = ("allow", "refuse")
_LIMIT_KEYS = {"scope", "name", "period", "usd"}
_CONFIG_KEYS = {"budgets", "thresholds", "reservation_ttl", "on_unpriced", "on_store_error"}


def _amount(value: object, where: str) -> Decimal:
    """An exact non-negative USD amount below :data:`MAX_LIMIT` (floats refused: inexact)."""
    if isinstance(value, bool | float) or not isinstance(value, str | int | Decimal):
        raise ConfigError(
            f"must be a USD amount as a string, int or Decimal, got {value!r}", where=where
        )
    try:
        amount = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ConfigError(f"must be a USD amount, got {value!r}", where=where) from None
    if not amount.is_finite() or amount < 0 or amount > MAX_LIMIT:
        raise ConfigError(f"must be between 0 and {MAX_LIMIT} USD, got {value!r}", where=where)
    return amount


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetLimit:
    """At most ``usd`` dollars per ``period`` for a ``scope`` (and ``name``).

    Attributes:
        scope: ``"user"``, ``"feature"``, ``"task"`` or ``"global"``.
        name: the user/feature/task this limit is for; ``None`` means each of them (generic
            limit), and is the only value allowed for ``"global"``.
        period: ``"day"``, ``"month"`` (UTC calendar periods) or ``"total"``.
        usd: the limit in USD, exact, ``0 <= usd <= MAX_LIMIT``.

    Raises:
        ConfigError: a field is invalid (``where`` names it).
    """

    scope: Scope
    name: str | None = None
    period: Period
    usd: Decimal

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(
                f"must be one of {', '.join(SCOPES)}, got {self.scope!r}", where="BudgetLimit.scope"
            )
        if self.period not in PERIODS:
            raise ConfigError(
                f"must be one of {', '.join(PERIODS)}, got {self.period!r}",
                where="BudgetLimit.period",
            )
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ConfigError(
                f"must be a non-empty string or None, got {self.name!r}", where="BudgetLimit.name"
            )
        if self.scope == "global" and self.name is not None:
            raise ConfigError(
                f"a global limit has no name, got {self.name!r}", where="BudgetLimit.name"
            )
        object.__setattr__(self, "usd", _amount(self.usd, "BudgetLimit.usd"))

    @property
    def slot(self) -> tuple[str, str | None, str]:
        """``(scope, name, period)``: two limits with the same slot may not coexist."""
        return (self.scope, self.name, self.period)

    def describe(self) -> str:
        """Human form, e.g. ``"user 'alice' day $5.00"`` or ``"each user day $1.00"``."""
        if self.scope == "global":
            who = "global"
        elif self.name is None:
            who = f"each {self.scope}"
        else:
            who = f"{self.scope} {self.name!r}"
        return f"{who} {self.period} ${self.usd}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetConfig:
    """Limits and policies of a :class:`~accounting.budgets.Budgets`.

    Attributes:
        limits: the limits; no two may share ``(scope, name, period)``.
        thresholds: fractions of a limit, each in ``(0, 1]``, at which ``on_threshold`` fires
            (once per limit, period and threshold).
        reservation_ttl: seconds a reservation lives before it may be reclaimed (default 600).
        on_unpriced: what to do when the worst-case cost of a call is unknown (unpriced model
            or unknown output limit) and a limit applies: ``"refuse"`` (default) or ``"allow"``.
        on_store_error: what :meth:`~accounting.budgets.Budgets.reserve` does when the store
            fails: ``"allow"`` (default) or ``"refuse"``.

    Raises:
        ConfigError: a field is invalid or two limits share a slot (``where`` names the field).
    """

    limits: tuple[BudgetLimit, ...] = ()
    thresholds: tuple[Decimal, ...] = ()
    reservation_ttl: float = DEFAULT_RESERVATION_TTL
    on_unpriced: Policy = "refuse"
    on_store_error: Policy = "allow"

    def __post_init__(self) -> None:
        limits = tuple(self.limits)
        seen: dict[tuple[str, str | None, str], int] = {}
        for i, limit in enumerate(limits):
            if not isinstance(limit, BudgetLimit):
                raise ConfigError(f"must be a BudgetLimit, got {limit!r}", where=f"limits[{i}]")
            if limit.slot in seen:
                raise ConfigError(
                    f"{limit.describe()} repeats limits[{seen[limit.slot]}]", where=f"limits[{i}]"
                )
            seen[limit.slot] = i
        object.__setattr__(self, "limits", limits)
        thresholds = []
        for i, t in enumerate(self.thresholds):
            value = _amount(t, f"thresholds[{i}]")
            if not 0 < value <= 1:
                raise ConfigError(f"must be in (0, 1], got {t!r}", where=f"thresholds[{i}]")
            thresholds.append(value)
        object.__setattr__(self, "thresholds", tuple(sorted(set(thresholds))))
        ttl = self.reservation_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float | Decimal) or not ttl > 0:
            raise ConfigError(
                f"must be a number of seconds > 0, got {ttl!r}", where="reservation_ttl"
            )
        object.__setattr__(self, "reservation_ttl", float(ttl))
        for name in ("on_unpriced", "on_store_error"):
            if getattr(self, name) not in _POLICIES:
                raise ConfigError(
                    f"must be 'allow' or 'refuse', got {getattr(self, name)!r}", where=name
                )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "budget config") -> BudgetConfig:
        """Read the configuration from a parsed TOML/JSON document (see the module docstring).

        Args:
            data: the document; its ``budgets`` key holds the list of limits.
            where: names the source in errors (a file name, or a section of a larger file).

        Raises:
            ConfigError: a key is unknown or a value invalid; ``where`` is e.g.
                ``"budgets.toml: budgets[2].usd"``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"must be a table, got {type(data).__name__}", where=where)
        unknown = sorted(set(data) - _CONFIG_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key (known: {', '.join(sorted(_CONFIG_KEYS))})",
                where=f"{where}: {unknown[0]}",
            )
        entries = data.get("budgets", [])
        if not isinstance(entries, list):
            raise ConfigError(
                f"must be a list of tables, got {entries!r}", where=f"{where}: budgets"
            )
        limits = tuple(_limit(entry, f"{where}: budgets[{i}]") for i, entry in enumerate(entries))
        thresholds = data.get("thresholds", [])
        if not isinstance(thresholds, list):
            raise ConfigError(f"must be a list, got {thresholds!r}", where=f"{where}: thresholds")
        try:
            return cls(
                limits=limits,
                thresholds=tuple(thresholds),
                reservation_ttl=data.get("reservation_ttl", DEFAULT_RESERVATION_TTL),
                on_unpriced=data.get("on_unpriced", "refuse"),
                on_store_error=data.get("on_store_error", "allow"),
            )
        except ConfigError as exc:
            # Re-anchor the field name in the source: "budgets.toml: budgets[3]".
            field_name = exc.where.replace("limits[", "budgets[")
            raise ConfigError(
                str(exc).removeprefix(f"{exc.where}: "), where=f"{where}: {field_name}"
            ) from None


def _limit(entry: object, where: str) -> BudgetLimit:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"must be a table, got {entry!r}", where=where)
    unknown = sorted(set(entry) - _LIMIT_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key (known: {', '.join(sorted(_LIMIT_KEYS))})", where=f"{where}.{unknown[0]}"
        )
    for key in ("scope", "period", "usd"):
        if key not in entry:
            raise ConfigError("is required", where=f"{where}.{key}")
    try:
        return BudgetLimit(
            scope=entry["scope"],
            name=entry.get("name"),
            period=entry["period"],
            usd=entry["usd"],
        )
    except ConfigError as exc:
        key = exc.where.removeprefix("BudgetLimit.")
        raise ConfigError(str(exc).removeprefix(f"{exc.where}: "), where=f"{where}.{key}") from None


def load_budget_config(source: Mapping[str, Any] | str | Path) -> BudgetConfig:
    """Load a :class:`BudgetConfig` from a mapping, or a ``.toml`` or ``.json`` file.

    Numbers in files are parsed as :class:`~decimal.Decimal`, so ``usd = 0.1`` is exactly ten
    cents. In a mapping, amounts must be strings, ints or Decimals (a float is refused: it has
    already lost exactness).

    Args:
        source: the parsed document, or the path of a TOML or JSON file.

    Raises:
        ConfigError: the file cannot be read or parsed, or a value is invalid; ``where`` names
            the file and key.
    """
    if isinstance(source, Mapping):
        return BudgetConfig.from_mapping(source)
    path = Path(source)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", where=where) from None
    data: Any
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text, parse_float=Decimal)
        elif path.suffix == ".json":
            data = json.loads(text, parse_float=Decimal)
        else:
            raise ConfigError("must be a .toml or .json file", where=where)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot parse: {exc}", where=where) from None
    return BudgetConfig.from_mapping(cast(Mapping[str, Any], data), where=where)
