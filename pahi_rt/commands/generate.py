"""`pahi-rt generate`: prompts -> PNG files with generation metadata."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from ..extras import check_extras
from ..specs import DEFAULT_MODEL
from .common import (Artifacts, Backend, BestOfOption, Compile, Decoder, Device, DtypeAlias,
                     Height, Model, Noise, Precision, PromptColumn, PromptField, RefineLr,
                     RefineOption, RefineReg, Scorers, Steps, Width, check_backend, check_number,
                     echo_err, fits, image_size, pick_precision, resolve_precision)
from .options import GenerateOptions


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
    height: Height = None,
    width: Width = None,
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
    render(check(GenerateOptions(
        prompt=prompt, prompts=prompts, prompt_column=prompt_column, prompt_field=prompt_field,
        model=model, decoder=decoder, noise=noise, head=head, steps=steps, seed=seed,
        height=height, width=width, precision=precision, dtype=dtype, device=device, out=out,
        image_format=image_format, overwrite=overwrite, backend=backend, artifacts=artifacts,
        compile=compile, best_of=best_of, refine=refine, refine_lr=refine_lr,
        refine_reg=refine_reg, scorers=tuple(scorer), ray=ray, address=address,
        replicas=replicas, gpus_per_replica=gpus_per_replica)))


def check(o: GenerateOptions) -> GenerateOptions:
    """Every option checked before torch and the model libraries are imported (seconds): the
    value with its prompts read, its test-time options and its precision resolved."""
    from ..prompts import Prompt, normalise, read_prompts
    from ..scorers.spec import parse_scorers
    from ..specs import check_seeds, parse_mode
    from ..test_time.options import check_test_time

    check_number("--refine-lr", o.refine_lr, 0.0, 1e4, low_open=True)
    check_number("--refine-reg", o.refine_reg, 0.0, 1e4)
    check_number("--gpus-per-replica", o.gpus_per_replica, 0.0, 1024.0)
    _check_prompt_source(o.prompt, o.prompts)
    if o.noise == "gaussian" and o.head is not None:
        raise InputError("--head is only used with --noise hi or --noise pahi")
    check_backend(o.backend, o.device)
    check_extras("generate", backend=o.backend, artifacts=o.artifacts, scorer=o.scorers,
                 ray=o.ray)
    height, width = image_size(o.model, o.height, o.width)  # --model checked first
    parse_mode(o.noise, o.steps)
    test_time = check_test_time(o.best_of, o.refine, o.refine_lr, o.refine_reg, o.scorers,
                                o.backend)
    parse_scorers(o.scorers)
    precision = resolve_precision(pick_precision(o.precision, o.dtype), o.backend, o.device)
    texts = (read_prompts(o.prompts, o.prompt_column, o.prompt_field) if o.prompts
             else [Prompt(normalise(o.prompt), 0)])
    check_seeds([o.seed, o.seed + len(texts) - 1])  # the whole run's seeds, before any work
    if o.ray_run and o.image_format not in (None, "png"):
        raise InputError("--ray writes PNGs (its index verifies them); drop --format")
    return replace(o, height=height, width=width, precision=precision, dtype=None,
                   texts=tuple(texts), test_time=test_time)


def render(o: GenerateOptions) -> None:
    """Render the checked options' prompts (here, or on Ray with --ray) and write the images."""
    from .. import image_files
    from ..export.first_use import export_on_first_use
    from ..runtime.pipeline import PipelineConfig, load_model, open_pipeline
    from ..specs import RenderShape, parse_mode

    shape = RenderShape(batch=min(o.best_of, 8), height=o.height, width=o.width,
                        precision=o.precision)
    config = PipelineConfig(backend=o.backend, mode=parse_mode(o.noise, o.steps), shape=shape,
                            artifacts=o.artifacts, compile=o.compile)
    fits(o.model, config, o.device, export=o.backend != "torch" and o.artifacts is None,
         decoder=o.decoder)
    if o.ray_run:
        from .generate_ray import generate_ray

        if not o.test_time.plain:
            raise InputError("--best-of and --refine are not used with --ray (plain images)")
        return generate_ray(o)
    outputs = image_files.plan_outputs(o.out, len(o.texts), o.image_format, o.overwrite)
    if outputs.start:
        echo_err(f"{outputs.directory} has images up to {outputs.start - 1:05d}: numbering on "
                 f"from {outputs.path(0).name} (--overwrite starts at 00000 and replaces)")
    scorers = None if o.test_time.plain else _scorers(o)  # fail fast
    loaded = load_model(o.model, o.decoder, device=o.device, head=o.head, noise=(o.noise,),
                        height=o.height, width=o.width, keep_fp32=o.backend != "torch",
                        log=echo_err)
    with loaded, open_pipeline(loaded, config, log=echo_err,
                               export=export_on_first_use) as pipe:  # released on any exit
        if o.best_of > 1 or len({p.text for p in o.texts}) < len(o.texts):  # a prompt again
            from ..runtime.prompt_cache import PromptCache

            pipe.prompt_cache = PromptCache()
        _write_all(pipe, loaded, scorers, outputs, o)


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


def _write_all(pipe, loaded, scorers, outputs, o: GenerateOptions) -> None:
    from .. import image_files, io, progress

    keys = loaded.keys()
    texts, seed = o.texts, o.seed
    with progress.ImageProgress(texts) as bar:  # a line per image (stderr), ETA after warm-up
        for i, pixels, extra, seconds in _images(pipe, loaded, scorers, o):
            p = texts[i]
            extra = {**({"source_line": p.line} if o.from_file else {}), **extra}
            own_seed = int(extra.get("candidate_seed", seed + i))  # the seed that reproduces it
            if own_seed != seed + i:
                extra["requested_seed"] = seed + i
            meta = io.png_metadata(p.text, own_seed, o.steps, o.noise, o.model, loaded.head_path,
                                   o.height, o.width, loaded.base.decoder_id,
                                   extra=extra or None, keys=keys,
                                   sampler=loaded.spec.scheduler.sampler)
            try:
                path = image_files.write(outputs, i, pixels, meta)
            except OSError as e:  # disk full, permissions changed under us, ...
                raise InputError(f"writing {outputs.path(i)} failed ({e.strerror or e}); {i} of "
                                 f"{len(texts)} images were written") from None
            if "candidate" in extra:
                echo_err(f"{path.name}: candidate {extra['candidate']} of {extra['best_of']} "
                         f"won (seed {own_seed}, which reproduces it without --best-of)")
            typer.echo(bar.line(path, own_seed, seconds), err=o.from_file)


def _scorers(o: GenerateOptions):
    from ..components import resolve_device
    from ..test_time.images import load_scorers

    return load_scorers(o.scorers, o.test_time, resolve_device(o.device))


def _images(pipe, loaded, scorers, o: GenerateOptions):
    """(index, uint8 pixels [H, W, 3], extra metadata, seconds) per prompt, plain or with
    test-time compute."""
    seed = o.seed
    if o.test_time.plain:
        for i, p in enumerate(o.texts):
            t0 = time.perf_counter()
            pixels = pipe([p.text], [seed + i])
            yield i, pixels[0], {}, time.perf_counter() - t0
        return
    from ..test_time import images as run

    yield from run.images(pipe, loaded, scorers, o.test_time, o.noise, [p.text for p in o.texts],
                          [seed + i for i in range(len(o.texts))], echo_err)
