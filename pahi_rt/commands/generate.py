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
                     RefineOption, RefineReg, Scorers, Steps, Width, check_backend, check_number,
                     echo_err, fits, pick_precision, resolve_precision)


def generate(
    prompt: Optional[str] = typer.Argument(None, help="The prompt (or use --prompts FILE)."),
    prompts: Optional[str] = typer.Option(None, help="Prompt file (.txt one per line, .csv/.tsv "
                                          "column, .jsonl field; - for stdin): image i (the i-th "
                                          "non-blank prompt) has seed + i and takes the next free "
                                          "number in OUT; blank lines are skipped, the source "
                                          "line number is in the image's metadata."),
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
    out: str = typer.Option("outputs", help="Output directory (new images are numbered on after "
                            "the highest NNNNN.png there), or one file: .png, .jpg or .webp."),
    image_format: Optional[str] = typer.Option(
        None, "--format", help="png | jpeg | webp: the format of images written into a directory "
        "(default png; a file --out takes its suffix's)."),
    overwrite: bool = typer.Option(False, help="Directory: write OUT/00000.EXT, 00001, ... and "
                                   "replace what is there; file: replace it."),
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
    """Generate images (torch reference sampler or exported graphs) and write PNG, JPEG or \
WebP files with their generation metadata."""
    from .. import image_files
    from ..scorers.spec import parse_scorer
    from ..test_time.options import check_test_time
    from ..prompts import Prompt, normalise, read_prompts
    from ..specs import check_image_size, check_model_source, check_seeds, parse_mode

    check_number("--refine-lr", refine_lr, 0.0, 1e4, low_open=True)
    check_number("--refine-reg", refine_reg, 0.0, 1e4)
    check_number("--gpus-per-replica", gpus_per_replica, 0.0, 1024.0)

    # every argument is checked before torch and the model libraries are imported (seconds)
    _check_prompt_source(prompt, prompts)
    if noise == "gaussian" and head is not None:
        raise InputError("--head is only used with --noise hi or --noise pahi")
    check_backend(backend, device)
    check_extras("generate", backend=backend, artifacts=artifacts, scorer=scorer, ray=ray)
    check_model_source(model)
    mode = parse_mode(noise, steps)
    test_time = check_test_time(best_of, refine, refine_lr, refine_reg, scorer, backend)
    [parse_scorer(s) for s in scorer]  # syntax errors before any loading
    check_image_size(height, width)
    precision = resolve_precision(pick_precision(precision, dtype), backend, device)
    texts = (read_prompts(prompts, prompt_column, prompt_field) if prompts
             else [Prompt(normalise(prompt), 0)])
    check_seeds([seed, seed + len(texts) - 1])  # the whole run's seeds, before any work
    ray_run = ray or address or replicas != 1 or gpus_per_replica
    if ray_run and image_format not in (None, "png"):
        raise InputError("--ray writes PNGs (its index verifies them); drop --format")
    from ..runtime.pipeline import PipelineConfig, load_model, open_pipeline

    config = PipelineConfig(backend, mode, min(best_of, 8), height, width, precision, artifacts,
                            compile=compile)
    fits(model, config, device, export=backend != "torch" and artifacts is None)
    if ray_run:
        from .generate_ray import generate_ray

        if not test_time.plain:
            raise InputError("--best-of and --refine are not used with --ray (plain images)")
        return generate_ray(texts, dict(
            model=model, decoder=decoder, head=head, noise=noise, backend=backend,
            artifacts=artifacts, precision=precision, height=height, width=width, steps=steps,
            device=device), seed, out, overwrite, ray, prompts, address, replicas,
            gpus_per_replica)
    outputs = image_files.plan_outputs(out, len(texts), image_format, overwrite)
    if outputs.start:
        echo_err(f"{outputs.directory} has images up to {outputs.start - 1:05d}: numbering on "
                 f"from {outputs.path(0).name} (--overwrite starts at 00000 and replaces)")
    scorers = None if test_time.plain else _scorers(scorer, test_time, device)  # fail fast
    loaded = load_model(model, decoder, device=device, head=head, noise=(noise,), height=height,
                        width=width, keep_fp32=backend != "torch", log=echo_err)
    pipe = open_pipeline(loaded, config, log=echo_err)
    if best_of > 1 or len({p.text for p in texts}) < len(texts):  # a prompt comes again
        from ..runtime.prompt_cache import PromptCache

        pipe.prompt_cache = PromptCache()
    _write_all(pipe, loaded, test_time, scorers, texts, seed, outputs,
               dict(steps=steps, noise=noise, model=model, height=height, width=width),
               prompts is not None)


def _check_prompt_source(prompt: str | None, prompts: str | None) -> None:
    """Exactly one of PROMPT and --prompts; a PROMPT that is not blank and encodes as UTF-8."""
    from ..prompts import check_text

    if prompt is not None and prompts is not None:
        raise InputError("give a PROMPT or --prompts FILE, not both")
    if prompt is None and prompts is None:
        raise InputError("give a PROMPT (pahi-rt generate \"a red fox\") or --prompts FILE")
    if prompt is not None and not prompt.strip():
        raise InputError("the PROMPT is empty")
    if prompt is not None:
        check_text(prompt, "the PROMPT")


def _write_all(pipe, loaded, test_time, scorers, texts, seed, outputs, settings: dict,
               from_file: bool) -> None:
    from .. import image_files, io, progress

    keys = loaded.keys()
    with progress.ImageProgress(texts) as bar:  # a line per image (stderr), ETA after warm-up
        for i, pixels, extra, seconds in _images(pipe, loaded, test_time, scorers,
                                                 settings["noise"], texts, seed):
            p = texts[i]
            extra = {**({"source_line": p.line} if from_file else {}), **extra}
            own_seed = int(extra.get("candidate_seed", seed + i))  # the seed that reproduces it
            if own_seed != seed + i:
                extra["requested_seed"] = seed + i
            meta = io.png_metadata(p.text, own_seed, settings["steps"], settings["noise"],
                                   settings["model"], loaded.head_path, settings["height"],
                                   settings["width"], loaded.base.decoder_id, extra=extra or None,
                                   keys=keys, sampler=loaded.spec.scheduler.sampler)
            try:
                path = image_files.write(outputs, i, pixels, meta)
            except OSError as e:  # disk full, permissions changed under us, ...
                raise InputError(f"writing {outputs.path(i)} failed ({e.strerror or e}); {i} of "
                                 f"{len(texts)} images were written") from None
            if "candidate" in extra:
                echo_err(f"{path.name}: candidate {extra['candidate']} of {extra['best_of']} "
                         f"won (seed {own_seed}, which reproduces it without --best-of)")
            typer.echo(bar.line(path, own_seed, seconds), err=from_file)


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
