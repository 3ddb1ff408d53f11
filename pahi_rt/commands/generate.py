"""`pahi-rt generate`: prompts -> PNG files with generation metadata."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from ..extras import check_extras
from ..specs import DEFAULT_MODEL
from .common import (Artifacts, Backend, BestOfOption, Compile, Decoder, Device, DtypeAlias,
                     Height, Model, Noise, Precision, PromptColumn, PromptField, RefineLr,
                     RefineOption, RefineReg, Scorers, Steps, Width, echo_err, fits,
                     pick_precision, resolve_precision)


def generate(
    prompt: Optional[str] = typer.Argument(None, help="The prompt (or use --prompts FILE)."),
    prompts: Optional[str] = typer.Option(None, help="Prompt file (.txt one per line, .csv/.tsv "
                                          "column, .jsonl field; - for stdin): image i (the i-th "
                                          "non-blank prompt) goes to OUT/{i:05d}.png with seed "
                                          "+ i; blank lines are skipped, the source line number "
                                          "is in the image's metadata."),
    prompt_column: PromptColumn = None,
    prompt_field: PromptField = None,
    model: Model = DEFAULT_MODEL,
    decoder: Decoder = None,
    noise: Noise = "gaussian",
    head: Optional[Path] = typer.Option(None, help="Head checkpoint dir for --noise hi|pahi."),
    steps: Steps = 1,
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    height: Height = 512,
    width: Width = 512,
    precision: Precision = "fp32",
    dtype: DtypeAlias = None,
    device: Device = "auto",
    out: str = typer.Option("outputs", help="Output directory, or a .png file (one prompt)."),
    overwrite: bool = typer.Option(False, help="Replace images that already exist in --out."),
    backend: Backend = "torch",
    artifacts: Artifacts = None,
    compile: Compile = False,
    best_of: BestOfOption = 1,
    refine: RefineOption = None,
    refine_lr: RefineLr = 5.0,
    refine_reg: RefineReg = 0.01,
    scorer: Scorers = (),
    ray: bool = typer.Option(False, "--ray", help="Render --prompts on Ray Data actors (same "
                             "pixels); also writes OUT/index.jsonl, and a re-run resumes."),
    address: Optional[str] = typer.Option(None, help="--ray: Ray cluster address (default "
                                          "$RAY_ADDRESS, else a local Ray on 127.0.0.1)."),
    replicas: int = typer.Option(1, help="--ray: actors, each loading the model once."),
    gpus_per_replica: float = typer.Option(0.0, help="--ray: GPUs per actor."),
):
    """Generate images (torch reference sampler or exported graphs) and write PNGs."""
    check_extras("generate", backend=backend, artifacts=artifacts, scorer=scorer, ray=ray)
    from .. import io, progress
    from ..runtime.pipeline import PipelineConfig, check_seeds, load_model, open_pipeline
    from ..prompts import Prompt, normalise, read_prompts
    from ..noise.scorers import parse_scorer
    from ..noise.test_time import check_test_time
    from ..specs import check_image_size, parse_mode

    if (prompt is None) == (prompts is None):
        raise InputError("give either a PROMPT or --prompts FILE")
    if noise == "gaussian" and head is not None:
        raise InputError("--head is only used with --noise hi or --noise pahi")
    mode = parse_mode(noise, steps)
    test_time = check_test_time(best_of, refine, refine_lr, refine_reg, scorer, backend)
    [parse_scorer(s) for s in scorer]  # syntax errors before any loading
    check_image_size(height, width)
    precision = resolve_precision(pick_precision(precision, dtype), backend, device)
    if prompt is not None and not prompt.strip():
        raise InputError("the PROMPT is empty")
    texts = (read_prompts(prompts, prompt_column, prompt_field) if prompts
             else [Prompt(normalise(prompt), 0)])
    check_seeds([seed, seed + len(texts) - 1])  # the whole run's seeds, before any work
    config = PipelineConfig(backend, mode, min(best_of, 8), height, width, precision, artifacts,
                            compile=compile)
    fits(model, config, device, export=backend != "torch" and artifacts is None)
    if ray or address or replicas != 1 or gpus_per_replica:
        from .generate_ray import generate_ray

        if not test_time.plain:
            raise InputError("--best-of and --refine are not used with --ray (plain images)")
        return generate_ray(texts, dict(
            model=model, decoder=decoder, head=head, noise=noise, backend=backend,
            artifacts=artifacts, precision=precision, height=height, width=width, steps=steps,
            device=device), seed, out, overwrite, ray, prompts, address, replicas,
            gpus_per_replica)
    paths = io.output_paths(out, len(texts), overwrite)
    scorers = None if test_time.plain else _scorers(scorer, test_time, device)  # fail fast
    loaded = load_model(model, decoder, device=device, head=head, noise=(noise,), height=height,
                        width=width, keep_fp32=backend != "torch", log=echo_err)
    pipe = open_pipeline(loaded, config, log=echo_err)
    if best_of > 1 or len({p.text for p in texts}) < len(texts):  # a prompt comes again
        from ..runtime.prompt_cache import PromptCache

        pipe.prompt_cache = PromptCache()
    with progress.ImageProgress(texts) as bar:  # a line per image (stderr), ETA after warm-up
        for i, pixels, extra, seconds in _images(pipe, loaded, test_time, scorers, noise, texts,
                                                 seed):
            p = texts[i]
            extra = {**({"source_line": p.line} if prompts else {}), **extra}
            meta = io.png_metadata(p.text, seed + i, steps, noise, model, loaded.head_path, height,
                                   width, loaded.base.decoder_id, extra=extra or None)
            try:
                path = io.save_png(paths[i], pixels, meta, overwrite)
            except OSError as e:  # disk full, permissions changed under us, ...
                raise InputError(f"writing {paths[i]} failed ({e.strerror or e}); {i} of "
                                 f"{len(texts)} images were written") from None
            typer.echo(bar.line(path, seed + i, seconds), err=prompts is not None)


def _scorers(scorer, test_time, device):
    from ..components import resolve_device
    from .test_time import load_scorers

    return load_scorers(scorer, test_time, resolve_device(device))


def _images(pipe, loaded, test_time, scorers, noise, texts, seed):
    """(index, uint8 pixels [H, W, 3], extra metadata, seconds) per prompt, plain or with
    test-time compute."""
    if test_time.plain:
        for i, p in enumerate(texts):
            t0 = time.perf_counter()
            pixels = pipe([p.text], [seed + i])
            yield i, pixels[0], {}, time.perf_counter() - t0
        return
    from . import test_time as run

    yield from run.images(pipe, loaded, scorers, test_time, noise, [p.text for p in texts],
                          [seed + i for i in range(len(texts))], echo_err)
