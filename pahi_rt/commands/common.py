"""What every verb shares: the error boundary (`command`) and option definitions, so one concept
has one flag, one default and one help text across verbs. `pahi_rt.cli` registers the verbs;
verbs never import it."""
from __future__ import annotations

import functools
import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..errors import InputError, PahiError
from ..hostmem import keep_freed_memory
from ..specs import PRECISIONS


def fail(message: str, code: int = 2):
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def echo_err(message: str) -> None:
    """Progress and status lines: stderr, so stdout stays the verb's result."""
    typer.echo(message, err=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    typer.secho(f"warning: {message}", fg="yellow", err=True)


def _quiet_libraries():
    """Errors only from diffusers/transformers, without importing them (seconds a verb that
    fails on its arguments, or never needs them, must not pay): their verbosity variables are
    read when they load; when they are loaded already (tests), set it directly."""
    for var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(var, "error")
    for name in ("diffusers", "transformers"):
        if f"{name}.utils.logging" in sys.modules:
            sys.modules[f"{name}.utils.logging"].set_verbosity_error()
    for name in ("huggingface_hub", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def command(fn, keep_memory: bool = True):
    """Wrap a verb: one-line errors with exit code 2 for PahiError, quiet library logs.
    `keep_memory`: keep freed buffers in the process (inference speed; `export` does not want
    freed transients to add up in its peak)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if keep_memory:
            keep_freed_memory()  # CPU: no re-mapping of activation buffers on every call
        _quiet_libraries()
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            return fn(*args, **kwargs)
        except PahiError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
    return wrapper


def check_number(option: str, value: float | None, low: float, high: float,
                 low_open: bool = False) -> None:
    """A float option, before any work: finite (typer takes "nan" and "inf") and in
    [low, high], or (low, high] with `low_open`; None (not given) passes. One-line InputError
    naming the option otherwise."""
    if value is None:
        return
    above = value > low if low_open else value >= low
    if not (math.isfinite(value) and above and value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InputError(f"{option} must be a finite number in {interval}, got {value}")


def pick_precision(precision: str, dtype_alias: str | None) -> str:
    """--precision, or the older --dtype spelling when given; validated ('auto' is resolved
    later by `resolve_precision`, once the backend and device are known)."""
    value = dtype_alias or precision
    if value not in PRECISIONS + ("auto",):
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)} or auto, got "
                         f"'{value}'")
    return value


def check_backend(backend: str, device: str) -> None:
    """The backend name and what it needs of the device, before anything is imported (a
    misspelt backend must not be answered with "install tensorrt")."""
    from ..specs import BACKENDS

    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if backend == "tensorrt" and device == "cpu":
        raise InputError("--backend tensorrt runs on a CUDA GPU, not --device cpu; on the CPU "
                         "use --backend onnxruntime or torch")


def resolve_precision(precision: str, backend: str, device: str, log=echo_err) -> str:
    """`precision`, or for 'auto' what the backend and this machine's CPU/GPU make fastest,
    said on stderr (`pahi_rt.cpu.auto_precision`)."""
    if precision != "auto":
        return precision
    from ..components import resolve_device
    from ..cpu import auto_precision

    picked, why = auto_precision(backend, resolve_device(device).type)
    log(f"precision auto: {picked} ({why})")
    return picked


def image_size(model: str, height: int | None, width: int | None) -> tuple[int, int]:
    """--height/--width, checked; one not given is the model's default size (`hub.default_size`:
    a preset's own, a checkpoint's UNet sample_size x 8), as diffusers' default_sample_size.
    A --model that can be no model is refused first (`hub.check_model_source`)."""
    from ..hub import check_model_source, default_size
    from ..specs import check_image_size

    check_model_source(model)
    if height is None or width is None:
        h, w = default_size(model)
        height, width = h if height is None else height, w if width is None else width
    check_image_size(height, width)
    return height, width


def fits(model: str, config, device: str, export: bool = False, run: bool = True,
         decoder: str | None = None) -> None:
    """Refuse (one line naming what would fit) a step the machine's memory cannot hold."""
    from .. import memory
    from ..components import resolve_device

    alternatives = memory.smaller_shapes(config.height, config.width, config.batch)
    if config.precision == "fp32" and (config.backend != "torch" or not run):
        alternatives = {"--precision fp16": {"precision": "fp16"}, **alternatives}
    memory.check(memory.model_params(model, decoder), f"{model} at {config.width}x{config.height}",
                 alternatives, height=config.height, width=config.width, batch=config.batch,
                 precision=config.precision, backend=config.backend,
                 device=resolve_device(device).type, export=export, run=run)


# "\\[": rich markup would swallow "[@SOURCE]" as a tag (the help showed NAME[=WEIGHT])
SCORER_SYNTAX = ("NAME\\[@SOURCE]\\[=WEIGHT], NAME one of pickscore, imagereward, hpsv2 or "
                 "module:factory")
SCORER_HELP = (f"Preference scorer, repeatable; the objective is the weighted sum. Syntax "
               f"{SCORER_SYNTAX}, e.g. --scorer pickscore=1.0 --scorer mymod:make=0.5 or "
               "pickscore@/models/PickScore_v1.")

# Shared options (Typer reads the help and flag names from here; defaults stay at the verb).
Model = Annotated[str, typer.Option(help="Preset (sd-turbo, synthetic, tiny, sdxl-turbo, "
                                         "synthetic-xl, tiny-xl), diffusers model directory "
                                         "(SD 2.x or SDXL) or HF id.")]
Decoder = Annotated[Optional[str], typer.Option(
    help="AutoencoderTiny dir / HF id, a taesd_decoder.safetensors file, an AutoencoderKL dir, "
         "or vae: the model's own full VAE (slower, the checkpoint's fidelity).")]
Height = Annotated[Optional[int], typer.Option(
    help="Image height, a multiple of 8 (default: the model's own, e.g. 64 for tiny).")]
Width = Annotated[Optional[int], typer.Option(
    help="Image width, a multiple of 8 (default: the model's own, e.g. 64 for tiny).")]
Precision = Annotated[str, typer.Option(
    help="fp32 | fp16 | bf16 | int8 | auto. bf16: torch, openvino; int8: openvino (NNCF-quantized "
         "UNet); auto: bf16 on a CPU with bf16 units (torch, openvino), fp16 on a GPU, else fp32.")]
DtypeAlias = Annotated[Optional[str], typer.Option("--dtype", hidden=True,
                                                   help="Old name of --precision.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda[:N] (auto: cuda when torch "
                                          "sees a GPU).")]
Noise = Annotated[str, typer.Option(help="gaussian | hi | pahi")]
Steps = Annotated[int, typer.Option(help="Euler steps (SD-Turbo: 1 or 2).")]
Backend = Annotated[str, typer.Option(help="torch | onnxruntime | tensorrt | openvino (same "
                                           "pixels for the same seed at fp32).")]
Artifacts = Annotated[Optional[Path], typer.Option(
    help="Artifact dir from `pahi-rt export` (onnxruntime/tensorrt/openvino); default: a "
         "content-keyed cache dir ($PAHI_RT_CACHE), exported on first use.")]
Compile = Annotated[bool, typer.Option("--compile/--no-compile", help="torch: torch.compile "
                                       "the path (and replay it as one CUDA graph on a GPU).")]
PromptColumn = Annotated[Optional[str], typer.Option(
    help="Column of a .csv/.tsv or dataset (default: prompt, Prompt, caption or text).")]
PromptField = Annotated[Optional[str], typer.Option(help="Field of a .jsonl file.")]
Scorers = Annotated[List[str], typer.Option("--scorer", help=SCORER_HELP)]
BestOfOption = Annotated[int, typer.Option(
    "--best-of", help="Render N candidates per image (candidate k of seed s: seed s for k = 0, "
    "else a fixed hash of (s, k)) and keep the one the --scorer set rates highest.")]
RefineOption = Annotated[Optional[int], typer.Option(
    "--refine", help="ReNO-style refinement: K gradient steps on the initial noise through the "
    "torch model and the --scorer set (from the head's noise for hi/pahi, N(0, I) for "
    "gaussian); the best iterate is kept (default: off).")]
RefineLr = Annotated[float, typer.Option(help="--refine: SGD step size (ReNO: 5).")]
RefineReg = Annotated[float, typer.Option(help="--refine: weight of the regulariser keeping "
                                          "||eps|| likely under N(0, I) (ReNO: 0.01).")]
