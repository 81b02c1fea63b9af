"""Exceptions raised by accounting.

The tree::

    AccountingError
    ├── BudgetExceeded      a call was refused before it spent money (by policy)
    ├── BudgetStoreError    a budget store failed (raised only with on_store_error="refuse")
    ├── UnknownModelError   no encoding or price is known for a model, where one is required
    ├── ConfigError         a price table, budget or ledger setting is invalid (also a ValueError)
    └── LedgerError         a ledger store failed (caught and counted where a call is in flight)

Only ``BudgetExceeded`` is meant to reach the application from the request path; the others are
raised when the application asks for something directly (a price, a report, a configuration).
"""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "AccountingError",
    "BudgetExceeded",
    "BudgetStoreError",
    "ConfigError",
    "LedgerError",
    "UnknownModelError",
]


class AccountingError(Exception):
    """Root of every exception accounting raises on purpose."""


class BudgetExceeded(AccountingError):
    """A reservation would cross a budget limit; the provider was not called.

    Attributes:
        scope: what the limit applies to, e.g. ``"user"``, ``"feature"``, ``"task"``, ``"global"``.
        name: which user/feature/task (``None`` for the global scope).
        period: ``"day"``, ``"month"`` or ``"total"``.
        limit: the limit in USD.
        spent: USD already settled plus reserved by calls in flight, in this period.
        requested: the worst-case cost this call asked to reserve.
    """

    def __init__(
        self,
        *,
        scope: str,
        name: str | None,
        period: str,
        limit: Decimal,
        spent: Decimal,
        requested: Decimal,
    ) -> None:
        who = scope if name is None else f"{scope} {name!r}"
        super().__init__(
            f"budget exceeded for {who}: {period} limit ${limit}, "
            f"${spent} spent or reserved, this call asked for up to ${requested}"
        )
        self.scope = scope
        self.name = name
        self.period = period
        self.limit = limit
        self.spent = spent
        self.requested = requested


class UnknownModelError(AccountingError, LookupError):
    """No encoding or price is known for ``model`` (from ``provider``, if given)."""

    def __init__(self, message: str, *, model: str, provider: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.provider = provider


class ConfigError(AccountingError, ValueError):
    """A configuration value is invalid; ``where`` names the file, key or field."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class LedgerError(AccountingError):
    """A ledger store failed; ``store`` names it."""

    def __init__(self, message: str, *, store: str) -> None:
        super().__init__(message)
        self.store = store


class BudgetStoreError(AccountingError):
    """A budget store failed (server down, database locked beyond its timeout, ...).

    :class:`~accounting.budgets.Budgets` counts and logs it; it reaches the caller only from
    :meth:`~accounting.budgets.Budgets.reserve` under ``on_store_error="refuse"``, and from
    :meth:`~accounting.budgets.Budgets.status`.

    Attributes:
        store: which store (``"sqlite"``, ``"redis"``).
        refused: the store answered and refused the operation (a command error): asking again
            will not help, unlike an outage (unreachable, timed out, locked).
    """

    def __init__(self, message: str, *, store: str, refused: bool = False) -> None:
        super().__init__(message)
        self.store = store
        self.refused = refused
