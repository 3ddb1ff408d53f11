"""The `--scorer NAME[@SOURCE][=WEIGHT]` value (see `scorers.scorer_set`), parsed without torch:
an argument error must not pay for importing it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from ..errors import InputError

BUILTIN = ("pickscore", "imagereward", "hpsv2")


@dataclass(frozen=True)
class ScorerSpec:
    """One parsed `--scorer` value."""

    name: str  # builtin name or module:factory
    source: str | None = None  # weights (HF id or directory) replacing the default
    weight: float = 1.0

    @property
    def label(self) -> str:
        return self.name if self.source is None else f"{self.name}@{self.source}"

    def __str__(self) -> str:
        return f"{self.label}={self.weight:g}"


def parse_scorer(text: str) -> ScorerSpec:
    """`NAME[@SOURCE][=WEIGHT]` -> ScorerSpec (see the module docstring)."""
    body, weight = text.strip(), 1.0
    if "=" in body:
        head, _, tail = body.rpartition("=")
        try:
            body, weight = head, float(tail)
        except ValueError:
            weight = float("nan")
        if not math.isfinite(weight):
            raise InputError(f"--scorer {text}: weight '{tail}' is not a finite number "
                             "(syntax NAME[@SOURCE][=WEIGHT])")
    name, _, source = body.partition("@")
    if not name or (name not in BUILTIN and ":" not in name):
        raise InputError(f"--scorer {text}: unknown scorer '{name}' (use {', '.join(BUILTIN)} or "
                         "module:factory; syntax NAME[@SOURCE][=WEIGHT])")
    if ":" in name and source:
        raise InputError(f"--scorer {text}: a module:factory scorer takes no @SOURCE")
    return ScorerSpec(name, source or None, weight)


def parse_scorers(values: Iterable[str]) -> tuple[ScorerSpec, ...]:
    """Every `--scorer` value of a verb, parsed before any loading (a syntax error is a one-line
    InputError naming the bad value, before torch or any weights are read)."""
    return tuple(parse_scorer(v) for v in values)
