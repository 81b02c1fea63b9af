"""Cache tiers: memory, disk (diskcache) and Redis, behind one small Protocol."""
