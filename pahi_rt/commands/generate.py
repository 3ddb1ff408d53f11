"""`pahi-rt generate`: prompts -> PNG files with generation metadata."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..cli import app, command
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
):
    """Generate images with the torch reference sampler and write PNGs with metadata."""
    from .. import io, sampling
    from ..components import load_components
    from ..noise import noise_source
    from ..specs import check_image_size

    if (prompt is None) == (prompts is None):
        raise InputError("give either a PROMPT or --prompts FILE")
    texts = io.read_prompt_lines(prompts) if prompts else [prompt]
    check_image_size(height, width)
    out_dir = io.ensure_writable_dir(out)
    comps = load_components(model, decoder, dtype, device)
    source, head_name = noise_source(noise, str(head) if head else None, comps, height, width)
    sampling.Schedule.from_spec(comps.spec.scheduler, steps)  # validates --steps early

    with typer.progressbar(list(enumerate(texts)), label="generating", file=None,
                           hidden=prompts is None) as bar:
        for i, text in bar:
            t0 = time.perf_counter()
            pixels = sampling.generate(comps, [text], [seed + i], steps=steps, height=height,
                                       width=width, noise_source=source)
            seconds = time.perf_counter() - t0
            meta = io.png_metadata(text, seed + i, steps, noise, model, head_name, height, width,
                                   comps.decoder_id)
            path = io.save_png(out_dir / f"{i:05d}.png", pixels[0].numpy(), meta)
            typer.echo(f"{path}  seed {seed + i}  {seconds:.2f} s", err=prompts is not None)
