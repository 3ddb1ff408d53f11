"""The verbs' options as values: each verb builds one from its command line (keywords, the flags'
names) and passes it on, so no helper takes a dozen positional parameters. Torch-free: an
argument error, --help and --version must not pay for importing it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..prompts import Prompt
from ..test_time.options import TestTime


@dataclass(frozen=True)
class GenerateOptions:
    """`pahi-rt generate`: the flags as given (their defaults are the verb's); `texts`,
    `test_time` and a resolved `precision` are filled in once they are checked."""

    prompt: str | None  # the PROMPT argument, or
    prompts: str | None  # --prompts FILE (- for stdin)
    prompt_column: str | None
    prompt_field: str | None
    model: str
    decoder: str | None
    noise: str
    head: Path | None
    steps: int
    seed: int  # image i has seed + i
    height: int | None  # None: the model's default size (filled in by `check`)
    width: int | None
    precision: str  # after checking: never 'auto'
    dtype: str | None  # the old spelling of --precision
    device: str
    out: str
    image_format: str | None
    overwrite: bool
    backend: str
    artifacts: Path | None
    compile: bool
    best_of: int
    refine: int | None
    refine_lr: float
    refine_reg: float
    scorers: tuple[str, ...]
    ray: bool
    address: str | None
    replicas: int
    gpus_per_replica: float
    texts: tuple[Prompt, ...] = ()  # read from PROMPT or --prompts
    test_time: TestTime = field(default_factory=TestTime)

    @property
    def ray_run(self) -> bool:
        """Any --ray option given: the run goes to Ray (which refuses the others without
        --ray)."""
        return bool(self.ray or self.address or self.replicas != 1 or self.gpus_per_replica)

    @property
    def from_file(self) -> bool:
        return self.prompts is not None


@dataclass(frozen=True)
class TrainOptions:
    """`pahi-rt train`, both objectives: the flags as given (None: the objective's default),
    with `settings` (the TrainConfig fields the verb has decided: sizes, lr, seed, objective,
    pretraining, activation checkpointing) and the resolved device and precision filled in."""

    out: Path
    mode: str
    objective: str  # scorer | kto | dpo
    feedback_method: str  # kto/dpo: reward | density
    feedback: Path | None
    init: Path | None
    beta: float | None
    good_weight: float | None
    bad_weight: float | None
    model: str | None  # None: the default model (kto/dpo: the records')
    decoder: str | None
    scorers: tuple[str, ...]
    prompts: str | None
    val_prompts: str | None
    prompt_column: str | None
    prompt_field: str | None
    max_val_prompts: int
    hidden: int | None
    height: int | None
    width: int | None
    device: str
    precision: str  # the frozen model's weights (after checking: never the alias)
    bf16: bool | None
    resume: bool
    settings: dict = field(default_factory=dict)

    @property
    def feedback_run(self) -> bool:
        return self.objective in ("kto", "dpo")


@dataclass(frozen=True)
class EvalOptions:
    """`pahi-rt eval`, checked: the head, what it is scored with, on which prompts, and where
    the tables go (height/width None: the head's size)."""

    head: Path
    model: str
    decoder: str | None
    scorers: tuple[str, ...]  # each reported on its own
    prompts: str  # the --prompts source, as given (recorded in the summary)
    texts: tuple[str, ...]  # its prompts, --max-prompts applied
    seeds: int  # seed rounds
    batch_size: int
    height: int | None
    width: int | None
    two_step: bool
    device: str
    precision: str
    json_path: Path | None
    markdown_path: Path | None
    test_time: TestTime


def absolute_path(path) -> str | None:
    """Replicas and Ray actors do not run in this directory: local paths travel as absolute
    ones (anything else, an HF id, as given)."""
    if path is None:
        return None
    return str(Path(path).resolve()) if Path(path).exists() else str(path)
