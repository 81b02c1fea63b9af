"""Cost accounting for LLM calls: tokens, prices, attribution, ledger, budgets, export.

This package is the lower layer: it never imports :mod:`llmcache`.
"""

from accounting._exceptions import (
    AccountingError,
    BudgetExceeded,
    ConfigError,
    LedgerError,
    UnknownModelError,
)
from accounting.attribute import UNATTRIBUTED, Attribution, attribute, carry, current_attribution
from accounting.money import Cost
from accounting.record import CacheOutcome, CallRecord, Status
from accounting.usage import TokenUsage

__all__ = [
    "UNATTRIBUTED",
    "AccountingError",
    "Attribution",
    "BudgetExceeded",
    "CacheOutcome",
    "CallRecord",
    "ConfigError",
    "Cost",
    "LedgerError",
    "Status",
    "TokenUsage",
    "UnknownModelError",
    "attribute",
    "carry",
    "current_attribution",
]
