"""Which cache the command line works on: a directory and an optional Redis URL.

Flags win, then the environment (``LLMCACHE_DIR``, ``LLMCACHE_REDIS_URL``), then the user's cache
directory. The tiers built here are those of :meth:`Cache.default` (memory + disk under the
directory), plus Redis when a URL is given, so the command line sees what applications store.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from llmcache.cache import Cache
from llmcache.paths import DISK_SUBDIR, ENV_DIR, cache_dir
from llmcache.tiers.base import Tier
from llmcache.tiers.disk import DiskTier
from llmcache.tiers.memory import MemoryTier
from llmcache.tiers.redis import RedisTier, redact

__all__ = ["ENV_REDIS_URL", "CacheConfig"]

#: Environment variable with the Redis URL the command line adds as a third tier.
ENV_REDIS_URL = "LLMCACHE_REDIS_URL"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Where the configured cache lives.

    Attributes:
        directory: the llmcache directory (as ``LLMCACHE_DIR``); the disk tier is in its
            ``cache`` subdirectory, as :meth:`Cache.default` puts it.
        redis_url: URL of a Redis tier after memory and disk, or ``None`` for none.
    """

    directory: Path
    redis_url: str | None = None

    @classmethod
    def resolve(
        cls,
        *,
        directory: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> CacheConfig:
        """Resolve flags, falling back to the environment, then to the user's cache directory.

        Args:
            directory: ``--dir``; else ``LLMCACHE_DIR``; else the user cache directory.
            redis_url: ``--redis-url``; else ``LLMCACHE_REDIS_URL``; else no Redis tier.
            environ: the environment to read (default: ``os.environ``).
        """
        env = os.environ if environ is None else environ
        if directory is not None and str(directory):
            where = Path(directory).expanduser().resolve()
        elif env.get(ENV_DIR):
            where = Path(env[ENV_DIR]).expanduser().resolve()
        else:
            where = cache_dir()
        url = redis_url if redis_url else env.get(ENV_REDIS_URL) or None
        return cls(directory=where, redis_url=url)

    @property
    def disk_directory(self) -> Path:
        """The disk tier's directory."""
        return self.directory / DISK_SUBDIR

    def describe(self, tier: Tier) -> str:
        """Where ``tier`` keeps its entries, for people (passwords redacted)."""
        if isinstance(tier, DiskTier):
            return str(tier.directory)
        if isinstance(tier, RedisTier):
            return redact(tier.url)
        if isinstance(tier, MemoryTier):
            return "this process"
        return repr(tier)

    def open(self, *, namespace: str = "default") -> Cache:
        """Build the cache: memory + disk, then Redis when a URL is configured.

        Raises:
            ValueError: the directory cannot be opened or the Redis URL is not valid (the
                message names which).
        """
        tiers: list[Tier] = [MemoryTier(), DiskTier(self.disk_directory)]
        if self.redis_url is not None:
            try:
                tiers.append(RedisTier(self.redis_url))
            except ValueError as exc:
                tiers[1].close()
                shown = redact(self.redis_url)
                # redis-py's own URL errors do not say which URL they are about.
                if shown in str(exc):
                    raise
                raise ValueError(f"Redis URL {shown!r} is not valid: {exc}") from None
        return Cache(tiers, namespace=namespace)
