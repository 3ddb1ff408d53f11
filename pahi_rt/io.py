"""Files in and out: prompt lists, atomic writes (one mechanism: a temp file or folder beside the
target, fsynced, then renamed into place), sha256 digests, PNGs with generation metadata."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import unicodedata
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .errors import InputError


def read_json_object(path: str | Path, what: str, error=InputError) -> dict:
    """A JSON file that must hold an object; `error` (one line naming `what`) otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise error(f"{what}: cannot read {path} ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{what}: {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{what}: {path} holds a JSON {type(data).__name__}, not an object")
    return data


def json_lines(text: str, where: str):
    """(line number, value) of each non-blank line of a JSON-lines text; lines end at "\n" only
    (str.splitlines would also split at \v, \f, U+2028, ...). A line that is not JSON:
    InputError naming `where` and the line."""
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise InputError(f"{where}: line {n}: not JSON ({line[:40]!r})") from None
        except RecursionError:  # e.g. 100000 nested brackets
            raise InputError(f"{where}: line {n}: JSON nested too deeply") from None
        yield n, value


def ensure_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Create `path` if needed and check we can write there, before any work is done."""
    if not str(path).strip():
        raise InputError(f"{option} is empty; give a directory")
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
    return p


@contextmanager
def run_lock(directory: str | Path, who: str):
    """Hold an exclusive lock on DIR/.lock for a run that writes into DIR (fcntl: released when
    the process ends, even by kill -9). A second run into DIR is refused at once (InputError
    naming `who`) rather than racing the first for its files."""
    import fcntl

    path = Path(directory) / ".lock"
    try:
        f = open(path, "a")
    except OSError as e:
        raise InputError(f"{directory}: cannot write there ({e.strerror or e})") from None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{directory}: another {who} is writing there (it holds {path.name});"
                             " wait for it, or choose another --out") from None
        yield


def check_output_file(path: str | Path | None, option: str) -> None:
    """Refuse, before any work, an output file that could not be written: a directory, or a
    folder we cannot create or write into."""
    if path is None:
        return
    if not str(path).strip():
        raise InputError(f"{option} is empty; give a file name")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory; give a file name")
    ensure_writable_dir(path.parent if str(path.parent) else Path("."), option)


class OutputExistsError(InputError):
    """`atomic_write(overwrite=False)` found its name taken (another run wrote it meanwhile)."""


def current_umask() -> int:
    """The process umask (read by setting it and back): the mode plain open()/mkdir() give."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _settle(tmp: str | Path) -> None:
    """Give a finished temp file the mode a plain open() would (0666 & ~umask; mkstemp makes
    0600) and fsync it, so the rename that publishes it publishes its bytes."""
    os.chmod(tmp, 0o666 & ~current_umask())
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None], overwrite: bool = True
                 ) -> Path:
    """Call `write(tmp)` on a temp file beside `path`, fsync it, then publish it: a reader never
    sees a half-written file, and a failure leaves the old file (if any) untouched. The file
    gets the mode a plain open() would give (0666 & ~umask). With `overwrite=False` the name
    is claimed atomically (link, which fails if it exists): concurrent writers never clobber."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        _settle(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(f"{path} appeared while writing (another run?); not "
                                 "replaced (pass --overwrite to replace)") from None
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_files(directory: str | Path, names: tuple[str, ...],
                       write: Callable[[Path], None], prefix: str | None = None) -> list[str]:
    """`atomic_write` for files that belong together (a graph and its weights): `write(tmp)`
    fills a temp folder beside them, then each of `names` it wrote is published in order (put
    the file that refers to the others last, so it never points at nothing). The temp folder
    (`prefix` + 8 random characters; default prefix `.{names[-1]}.`) is removed even on
    failure. Returns the names published."""
    directory = Path(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=prefix or f".{names[-1]}."))
    try:
        write(tmp)
        published = [n for n in names if (tmp / n).is_file()]
        for name in published:
            _settle(tmp / name)
        for name in published:
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return published


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj) -> Path:
    """`obj` as indented JSON with sorted keys, written atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


_DIGESTS: dict[tuple, str] = {}  # (device, inode, size, mtime_ns) -> sha256, this process only


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 (hex) of a file, read once per process and file version: files written here are
    replaced by rename (a new inode) and any edit changes size or mtime, so the digest follows
    the content. A full-size fp32 UNet is 3.5 GB; re-hashing it at every check cost seconds."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def sha256_json(obj) -> str:
    """sha256 (hex) of a JSON-able object with sorted keys (stable across runs and processes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def png_metadata(prompt: str, seed: int, steps: int, noise: str, model: str, head: str | None,
                 height: int, width: int, decoder: str, extra: dict | None = None,
                 keys: dict | None = None, sampler: str = "Euler") -> dict[str, str]:
    """PNG text chunks, the prompt once in each: `pahi-rt` (JSON of every field; what
    `read_png_metadata` reads) and A1111's `parameters` line (what PNG-info readers read).
    `seed` is the seed that reproduces the pixels (for best-of, the winning candidate's);
    `extra` adds fields (values become strings); `keys` the content keys `model_key` (A1111's
    `Model hash`, its first 10 hex digits) and `head_key`; `sampler` A1111's name of the
    scheduler (`specs.SAMPLERS`: Euler, Euler a). A refined image (`extra` has
    `refine`) says in both places that its seed does not reproduce it."""
    keys = {k: v for k, v in (keys or {}).items() if v}
    fields = {"prompt": prompt, "seed": str(seed), "steps": str(steps), "noise": noise,
              "model": model, "decoder": decoder, "head": head or "none", "sampler": sampler,
              "size": f"{width}x{height}", **keys, **{k: str(v) for k, v in (extra or {}).items()}}
    settings = {"Steps": steps, "Sampler": sampler, "CFG scale": 0, "Seed": seed,
                "Size": f"{width}x{height}", "Model hash": keys.get("model_key", "")[:10],
                "Model": model, "VAE": decoder, "Noise": noise, "Head": head or "none",
                "Head hash": keys.get("head_key", "")[:10]}
    if extra and "refine" in extra:
        fields["reproducible"] = "no: refined noise, the seed gives the unrefined image"
        settings["Refined"] = f"{extra['refine']} steps (not reproducible from Seed)"
    line = ", ".join(f"{k}: {a1111_quote(str(v))}" for k, v in settings.items() if v != "")
    return {"parameters": f"{prompt}\n{line}",
            "pahi-rt": json.dumps(fields, sort_keys=True)}


def a1111_quote(value: str) -> str:
    """A settings value as A1111 writes it: JSON-quoted when it holds , : or a newline."""
    return value if not any(c in value for c in ",:\n") else json.dumps(value, ensure_ascii=False)


def read_png_metadata(path: str | Path) -> dict[str, str] | None:
    """The `pahi-rt` fields `png_metadata` wrote into a PNG (strings when unedited: check them,
    e.g. with noise.records.parse_record), or None when the image has none. Raises InputError
    when the file is missing or not an image, or the chunk is not a JSON object."""
    from PIL import Image, UnidentifiedImageError

    if Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():
        raise InputError(f"{path}: not a regular file (a FIFO or device), not an image")
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError
            ) as e:  # PIL: SyntaxError for broken chunks, ValueError for oversized text
        raise InputError(f"{path}: not an image PIL can read ({str(e)[:80]})") from None
    if "pahi-rt" not in text:
        return None
    try:
        fields = json.loads(text["pahi-rt"])
    except (ValueError, TypeError, RecursionError):
        fields = None
    if not isinstance(fields, dict):
        raise InputError(f"{path}: its pahi-rt metadata is not a JSON object (damaged or "
                         "edited)")
    return fields


def png_text(value: str) -> str:
    """A value PNG text chunks may hold: control characters other than tab and newline (NUL is
    forbidden by the PNG spec) and lone surrogates (not encodable as UTF-8: a path from
    undecodable bytes) are written as \\xNN / \\uNNNN escapes. The `pahi-rt` JSON chunk keeps
    the exact text (JSON escapes them itself)."""
    return "".join(c if c in "\t\n" or unicodedata.category(c) not in ("Cc", "Cs") else
                   (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}") for c in value)


def png_bytes(pixels, metadata: dict[str, str]) -> bytes:
    """A uint8 HxWx3 array encoded as PNG with `metadata` as text chunks (what `save_png`
    writes; the server returns these bytes)."""
    import io as _io

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in metadata.items():
        v = png_text(v)
        info.add_itxt(k, v) if not v.isascii() else info.add_text(k, v)
    buffer = _io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(path: str | Path, pixels, metadata: dict[str, str], overwrite: bool = False
             ) -> Path:
    """Write a uint8 HxWx3 array as PNG with text chunks, atomically; an existing file is
    replaced only with `overwrite`."""
    data = png_bytes(pixels, metadata)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite)
