"""From pahi-rt PNGs to feedback records, appended to a JSONL file all-or-nothing.

Everything a record needs is in the PNG's `pahi-rt` text chunk (io.png_metadata): prompt, the
image's own seed, size, steps, noise, model, decoder and head. Here the model's content key
(model_key) and, for hi/pahi images, the head's key are added; the head named in the metadata
must still load, since training recomputes x_T = mu + sigma * eps with it (paths in the metadata
are as generate saw them: run from the same directory).
"""
from __future__ import annotations

import os
import stat
import warnings
from dataclasses import replace
from pathlib import Path

from .. import io
from ..errors import InputError
from .records import (Record, Source, common_source, dedupe, parse_record, parse_records,
                      read_feedback_text, validate_record)


def source_from_png(path: str | Path) -> tuple[str, int, Source]:
    """(prompt, seed, Source) of an image written by `pahi-rt generate`. The metadata is checked
    field by field as a record line is (records.parse_record): an edited PNG is refused here,
    never written into a feedback file that later reads would reject."""
    from ..model_key import model_key

    meta = io.read_png_metadata(path)
    if meta is None:
        raise InputError(f"{path}: no pahi-rt metadata (only images written by `pahi-rt "
                         "generate` or `serve` can be added; other tools can write JSONL "
                         "records)")
    if "refine" in meta:
        raise InputError(f"{path} was made with --refine: its initial noise was optimised, so "
                         "its seed does not give the x_T behind it; label unrefined images")
    where = f"{path}: pahi-rt metadata"
    missing = [k for k in ("prompt", "seed", "steps", "noise", "model", "size") if k not in meta]
    if missing:
        raise InputError(f"{where} is incomplete (no {', '.join(missing)})")
    head = meta.get("head", "none")
    fields = {k: meta.get(k) for k in ("prompt", "seed", "steps", "noise", "model", "decoder",
                                       "size")}
    noise = meta["noise"]
    parsed = parse_record({**fields, "label": "good",
                           "head": None if noise == "gaussian" or head == "none" else head},
                          where)
    source, key = parsed.source, None
    if noise != "gaussian":
        from ..heads.checkpoint import head_key

        try:
            key = head_key(source.head)
        except (InputError, OSError) as e:
            raise InputError(f"{path} was made with --noise {noise} --head {source.head}, "
                             f"which does not load here ({e}); its x_T cannot be recomputed "
                             "(run from the directory generate ran in)") from None
        _same_key(path, f"--head {source.head}", meta.get("head_key"), key)
    current = model_key(source.model, source.decoder)
    _same_key(path, f"--model {source.model}", meta.get("model_key"), current)
    source = replace(source, model_key=current, head_key=key)
    return parsed.prompt, parsed.seeds[0], source


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
    cannot interleave. Every record is validated first (records.validate_record), so the file
    never holds one that later reads refuse. Records already in the file (same images and
    verdict) are skipped with a warning; records for another model, size or steps than the
    file's raise InputError and nothing is written. `path` must be a regular file or a new name
    (see `check_feedback_path`). Returns the records written."""
    import fcntl

    path = check_feedback_path(path)
    for r in new:
        validate_record(r, _at_new(r))
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a")
    except OSError as e:
        raise InputError(f"--to {path}: cannot write there ({e.strerror or e})") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = check_feedback_path(path)  # again, under the lock
        old_text = read_feedback_text(path, "--to") if path.exists() else ""
        old = parse_records(old_text, str(path))
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


def _at_new(record: Record) -> str:
    return record.images[0] if record.images else f"record for {record.prompt[:40]!r}"


def check_feedback_path(path: str | Path, option: str = "--to") -> Path:
    """The file to append to: a regular file (a symlink to one: its target, so the link stays)
    or a new name in a directory. Anything else is refused in one line (InputError): a
    directory, a device (/dev/null), a FIFO or socket, a dangling link, a file with other hard
    links or without write permission - an atomic replace would swap such a thing for a new
    regular file."""
    path = Path(path)
    if not str(path).strip():
        raise InputError(f"{option} is empty; give a file name")
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            raise InputError(f"{option} {path}: a link to {target}, which does not exist")
        path = target
    if path.exists():
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if path.is_dir() else
                    "not a regular file (a device, FIFO or socket)")
            raise InputError(f"{option} {path}: is {kind}; give a feedback file (JSON lines)")
        if st.st_nlink > 1:
            raise InputError(f"{option} {path}: has {st.st_nlink} hard links; appending replaces "
                             "the file, which would split them: give a file with one name")
        if not os.access(path, os.W_OK):
            raise InputError(f"{option} {path}: not writable (permission denied)")
    elif path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{option} {path}: cannot write there ({path.parent} is not a "
                         "directory)")
    return path


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
