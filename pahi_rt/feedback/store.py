"""The live feedback store of `pahi-rt serve`: one SQLite file in WAL mode, written by every
replica (SQLite's file locks make several writer processes safe; WAL lets readers run beside
them), read by `pahi-rt train --feedback DB` and `pahi-rt feedback export`.

    images(id, prompt, seed, source, created)   every served image: the generation record
    feedback(n, record, created)                a label or pair, as the JSONL record's JSON

A feedback record is built from the stored generation records with the same code as
`pahi-rt feedback add|pair` (records.parse_record), so both write the same fields.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from .records import Record, parse_record, read_records

SQLITE_MAGIC = b"SQLite format 3\x00"
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, prompt TEXT NOT NULL,
    seed TEXT NOT NULL, source TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (n INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL, created REAL NOT NULL);
"""


def is_store(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


class FeedbackStore:
    """A connection per call: safe from any thread or process. Raises InputError when the
    file cannot be opened as a store."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not is_store(self.path):
            raise InputError(f"{self.path}: not a pahi-rt feedback store (SQLite)")
        try:
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
                db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise InputError(f"{self.path}: cannot open the feedback store ({e})") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        return db

    def add_images(self, rows: list[tuple[str, str, int, dict]]) -> None:
        """(id, prompt, seed, source fields) of images just served."""
        now = time.time()
        with closing(self._connect()) as db:
            db.executemany("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?)",
                           [(i, p, str(s), json.dumps(src), now) for i, p, s, src in rows])

    def image(self, image_id: str) -> dict | None:
        """The generation record of a served image: {prompt, seed, **source}, or None."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT prompt, seed, source FROM images WHERE id = ?",
                             (image_id,)).fetchone()
        if row is None:
            return None
        return {"prompt": row[0], "seed": int(row[1]), **json.loads(row[2])}

    def label(self, image_id: str, good: bool) -> Record:
        gen = self._known(image_id, "id")
        obj = {**gen, "label": "good" if good else "bad"}
        return self._add(parse_record(obj, f"image {image_id}"))

    def pair(self, winner: str, loser: str) -> Record:
        win, lose = self._known(winner, "winner"), self._known(loser, "loser")
        seeds = (win.pop("seed"), lose.pop("seed"))
        if win != lose:
            diff = sorted(k for k in set(win) | set(lose) if win.get(k) != lose.get(k))
            raise InputError(f"images {winner} and {loser} differ in {', '.join(diff)}; a pair "
                             "compares two images of one prompt made the same way")
        obj = {**win, "seed_win": seeds[0], "seed_lose": seeds[1]}
        return self._add(parse_record(obj, f"pair {winner} > {loser}"))

    def _known(self, image_id, param: str) -> dict:
        gen = self.image(image_id) if isinstance(image_id, str) else None
        if gen is None:
            raise KeyError(param)
        return gen

    def _add(self, record: Record) -> Record:
        with closing(self._connect()) as db:
            db.execute("INSERT INTO feedback (record, created) VALUES (?, ?)",
                       (json.dumps(record.to_json(), ensure_ascii=False), time.time()))
        return record

    def records(self) -> list[Record]:
        """Every feedback record in the order it was given (line = its row number)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT n, record FROM feedback ORDER BY n").fetchall()
        return [replace(parse_record(json.loads(text), f"{self.path} row {n}"), line=n)
                for n, text in rows]


def read_feedback(path: str | Path) -> list[Record]:
    """The records of a JSONL file (records.read_records) or of a serve feedback store."""
    if not is_store(path):
        return read_records(path)
    records = FeedbackStore(path, create=False).records()
    if not records:
        raise InputError(f"{path}: no feedback records yet (rate images served with --ui or "
                         "POST /v1/images/feedback)")
    return records
