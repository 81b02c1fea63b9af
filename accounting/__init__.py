"""Cost accounting for LLM calls: tokens, prices, attribution, ledger, budgets, export.

This package is the lower layer: it never imports :mod:`llmcache`.
"""

__all__: list[str] = []
