"""The serve feedback store (SQLite, WAL): records built from stored generation records, several
writer processes at once, `pahi-rt feedback export` and `pahi-rt train --feedback DB`."""
from __future__ import annotations

import json
import multiprocessing
import sqlite3

import pytest
from test_cli_feedback import SHORT, invoke

from pahi_rt.errors import InputError
from pahi_rt.feedback.store import FeedbackStore, read_feedback


def _source():
    from pahi_rt.model_key import model_key

    return {"model": "tiny", "model_key": model_key("tiny"), "size": "64x64", "steps": 1,
            "noise": "gaussian"}


def _write(path, worker: int) -> None:
    store = FeedbackStore(path)
    src = _source()
    for i in range(20):
        image = f"img_{worker}_{i}"
        store.add_images([(image, f"prompt {i}", 100 * worker + i, src)])
        store.label(image, i % 2 == 0)


def test_several_writer_processes(tmp_path):
    path = tmp_path / "fb.db"
    FeedbackStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    procs = [multiprocessing.get_context("fork").Process(target=_write, args=(path, w))
             for w in range(3)]
    [p.start() for p in procs]
    [p.join(120) for p in procs]
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(read_feedback(path)) == 60


def test_store_export_and_train(tmp_path):
    path = tmp_path / "fb.db"
    store = FeedbackStore(path)
    src = _source()
    store.add_images([(f"img_{i}", "a red cat" if i < 2 else "a blue dog", 10 + i, src)
                      for i in range(4)])
    for i, good in enumerate((True, False, True, False)):
        store.label(f"img_{i}", good)
    store.pair("img_0", "img_1")
    with pytest.raises(InputError, match="differ in prompt"):
        store.pair("img_0", "img_2")
    with pytest.raises(KeyError):
        store.label("img_nope", True)
    r = invoke("feedback", "export", path, "--to", tmp_path / "fb.jsonl")
    assert r.exit_code == 0 and "wrote 5 record(s)" in r.output, r.output
    rows = [json.loads(x) for x in (tmp_path / "fb.jsonl").read_text().splitlines()]
    assert rows == [r.to_json() for r in read_feedback(path)]
    assert rows[4]["seed_win"] == 10 and rows[0]["model_key"] == src["model_key"]
    r = invoke("train", "--mode", "hi", "--objective", "kto", "--feedback", path, *SHORT,
               "--feedback-method", "density", "--out", tmp_path / "run")  # 4 labels: density
    assert r.exit_code == 0 or "error: no improvement" in r.output, r.output
    assert "best step" in r.output
