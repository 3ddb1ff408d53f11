"""Where artifacts live when no directory is given: the content-keyed cache under
$PAHI_RT_CACHE (default ~/.cache/pahi-rt/artifacts), and inductor's kernel cache beside it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from ..errors import InputError
from ..io import sha256_json
from .keys import options_key


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """$PAHI_RT_CACHE, else ~/.cache/pahi-rt/artifacts (nothing is created or checked)."""
    env = environ.get("PAHI_RT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pahi-rt" / "artifacts"


def inductor_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where torch inductor keeps compiled kernels across runs: $TORCHINDUCTOR_CACHE_DIR, else
    `inductor/` beside the artifact cache (nothing is created or set)."""
    env = environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(env) if env else cache_root(environ).parent / "inductor"


def cache_dir(sources: dict, options) -> Path:
    """A content-keyed directory under `cache_root()` for the graphs of `sources` (from
    `keys.source_hashes`) at `options`' shapes and precision (see `keys.options_key`). The
    root is created; InputError when it is not a writable folder."""
    base = cache_root()
    try:
        base.mkdir(parents=True, exist_ok=True)
        ok = base.is_dir() and os.access(base, os.W_OK)
    except OSError:
        ok = False
    if not ok:
        raise InputError(f"PAHI_RT_CACHE={base}: not a writable folder; point it at one (or "
                         "pass --artifacts DIR)")
    key = sha256_json({"sources": sources, "options": options_key(options)})
    return base / key[:20]
