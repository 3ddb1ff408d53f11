"""The test-time options as values, validated without torch (an argument error must not pay for
importing it): `--best-of N`, `--refine K` (see `test_time.search`), and the seeds of best-of
candidates."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import InputError

MAX_BEST_OF = 256  # candidates per image: more is a typo, not a plan
MAX_REFINE = 1000  # gradient steps per image


@dataclass(frozen=True)
class RefineConfig:
    """ReNO's optimiser settings (its defaults)."""

    steps: int  # K gradient steps; K + 1 iterates are scored
    lr: float = 5.0  # SGD step size (ReNO: 5)
    reg: float = 0.01  # weight of the norm regulariser (ReNO: 0.01)
    grad_clip: float = 0.1  # per-image gradient norm (ReNO: 0.1)
    momentum: float = 0.9  # Nesterov momentum (ReNO)


@dataclass(frozen=True)
class TestTime:
    """What to spend at test time: plain (best_of 1, no refine), best-of-N, or refinement."""

    __test__ = False  # not a pytest class
    best_of: int = 1
    refine: RefineConfig | None = None

    @property
    def plain(self) -> bool:
        return self.best_of == 1 and self.refine is None

    @property
    def label(self) -> str:
        if self.refine is not None:
            return f"refine {self.refine.steps}"
        return "plain" if self.best_of == 1 else f"best-of {self.best_of}"


def check_test_time(best_of: int, refine: int | None, lr: float, reg: float,
                    scorers: Sequence[str], backend: str = "torch") -> TestTime:
    """The --best-of/--refine options (refine None: off), validated (one-line InputError)."""
    if not 1 <= best_of <= MAX_BEST_OF:
        raise InputError(f"--best-of must be between 1 and {MAX_BEST_OF}, got {best_of}")
    if refine is not None and not 1 <= refine <= MAX_REFINE:
        raise InputError(f"--refine must be between 1 and {MAX_REFINE} steps, got {refine}")
    if best_of > 1 and refine:
        raise InputError("use --best-of or --refine, not both")
    if (best_of > 1 or refine) and not scorers:
        raise InputError(f"--{'refine' if refine else 'best-of'} needs at least one --scorer "
                         "(what the candidates are ranked by)")
    if refine and backend != "torch":
        raise InputError(f"--refine backpropagates through the torch model; use --backend torch "
                         f"(not {backend})")
    if refine and not (math.isfinite(lr) and lr > 0 and math.isfinite(reg) and reg >= 0):
        raise InputError(f"--refine-lr must be > 0 and --refine-reg >= 0, got {lr} and {reg}")
    return TestTime(best_of, RefineConfig(refine, lr, reg) if refine else None)


def candidate_seed(seed: int, k: int) -> int:
    """Seed of candidate k of the image with `seed` (see the module docstring)."""
    if k == 0:
        return seed
    digest = hashlib.sha256(f"pahi-rt/best-of/{seed}/{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little")
