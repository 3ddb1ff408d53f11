"""Image files out: where a run's images go and how each format carries the generation metadata.

  --out DIR         images are numbered on: the first new image takes the number after the
                    highest `NNNNN.png|jpg|webp` already in DIR (A1111/ComfyUI behaviour), so a
                    re-run never fails on, nor replaces, earlier images; `--overwrite` keeps the
                    fixed names DIR/{i:05d}.EXT and replaces what is there.
  --out FILE.EXT    one image; .png, .jpg/.jpeg or .webp picks the format; an existing file is
                    replaced only with `--overwrite`. Other image suffixes are refused.

Metadata: PNG keeps every field as text chunks (`io.png_metadata`); JPEG and WebP carry A1111's
`parameters` line in EXIF UserComment (charset prefix "UNICODE\\0", UTF-16 big-endian text, as
A1111 writes it through piexif), which A1111, ComfyUI and sd-parsers read back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import io
from .errors import InputError

FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}  # --format -> file suffix
SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
OTHER_IMAGE_SUFFIXES = (".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".jxl", ".ppm")
NUMBERED = re.compile(r"^(\d{5,})\.(?:png|jpe?g|webp)$", re.IGNORECASE)
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286  # EXIF sub-IFD pointer, UserComment tag
JPEG_QUALITY = 95  # A1111's default


@dataclass(frozen=True)
class Outputs:
    """Where image i of a run goes: `file` (one image), or `directory`/{start + i:05d}.EXT."""

    format: str  # png | jpeg | webp
    overwrite: bool
    file: Path | None = None
    directory: Path | None = None
    start: int = 0  # number of the run's first image in `directory`

    def path(self, i: int) -> Path:
        if self.file is not None:
            return self.file
        return self.directory / f"{self.start + i:05d}{FORMATS[self.format]}"

    @property
    def numbered_on(self) -> bool:
        """Whether a name taken meanwhile (another run) moves this run to the next number."""
        return self.file is None and not self.overwrite


def plan_outputs(out: str | Path, count: int, fmt: str | None = None, overwrite: bool = False
                 ) -> Outputs:
    """Check `--out` (and `--format`) before any work and say where `count` images go."""
    if not str(out).strip():  # Path("") would silently mean the current directory
        raise InputError("--out is empty; give a directory or an image file (.png, .jpg, .webp)")
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in OTHER_IMAGE_SUFFIXES:
        raise InputError(f"--out {out}: pahi-rt writes .png, .jpg/.jpeg or .webp files, not "
                         f"{suffix}")
    if suffix in SUFFIX_FORMATS:
        return _one_file(out, count, fmt, overwrite)
    directory = io.ensure_writable_dir(out)
    outputs = Outputs(fmt or "png", overwrite, directory=directory,
                      start=0 if overwrite else next_free_number(directory))
    taken = [p for p in map(outputs.path, range(count)) if p.exists() or p.is_symlink()]
    if taken and any(p.is_dir() for p in taken):  # --overwrite never replaces a directory
        raise InputError(f"{taken[0]} is a directory; choose another --out")
    return outputs


def _one_file(out: Path, count: int, fmt: str | None, overwrite: bool) -> Outputs:
    own = SUFFIX_FORMATS[out.suffix.lower()]
    if fmt is not None and fmt != own:
        raise InputError(f"--out {out} names a {own} file but --format is {fmt}; drop one")
    if count != 1:
        raise InputError(f"--out {out} names one image file, but {count} prompts were given; "
                         "give a directory")
    io.ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name or another --out")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it, or give a directory "
                         "(new images are numbered on there)")
    return Outputs(own, overwrite, file=out)


def next_free_number(directory: Path) -> int:
    """One past the highest NNNNN.png|jpg|jpeg|webp in `directory` (0 when there is none)."""
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1


def encode(pixels, metadata: dict[str, str], fmt: str) -> bytes:
    """A uint8 HxWx3 array as `fmt` bytes with the metadata the format carries."""
    if fmt == "png":
        return io.png_bytes(pixels, metadata)
    import io as _io

    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + metadata["parameters"].encode(
        "utf_16_be")
    buffer = _io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt.upper(), quality=JPEG_QUALITY,
                                 exif=exif.tobytes())
    return buffer.getvalue()


def write(outputs: Outputs, i: int, pixels, metadata: dict[str, str]) -> Path:
    """Write image i atomically. Numbered on: when another run took the name meanwhile, the
    image takes the next free number instead (never replaced)."""
    data = encode(pixels, metadata, outputs.format)
    path = outputs.path(i)
    while True:
        try:
            return io.atomic_write(path, lambda tmp: tmp.write_bytes(data), outputs.overwrite)
        except io.OutputExistsError:
            if not outputs.numbered_on:
                raise
            path = path.with_name(f"{next_free_number(path.parent):05d}{path.suffix}")
