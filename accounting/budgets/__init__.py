"""Budgets: USD limits per user, feature, task or globally, per day, month or in total.

A call reserves its worst-case cost before it spends (:meth:`Budgets.reserve`, which raises
:class:`~accounting.BudgetExceeded` when a limit would be crossed), then settles its actual
cost (:meth:`Budgets.settle`) or releases the reservation if it failed (:meth:`Budgets.release`).
Days and months are UTC calendar periods. A call with no user is not subject to per-user limits
(nor one with no feature or task to theirs), but is to the global ones.

Layers, one way: :mod:`.limits` (configuration) → :mod:`.core` (pure decisions on plain values)
→ :mod:`.store` (the :class:`BudgetStore` Protocol) → :mod:`.sqlite` / :mod:`.redis` (stores)
and :mod:`.budgets` (the :class:`Budgets` front, its policies and their reasons).
"""

from accounting.budgets.budgets import Budgets, BudgetStats
from accounting.budgets.core import (
    AppliedLimit,
    BudgetStatus,
    Reservation,
    ThresholdCrossed,
    worst_case_cost,
)
from accounting.budgets.limits import BudgetConfig, BudgetLimit, load_budget_config
from accounting.budgets.redis import RedisBudgetStore
from accounting.budgets.sqlite import SQLiteBudgetStore
from accounting.budgets.store import BudgetStore, BudgetStoreError

__all__ = [
    "AppliedLimit",
    "BudgetConfig",
    "BudgetLimit",
    "BudgetStats",
    "BudgetStatus",
    "BudgetStore",
    "BudgetStoreError",
    "Budgets",
    "RedisBudgetStore",
    "Reservation",
    "SQLiteBudgetStore",
    "ThresholdCrossed",
    "load_budget_config",
    "worst_case_cost",
]
