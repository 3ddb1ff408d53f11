"""Prompt sets for training and evaluation, and a stable train/val/test split.

Sources: a prompt file (`pahi_rt.prompts`: .txt, .csv/.tsv, .jsonl, `-` for stdin), or an HF
dataset id (`datasets` imported lazily; an optional `:split` suffix, default `train`). Prompts
are whitespace-normalised and deduplicated, first occurrence kept. The split hashes each
prompt, so a prompt lands in the same part on every run and on every machine, whatever else is
in the file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .errors import InputError, require
from .hub import hub_reachable
from .prompts import DEFAULT_COLUMNS, is_file_source, read_prompts


@dataclass(frozen=True)
class PromptSplit:
    """Disjoint prompt lists."""

    train: list[str]
    val: list[str]
    test: list[str]


def dedupe(prompts: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for p in prompts:
        p = " ".join(str(p).split())
        if p and p not in seen:
            seen.add(p)
            out.append(p)
    return out


def load_prompts(source: str | Path, column: str | None = None, field: str | None = None,
                 option: str = "--prompts") -> list[str]:
    """Deduplicated prompts from a file (`pahi_rt.prompts` rules) or an HF dataset id."""
    if is_file_source(source):
        prompts = [p.text for p in read_prompts(source, column, field, option)]
    else:
        prompts = _hf_dataset(str(source), column or field, option)
    prompts = dedupe(prompts)
    if not prompts:
        raise InputError(f"{option} {source}: no prompts found")
    return prompts


def _hf_dataset(source: str, column: str | None, option: str) -> list[str]:
    datasets = require("datasets", "data")
    name, _, split = source.partition(":")
    if not hub_reachable():
        raise InputError(f"{option} {source}: not a file, and the HF hub cannot be reached to "
                         "load a dataset of that name")
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # datasets raises many types for bad ids / splits / network
        raise InputError(f"{option} {source}: could not load the dataset "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    col = column or next((c for c in DEFAULT_COLUMNS if c in ds.column_names), None)
    if col not in ds.column_names:
        raise InputError(f"{option} {source}: no column '{column or 'prompt'}' (columns: "
                         f"{', '.join(ds.column_names)}); choose one with --prompt-column")
    return list(ds[col])


def without_overlap(train: list[str], val: list[str]) -> list[str]:
    """Training prompts minus those also in the validation set (a warning says how many);
    refused when nothing is left (the two files hold the same prompts)."""
    import warnings

    held_out = set(val)
    kept = [p for p in train if p not in held_out]
    if not kept:
        raise InputError("--prompts and --val-prompts hold the same prompts: validation would "
                         "measure memorisation; give held-out validation prompts")
    if len(kept) < len(train):
        warnings.warn(f"{len(train) - len(kept)} of {len(train)} training prompts are also "
                      "validation prompts; they are left out of training", stacklevel=2)
    return kept


def bucket(prompt: str) -> float:
    """A stable number in [0, 1) for a prompt (sha256, independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_prompts(prompts: list[str], val_fraction: float = 0.02, test_fraction: float = 0.02
                  ) -> PromptSplit:
    """Hash split: bucket < val -> val, < val + test -> test, else train. The paper holds out
    500 + 500 of ~35k prompts; 2% + 2% of the 25k Pick-a-Pic training prompts is about that.
    Small sets still get at least one validation prompt (the lowest bucket)."""
    if len(prompts) < 2:
        raise InputError("need at least 2 prompts to split off validation prompts "
                         "(or give --val-prompts)")
    val, test, train = [], [], []
    for p in prompts:
        b = bucket(p)
        (val if b < val_fraction else test if b < val_fraction + test_fraction else train).append(p)
    if not val:
        first = min(train, key=bucket)
        train.remove(first)
        val.append(first)
    if not train:
        raise InputError("no training prompts left after the validation/test split")
    return PromptSplit(train, val, test)
