"""`index.jsonl` of an offline run (`generate --ray`): one line per finished image (prompt, seed,
file, sha256), appended as images land and rewritten in order at the end. A re-run skips an
image only when its file still hashes to the recorded sha256 and the PNG says it was made with
the same prompt, seed and settings; files the index does not know are never replaced without
--overwrite."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import io
from ..errors import InputError

INDEX = "index.jsonl"


@dataclass(frozen=True)
class Job:
    """Image i of the run: its prompt, seed, source line and file."""

    i: int
    prompt: str
    seed: int
    line: int
    path: Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _finished(job: Job, entry: dict | None, settings: dict[str, str]) -> bool:
    if not entry or entry.get("prompt") != job.prompt or entry.get("seed") != job.seed:
        return False
    if not job.path.is_file() or sha256(job.path) != entry.get("sha256"):
        return False
    try:
        meta = io.read_png_metadata(job.path) or {}
    except InputError:
        return False
    return all(meta.get(k) == v for k, v in settings.items())


def plan(jobs: list[Job], directory: Path, settings: dict[str, str], overwrite: bool
         ) -> tuple[list[Job], dict[str, dict]]:
    """(jobs still to render, index entries of the finished ones). `settings`: PNG metadata
    fields a finished image must carry (model, steps, noise, size, head)."""
    known = read_index(directory)
    todo, done = [], {}
    for job in jobs:
        entry = known.get(job.path.name)
        if _finished(job, entry, settings):
            done[job.path.name] = entry
            continue
        if (job.path.exists() or job.path.is_symlink()) and (entry is None and not overwrite
                                                             or job.path.is_dir()):
            raise InputError(f"{job.path} exists and is not in {INDEX}; pass --overwrite to "
                             "replace it, or choose another --out")
        todo.append(job)
    return todo, done


class Ledger:
    """Writes images and their index lines; `close` rewrites the index in order."""

    def __init__(self, directory: Path, entries: dict[str, dict]):
        self.directory, self.entries = directory, dict(entries)
        self._append = open(directory / INDEX, "a", encoding="utf-8")

    def add(self, job: Job, png: bytes) -> None:
        io.atomic_write_bytes(job.path, png)
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
