"""Files in and out: prompt lists, atomic writes, PNGs with generation metadata."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import InputError


def read_prompt_lines(path: str | Path) -> list[str]:
    """One prompt per line; blank lines skipped."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--prompts {path}: no such file")
    try:
        prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise InputError(f"--prompts {path}: not UTF-8 text") from None
    prompts = [x for x in prompts if x]
    if not prompts:
        raise InputError(f"--prompts {path}: no prompts in the file")
    return prompts


def ensure_writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and check we can write there, before any work is done."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"--out {path}: cannot write there ({e.strerror or e})") from None
    return p


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temp file beside `path`, then rename it into place: a reader never
    sees a half-written file, and a failure leaves the old file (if any) untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def png_metadata(prompt: str, seed: int, steps: int, noise: str, model: str, head: str | None,
                 height: int, width: int, decoder: str) -> dict[str, str]:
    """PNG text chunks: one per field, `pahi-rt` (JSON), and A1111's `parameters` line."""
    fields = {"prompt": prompt, "seed": str(seed), "steps": str(steps), "noise": noise,
              "model": model, "decoder": decoder, "head": head or "none",
              "size": f"{width}x{height}"}
    parameters = (f"{prompt}\nSteps: {steps}, Sampler: Euler, CFG scale: 0, Seed: {seed}, "
                  f"Size: {width}x{height}, Model: {model}, VAE: {decoder}, Noise: {noise}, "
                  f"Head: {head or 'none'}")
    return {**fields, "parameters": parameters, "pahi-rt": json.dumps(fields, sort_keys=True)}


def read_png_metadata(path: str | Path) -> dict[str, str] | None:
    """The `pahi-rt` fields `png_metadata` wrote into a PNG (all strings), or None when the
    image has none. Raises InputError when the file is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not an image ({e})") from None
    try:
        fields = json.loads(text["pahi-rt"])
    except (KeyError, ValueError):
        return None
    return fields if isinstance(fields, dict) else None


def save_png(path: str | Path, pixels, metadata: dict[str, str]) -> Path:
    """Write a uint8 HxWx3 array as PNG with text chunks, atomically."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in metadata.items():
        info.add_itxt(k, v) if not v.isascii() else info.add_text(k, v)
    image = Image.fromarray(pixels)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
