"""`index.jsonl` of an offline run (`generate --ray`): one line per finished image (prompt, seed,
file, sha256), appended as images land and rewritten in order at the end. A re-run skips an
image only when its file still hashes to the recorded sha256 and the PNG says it was made with
the same prompt, seed and settings; files that hold another image (unknown to the index, or
another prompt, seed or settings) are never replaced without --overwrite. A run holds OUT/.lock:
a second run into the same OUT is refused."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import io
from ..errors import InputError

INDEX, LOCK = "index.jsonl", ".lock"


@dataclass(frozen=True)
class Job:
    """Image i of the run: its prompt, seed, source line and file."""

    i: int
    prompt: str
    seed: int
    line: int
    path: Path


def read_index(directory: Path) -> dict[str, dict]:
    """file name -> its last entry; unreadable lines (a crash mid-append) are skipped."""
    entries: dict[str, dict] = {}
    try:
        lines = (directory / INDEX).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return entries
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{directory / INDEX}: cannot read it ({e})") from None
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            entries[entry["file"]] = entry
    return entries


def _state(job: Job, entry: dict | None, settings: dict[str, str]) -> str:
    """"done" (this job's image, verified), "new" (no file), "damaged" (the index lists this
    job's image there but the file no longer hashes to it) or "other" (another image: another
    prompt, seed or settings, or a file the index does not know)."""
    if not (job.path.exists() or job.path.is_symlink()):
        return "new"
    if job.path.is_dir() or not entry:
        return "other"
    same_job = entry.get("prompt") == job.prompt and entry.get("seed") == job.seed
    if not same_job:
        return "other"
    if not job.path.is_file() or io.sha256_file(job.path) != entry.get("sha256"):
        return "damaged"
    try:
        meta = io.read_png_metadata(job.path) or {}
    except InputError:
        return "damaged"
    return "done" if all(meta.get(k) == v for k, v in settings.items()) else "other"


def plan(jobs: list[Job], directory: Path, settings: dict[str, str], overwrite: bool
         ) -> tuple[list[Job], dict[str, dict]]:
    """(jobs still to render, every index entry: kept whether or not this run touches it).
    `settings`: PNG metadata fields a finished image must carry (model, steps, noise, size,
    head). A file that holds another image than this run's (other prompt, seed or settings, or
    unknown to the index) is refused before any work unless `overwrite`: a re-run with other
    options never silently replaces earlier images. Damaged images of this run are rendered
    again."""
    known = read_index(directory)
    todo = []
    for job in jobs:
        state = _state(job, known.get(job.path.name), settings)
        if state == "done":
            continue
        if state == "other" and (not overwrite or job.path.is_dir()):
            entry = known.get(job.path.name)
            what = ("is not in " + INDEX if not entry else
                    f"holds another image (seed {entry.get('seed')}, prompt "
                    f"{str(entry.get('prompt'))[:30]!r}, or other settings)")
            raise InputError(f"{job.path} {what}; pass --overwrite to replace it, or choose "
                             "another --out")
        todo.append(job)
    return todo, known


def run_lock(directory: Path):
    """Hold DIR/.lock for a whole `generate --ray` run (io.run_lock): a second run into DIR is
    refused at once rather than racing the first for file names and the index."""
    return io.run_lock(directory, "`generate --ray` run")


class Ledger:
    """Writes images and their index lines; `close` rewrites the index in order, with every
    entry it started with (images this run did not touch keep theirs)."""

    def __init__(self, directory: Path, entries: dict[str, dict]):
        self.directory, self.entries = directory, dict(entries)
        self._append = open(directory / INDEX, "a", encoding="utf-8")

    def add(self, job: Job, png: bytes, replace: bool = True) -> None:
        """Write the image and its index line. With `replace` False the name is claimed
        atomically: a file that appeared since the plan (another writer) is never replaced."""
        io.atomic_write(job.path, lambda tmp: tmp.write_bytes(png), overwrite=replace)
        entry = {"prompt": job.prompt, "seed": job.seed, "file": job.path.name,
                 "sha256": hashlib.sha256(png).hexdigest(), "line": job.line}
        self.entries[job.path.name] = entry
        self._append.write(json.dumps(entry) + "\n")
        self._append.flush()
        os.fsync(self._append.fileno())

    def close(self) -> None:
        self._append.close()
        text = "".join(json.dumps(self.entries[k]) + "\n" for k in sorted(self.entries))
        io.atomic_write_text(self.directory / INDEX, text)
