"""Content digests of files: the HF cache's blob names for free, else sha256 cached by (path,
size, mtime) in $PAHI_RT_DIGEST_CACHE (default ~/.cache/pahi-rt/file-digests.json), so a
multi-GiB file is hashed once. Model keys (model_key.py) and the single-file converter's cache
(single_file.py) both key by these digests."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .io import sha256_file

DIGEST_CACHE_ENV = "PAHI_RT_DIGEST_CACHE"
HEX = frozenset("0123456789abcdef")
_BLOB = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def file_digest(path: Path) -> str:
    """A content digest of one file: its HF blob name when it is a cache link, else its
    sha256 (cached by path, size and mtime)."""
    if path.is_symlink():
        target = Path(os.readlink(path))
        if target.parent.name == "blobs" and _BLOB.match(target.name):
            return target.name
    real = path.resolve()
    stat = real.stat()
    cache_key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _read_cache()
    if cache_key not in cache:
        cache[cache_key] = sha256_file(real)
        _write_cache(cache)
    return cache[cache_key]


def _cache_path() -> Path:
    default = Path.home() / ".cache" / "pahi-rt" / "file-digests.json"
    return Path(os.environ.get(DIGEST_CACHE_ENV) or default)


def _read_cache() -> dict:
    """The digest cache; anything unreadable or malformed (a list, non-hex values) is ignored
    entry by entry: a cache can only cost time, never give a wrong key."""
    if not _cache_path().is_file():  # absent, or a FIFO/device that a read would block on
        return {}
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items()
            if isinstance(v, str) and len(v) == 64 and all(c in HEX for c in v)}


def _write_cache(cache: dict) -> None:
    """Best effort (it is only a cache): atomic, and silent when the place is not writable."""
    from .io import atomic_write_text

    path = _cache_path()
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return  # never swap a link, device (/dev/null) or folder for a cache file
    try:
        _cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_cache_path(), json.dumps(cache))
    except OSError:
        pass
