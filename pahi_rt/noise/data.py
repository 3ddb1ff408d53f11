"""Prompt sets for training and evaluation, and a stable train/val/test split.

Sources: `.txt` (one prompt per line), `.csv` / `.tsv` (a column, `--prompt-column`),
`.jsonl` (a field, `--prompt-field`), or an HF dataset id (`datasets` imported lazily; an
optional `:split` suffix, default `train`). Prompts are stripped and deduplicated, first
occurrence kept. The split hashes each prompt, so a prompt lands in the same part on every run
and on every machine, whatever else is in the file.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import InputError, require
from ..hub import hub_reachable

DEFAULT_COLUMNS = ("prompt", "Prompt", "caption", "text")


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
    """Deduplicated prompts from a file or an HF dataset id (see the module docstring)."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{option} {source}: not UTF-8 text") from None
        if suffix in (".csv", ".tsv"):
            prompts = _table(text, "\t" if suffix == ".tsv" else ",", column, source, option)
        elif suffix == ".jsonl":
            prompts = _jsonl(text, field or column, source, option)
        else:
            prompts = text.splitlines()
    elif path.exists() or str(source).startswith((".", "/", "~")) or "/" not in str(source):
        raise InputError(f"{option} {source}: no such file (or HF dataset id 'owner/name')")
    else:
        prompts = _hf_dataset(str(source), column or field, option)
    prompts = dedupe(prompts)
    if not prompts:
        raise InputError(f"{option} {source}: no prompts found")
    return prompts


def _table(text: str, delimiter: str, column: str | None, source, option: str) -> list[str]:
    rows = csv.DictReader(text.splitlines(), delimiter=delimiter)
    names = rows.fieldnames or []
    col = column or next((c for c in DEFAULT_COLUMNS if c in names), None)
    if col is None or col not in names:
        raise InputError(f"{option} {source}: no column '{column or 'prompt'}' (columns: "
                         f"{', '.join(names)}); choose one with --prompt-column")
    return [r[col] or "" for r in rows]


def _jsonl(text: str, field: str | None, source, option: str) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise InputError(f"{option} {source}: line {n} is not JSON") from None
        key = field or next((c for c in DEFAULT_COLUMNS if isinstance(row, dict) and c in row),
                            None)
        if not isinstance(row, dict) or key not in row:
            raise InputError(f"{option} {source}: line {n} has no field '{field or 'prompt'}'; "
                             "choose one with --prompt-field")
        out.append(row[key])
    return out


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
