"""`pahi-rt generate`: prompts -> PNG files with generation metadata."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..cli import app, command
from ..extras import check_extras
from ..errors import InputError
from ..specs import DEFAULT_MODEL


@app.command()
@command
def generate(
    prompt: Optional[str] = typer.Argument(None, help="The prompt (or use --prompts FILE)."),
    prompts: Optional[Path] = typer.Option(None, help="Text file, one prompt per line; image i "
                                           "goes to OUT/{i:05d}.png with seed + i."),
    model: str = typer.Option(DEFAULT_MODEL, help="Preset (sd-turbo, synthetic, tiny), "
                              "diffusers model directory or HF id."),
    decoder: Optional[str] = typer.Option(None, help="AutoencoderTiny dir / HF id, or a "
                                          "taesd_decoder.safetensors file."),
    noise: str = typer.Option("gaussian", help="gaussian | hi | pahi"),
    head: Optional[Path] = typer.Option(None, help="Head checkpoint dir for --noise hi|pahi."),
    steps: int = typer.Option(1, help="Euler steps (SD-Turbo: 1 or 2)."),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    height: int = typer.Option(512, help="Image height, a multiple of 8."),
    width: int = typer.Option(512, help="Image width, a multiple of 8."),
    dtype: str = typer.Option("fp32", help="fp32 | fp16 | bf16"),
    device: str = typer.Option("cpu", help="cpu | cuda[:N]"),
    out: Path = typer.Option(Path("outputs"), help="Output directory."),
    backend: str = typer.Option("torch", help="torch | onnxruntime | tensorrt (same pixels "
                                "for the same seed)."),
    artifacts: Optional[Path] = typer.Option(None, help="Artifact dir from `pahi-rt export` "
                                             "(onnxruntime/tensorrt); default: a content-keyed "
                                             "cache dir, exported on first use."),
):
    """Generate images (torch reference sampler or exported graphs) and write PNGs."""
    check_extras("generate", backend=backend, artifacts=artifacts)
    from .. import io, progress, sampling
    from ..components import load_components
    from ..noise import noise_source
    from ..specs import check_image_size

    if (prompt is None) == (prompts is None):
        raise InputError("give either a PROMPT or --prompts FILE")
    texts = io.read_prompt_lines(prompts) if prompts else [prompt]
    check_image_size(height, width)
    out_dir = io.ensure_writable_dir(out)
    # exported graphs are traced from fp32 weights; fp16 is made from the fp32 graph
    with progress.stage(progress.describe_model(model), lambda: progress.parameter_count(comps)):
        comps = load_components(model, decoder, dtype if backend == "torch" else "fp32", device)
    source, head_name = noise_source(noise, str(head) if head else None, comps, height, width)
    sampling.Schedule.from_spec(comps.spec.scheduler, steps)  # validates --steps early
    render = _renderer(backend, comps, source, noise, steps, height, width, dtype, artifacts)

    with progress.ImageProgress(texts) as bar:  # a line per image (stderr), ETA after warm-up
        for i, text in bar:
            t0 = time.perf_counter()
            pixels = render(text, seed + i)
            seconds = time.perf_counter() - t0
            meta = io.png_metadata(text, seed + i, steps, noise, model, head_name, height, width,
                                   comps.decoder_id)
            path = io.save_png(out_dir / f"{i:05d}.png", np.asarray(pixels[0]), meta)
            typer.echo(bar.line(path, seed + i, seconds), err=prompts is not None)


def _renderer(backend, comps, source, noise, steps, height, width, dtype, artifacts):
    """render(prompt, seed) -> uint8 [1, H, W, 3] with the chosen backend (batch 1)."""
    from .. import sampling

    if backend == "torch":
        if artifacts:
            raise InputError("--artifacts is only used with --backend onnxruntime|tensorrt")
        return lambda text, seed: sampling.generate(comps, [text], [seed], steps=steps,
                                                    height=height, width=width,
                                                    noise_source=source).numpy()
    from ..export.artifacts import check_sources, export_artifacts
    from ..export.build import ExportOptions, cache_dir
    from ..runtime.backend import MODES, RunConfig
    from ..runtime.factory import BACKENDS, make_backend

    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    import torch

    if backend == "tensorrt" and not torch.cuda.is_available():
        raise InputError("--backend tensorrt needs a CUDA GPU (torch sees none); use "
                         "--backend onnxruntime on the CPU")
    mode = MODES.get(f"{noise}-{steps}step")
    if mode is None:
        raise InputError(f"--backend {backend} serves the modes {', '.join(MODES)}; "
                         f"--noise {noise} --steps {steps} is not one of them")
    if dtype not in ("fp32", "fp16"):
        raise InputError(f"--backend {backend} runs fp32 or fp16 graphs, not --dtype {dtype}")
    head = None if noise == "gaussian" else source
    if artifacts is None:
        options = ExportOptions(height=height, width=width, batch=1, precision=dtype,
                                engines=(mode.name,) if backend == "tensorrt" else ())
        artifacts = cache_dir(comps, head, options)
        typer.echo(f"artifacts: no --artifacts given, using the cache {artifacts}", err=True)
        export_artifacts(comps, artifacts, ExportOptions(
            height=height, width=width, batch=1, precision=dtype, graphs=(mode.name,),
            engines=options.engines), head, progress=lambda m: typer.echo(m, err=True))
    check_sources(artifacts, comps, head)
    runner = make_backend(backend, RunConfig(mode, 1, height, width, dtype), comps, source,
                          artifacts)
    shape = comps.spec.latent_shape(height, width)

    def render(text, seed):
        ids = sampling.tokenize(comps.tokenizer, [text], comps.spec.max_tokens).numpy()
        return runner.run(ids, sampling.draw_eps([seed], shape).numpy())
    return render
