"""tiktoken's BPE files, offline: seeded from bpe-openai, verified, loaded once per process.

tiktoken downloads an encoding's BPE file on first use, which fails on machines without internet.
The ``bpe-openai`` package ships ``cl100k_base`` and ``o200k_base`` gzipped in its package data;
decompressed, their sha256 equal the ``expected_hash`` values in tiktoken's
``tiktoken_ext/openai_public.py``. This module

1. picks a directory (:func:`bpe_cache_dir`): the one the user gave tiktoken, else our own;
2. reads ``<dir>/<sha1 of the blob URL>``, the name tiktoken's ``load.read_file_cached`` uses, and
   checks its sha256; when it is missing or wrong, decompresses bpe-openai's copy, checks *that*
   before writing, and writes it atomically (temp file + ``os.replace``);
3. builds a real :class:`tiktoken.Encoding` from those verified bytes.

The bytes that were hashed are the bytes that are parsed, so a file changed between the check and
the load cannot give wrong counts. We do not call ``tiktoken.load.load_tiktoken_bpe(path, hash)``:
it passes every path through ``read_file_cached``, which copies a local file into tiktoken's cache
directory (``$TMPDIR/data-gym-cache`` by default) under another name. tiktoken's own constructors
(``tiktoken_ext.openai_public.cl100k_base()``) cannot be called without the environment pointing
at the file, and setting ``os.environ`` would change it for the whole process, so the split pattern
and special tokens below are tiktoken's values copied verbatim; ``tests/test_tokens.py`` checks
them, the hashes and the parsed ranks against tiktoken's own constructors on every run.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import platformdirs
import tiktoken

from accounting._exceptions import ConfigError

__all__ = [
    "SPECS",
    "BpeSpec",
    "EncodingCache",
    "bpe_cache_dir",
    "build_encoding",
    "cache_file",
    "get_encoding",
    "load_encoding",
    "packaged_file",
    "parse_ranks",
    "read_verified_bpe",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class BpeSpec:
    """What tiktoken's ``tiktoken_ext.openai_public`` constructor says about one encoding.

    Attributes:
        name: the encoding name, e.g. ``"o200k_base"``.
        url: the blob URL tiktoken downloads from; its sha1 names the cache file.
        sha256: tiktoken's ``expected_hash`` for the decompressed file.
        pat_str: the pre-tokenisation regex.
        special_tokens: special token text to id.
    """

    name: str
    url: str
    sha256: str
    pat_str: str
    special_tokens: Mapping[str, int]


_O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

#: The encodings bpe-openai ships, with tiktoken's parameters (tiktoken_ext/openai_public.py).
SPECS: Mapping[str, BpeSpec] = MappingProxyType(
    {
        "cl100k_base": BpeSpec(
            name="cl100k_base",
            url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
            sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
            pat_str=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
            special_tokens=MappingProxyType(
                {
                    "<|endoftext|>": 100257,
                    "<|fim_prefix|>": 100258,
                    "<|fim_middle|>": 100259,
                    "<|fim_suffix|>": 100260,
                    "<|endofprompt|>": 100276,
                }
            ),
        ),
        "o200k_base": BpeSpec(
            name="o200k_base",
            url="https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
            sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            pat_str=_O200K_PAT_STR,
            special_tokens=MappingProxyType({"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
        ),
    }
)


def bpe_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory holding the BPE files, by the first rule that applies.

    1. ``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, when set and not empty: the directory
       the user gave tiktoken (tiktoken's ``load.read_file_cached`` reads them in that order),
       so plain ``tiktoken.get_encoding`` finds the seeded files there too. An empty value means
       "tiktoken caching off" to tiktoken; we still need a file, so we use our own directory.
    2. ``$LLMCACHE_DIR/tiktoken`` when ``LLMCACHE_DIR`` is set (as llmcache's other files).
    3. ``<user cache dir>/llmcache/tiktoken`` (platformdirs; ``~/.cache/llmcache/tiktoken`` on
       Linux). tiktoken's own default, ``$TMPDIR/data-gym-cache``, is shared by every user of
       the machine, so we do not write there.

    Args:
        environ: the environment to read; ``os.environ`` when ``None``.

    Returns:
        The directory (it may not exist yet).
    """
    env = os.environ if environ is None else environ
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in env:
            # tiktoken stops at the first variable present, even an empty one.
            if env[var]:
                return Path(env[var]).expanduser()
            break
    own = env.get("LLMCACHE_DIR")
    if own:
        return Path(own).expanduser().resolve() / "tiktoken"
    return Path(platformdirs.user_cache_dir("llmcache", appauthor=False)) / "tiktoken"


def cache_file(spec: BpeSpec, directory: Path) -> Path:
    """Where tiktoken looks for ``spec``'s file in ``directory``: the sha1 hex of its URL."""
    # The name rule of tiktoken's load.read_file_cached; sha1 is a file name here, not security.
    return directory / hashlib.sha1(spec.url.encode(), usedforsecurity=False).hexdigest()


def packaged_file(spec: BpeSpec) -> Path:
    """bpe-openai's gzipped copy of ``spec``'s BPE file.

    The package is located without being imported: importing ``bpe_openai`` loads its own
    tokenizer (a 70 MB extension, most of a second) that we do not use.

    Raises:
        ConfigError: bpe-openai is not installed.
    """
    found = importlib.util.find_spec("bpe_openai")
    if found is None or not found.submodule_search_locations:
        raise ConfigError(
            "the bpe-openai package is not installed; it ships tiktoken's BPE files for "
            "offline use (pip install bpe-openai)",
            where="bpe-openai",
        )
    return Path(next(iter(found.submodule_search_locations))) / "data" / f"{spec.name}.tiktoken.gz"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unpack(packaged: Path, spec: BpeSpec) -> bytes:
    """Decompress bpe-openai's copy and check it against tiktoken's hash before any use."""
    try:
        data = gzip.decompress(packaged.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(
            f"cannot read the {spec.name} BPE file shipped by bpe-openai ({exc}); "
            "reinstall bpe-openai",
            where=str(packaged),
        ) from exc
    if _sha256(data) != spec.sha256:
        raise ConfigError(
            f"the {spec.name} BPE file shipped by bpe-openai does not match tiktoken's sha256 "
            f"{spec.sha256}; refusing to count tokens with it (reinstall bpe-openai)",
            where=str(packaged),
        )
    return data


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file private; these are public data, and a TIKTOKEN_CACHE_DIR may
        # be shared by several users as tiktoken's own files are.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_verified_bpe(name: str, directory: Path, *, packaged: Path | None = None) -> bytes:
    """The BPE file of encoding ``name``, its sha256 checked against tiktoken's.

    Reads ``directory``'s copy; when it is missing or its hash is wrong (logged as a warning
    naming the file), unpacks bpe-openai's copy, checks it, and writes it there atomically. A
    directory we cannot write to is logged and skipped: the verified bytes are still returned.

    Args:
        name: ``"cl100k_base"`` or ``"o200k_base"``.
        directory: where the seeded file lives (see :func:`bpe_cache_dir`).
        packaged: the gzipped source; bpe-openai's copy when ``None``.

    Returns:
        The decompressed file, whose sha256 is tiktoken's ``expected_hash``.

    Raises:
        KeyError: ``name`` is not one of :data:`SPECS`.
        ConfigError: the seeded copy is unusable and bpe-openai's is missing or corrupt.
    """
    spec = SPECS[name]
    path = cache_file(spec, directory)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot read tiktoken BPE file %s (%s); using bpe-openai's copy", path, exc)
    else:
        if _sha256(data) == spec.sha256:
            return data
        logger.warning(
            "tiktoken BPE file %s does not match sha256 %s; replacing it with bpe-openai's copy",
            path,
            spec.sha256,
        )
    data = _unpack(packaged if packaged is not None else packaged_file(spec), spec)
    try:
        _write_atomically(path, data)
    except OSError as exc:
        # The file only saves the next process a decompression; counting goes on without it.
        logger.warning("cannot write tiktoken BPE file %s (%s); not cached", path, exc)
    return data


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """Token bytes to rank, from a BPE file in tiktoken's format (``<base64 token> <rank>``)."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_encoding(name: str, data: bytes) -> tiktoken.Encoding:
    """A :class:`tiktoken.Encoding` from the verified BPE file of encoding ``name``."""
    spec = SPECS[name]
    return tiktoken.Encoding(
        spec.name,
        pat_str=spec.pat_str,
        mergeable_ranks=parse_ranks(data),
        special_tokens=dict(spec.special_tokens),
    )


def load_encoding(name: str, directory: Path | None = None) -> tiktoken.Encoding:
    """Seed (if needed), verify and build encoding ``name``; no process-wide caching.

    Args:
        name: ``"cl100k_base"`` or ``"o200k_base"``.
        directory: where the BPE file is seeded; :func:`bpe_cache_dir` when ``None``.

    Raises:
        KeyError: ``name`` is not one of :data:`SPECS`.
        ConfigError: no verified copy of the file is available.
    """
    return build_encoding(name, read_verified_bpe(name, directory or bpe_cache_dir()))


class EncodingCache:
    """Encodings built once and shared: the first caller of a name loads it, the rest wait.

    Args:
        load: builds an encoding from its name; :func:`load_encoding` by default.
    """

    def __init__(self, *, load: Callable[[str], tiktoken.Encoding] = load_encoding) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._encodings: dict[str, tiktoken.Encoding] = {}

    def get(self, name: str) -> tiktoken.Encoding:
        """The encoding called ``name``, loaded on first use."""
        # A dict read is atomic, so the common path takes no lock.
        encoding = self._encodings.get(name)
        if encoding is None:
            with self._lock:
                encoding = self._encodings.get(name)
                if encoding is None:
                    encoding = self._load(name)
                    self._encodings[name] = encoding
        return encoding


# An empty cache, filled on first use; nothing is read from the environment at import time.
_PROCESS_ENCODINGS = EncodingCache()


def get_encoding(name: str) -> tiktoken.Encoding:
    """Encoding ``name`` (``cl100k_base`` or ``o200k_base``), loaded once per process.

    Raises:
        KeyError: ``name`` is not one of :data:`SPECS`.
        ConfigError: no verified copy of the file is available.
    """
    return _PROCESS_ENCODINGS.get(name)
