"""From pahi-rt PNGs to feedback records, appended to a JSONL file all-or-nothing.

Everything a record needs is in the PNG's `pahi-rt` text chunk (io.png_metadata): prompt, the
image's own seed, size, steps, noise, model, decoder and head. Here the model's content key
(model_key) and, for hi/pahi images, the head's key are added; the head named in the metadata
must still load, since training recomputes x_T = mu + sigma * eps with it (paths in the metadata
are as generate saw them: run from the same directory).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from .. import io
from ..errors import InputError
from .records import Record, Source, common_source, dedupe, parse_size, read_records


def source_from_png(path: str | Path) -> tuple[str, int, Source]:
    """(prompt, seed, Source) of an image written by `pahi-rt generate`."""
    from ..model_key import model_key

    meta = io.read_png_metadata(path)
    if meta is None:
        raise InputError(f"{path}: no pahi-rt metadata (only PNGs written by `pahi-rt "
                         "generate` or `serve` can be added; other tools can write JSONL "
                         "records)")
    if "refine" in meta:
        raise InputError(f"{path} was made with --refine: its initial noise was optimised, so "
                         "its seed does not give the x_T behind it; label unrefined images")
    try:
        prompt, seed, steps = meta["prompt"], int(meta["seed"]), int(meta["steps"])
        noise, model, size = meta["noise"], meta["model"], meta["size"]
        decoder, head = meta.get("decoder"), meta.get("head", "none")
    except (KeyError, ValueError) as e:
        raise InputError(f"{path}: incomplete pahi-rt metadata ({e})") from None
    parse_size(size, str(path))
    head_dir, key = None, None
    if noise != "gaussian":
        from .checkpoint import head_key

        head_dir = head
        try:
            key = head_key(head_dir)
        except (InputError, OSError) as e:
            raise InputError(f"{path} was made with --noise {noise} --head {head_dir}, which "
                             f"does not load here ({e}); its x_T cannot be recomputed (run "
                             "from the directory generate ran in)") from None
        _same_key(path, f"--head {head_dir}", meta.get("head_key"), key)
    current = model_key(model, decoder)
    _same_key(path, f"--model {model}", meta.get("model_key"), current)
    source = Source(model=model, decoder=decoder, model_key=current,
                    size=size, steps=steps, noise=noise, head=head_dir, head_key=key)
    return prompt, seed, source


def _same_key(path, what: str, recorded: str | None, now: str) -> None:
    """Refuse an image whose model or head changed (retrained in place) since it was made: its
    x_T would be recomputed under other weights. Images written before keys were recorded
    (no key) pass."""
    if recorded and recorded != now:
        raise InputError(f"{path} was made with {what} as it was then (content key {recorded}); "
                         f"it has changed since (now {now}), so the image's x_T cannot be "
                         "recomputed; add feedback before retraining a head in place")


def label_records(paths, good: bool) -> list[Record]:
    """One label record per image."""
    out = []
    for p in paths:
        prompt, seed, source = source_from_png(p)
        out.append(Record(prompt, (seed,), good, source, images=(str(p),)))
    return out


def pair_record(winner, loser) -> Record:
    """A pair record: same prompt, model, size, steps and noise source, different seeds."""
    (pw, sw, src_w), (pl, sl, src_l) = source_from_png(winner), source_from_png(loser)
    if pw != pl:
        raise InputError(f"{winner} and {loser} have different prompts ('{pw[:40]}' vs "
                         f"'{pl[:40]}'); a pair compares two images of one prompt")
    if src_w != src_l:
        diff = [k for k in vars(src_w) if getattr(src_w, k) != getattr(src_l, k)]
        raise InputError(f"{winner} and {loser} were made differently ({', '.join(diff)}); a "
                         "pair needs the same model, size, steps and noise source")
    if sw == sl:
        raise InputError(f"{winner} and {loser} are the same image (seed {sw})")
    return Record(pw, (sw, sl), None, src_w, images=(str(winner), str(loser)))


def append_records(path: str | Path, new: list[Record]) -> list[Record]:
    """Append `new` to the JSONL file `path` (created if missing) as one atomic replace, under
    an exclusive lock: readers and a crash see the old file or the new one, and two commands
    cannot interleave. Records already in the file (same images and verdict) are skipped with a
    warning; records for another model, size or steps than the file's raise InputError and
    nothing is written. Returns the records written."""
    import fcntl

    path = Path(path)
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a")
    except OSError as e:
        raise InputError(f"--to {path}: cannot write there ({e.strerror or e})") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old_text = path.read_text(encoding="utf-8") if path.is_file() and path.stat().st_size \
            else ""
        old = read_records(path) if old_text.strip() else []
        common_source(old + new, str(path))
        seen = {(r.identity(), r.label, r.seeds) for r in old}
        fresh = [r for r in new if (r.identity(), r.label, r.seeds) not in seen]
        if len(fresh) < len(new):
            warnings.warn(f"{path}: {len(new) - len(fresh)} record(s) already in the file, "
                          "not added again", stacklevel=2)
        fresh = dedupe(fresh, "this command")
        if fresh:
            import json

            lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in fresh)
            sep = "" if not old_text or old_text.endswith("\n") else "\n"
            mode = path.stat().st_mode & 0o777 if path.exists() else _default_mode()
            io.atomic_write(path, lambda tmp: _write_synced(tmp, old_text + sep + lines, mode))
    return fresh


def _write_synced(tmp: Path, text: str, mode: int) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)  # keep the file's permissions (a temp file starts private)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
