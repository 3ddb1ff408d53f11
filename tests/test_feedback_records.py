"""Feedback JSONL: parsing (ours and other tools'), bad input, duplicates, model/size checks."""
from __future__ import annotations

import json
import warnings

import pytest

from pahi_rt.errors import InputError
from pahi_rt.feedback.records import (Record, Source, common_source, dedupe, read_records,
                                   resolve_target, select_records)


def write(path, *rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_other_tools_minimal_records(tmp_path):
    f = write(tmp_path / "f.jsonl",
              {"prompt": "a cat", "seed": 3, "label": "good", "size": "64x64"}, "",
              {"prompt": "a cat", "seed": 4, "label": False},
              {"prompt": "a cat", "seed": "5", "label": 1},
              {"prompt": "a dog", "seed_win": 1, "seed_lose": 2})
    recs = read_records(f)
    assert [r.line for r in recs] == [1, 3, 4, 5]
    assert [r.label for r in recs] == [True, False, True, None]
    assert recs[3].is_pair and recs[3].seeds == (1, 2)
    assert recs[0].source == Source(size="64x64") and recs[1].source.noise == "gaussian"
    # to_json round trip
    again = write(tmp_path / "g.jsonl", *[r.to_json() for r in recs])
    assert [(r.prompt, r.seeds, r.label, r.source) for r in read_records(again)] == \
        [(r.prompt, r.seeds, r.label, r.source) for r in recs]


@pytest.mark.parametrize("line,message", [
    ("{not json", "line 2: not JSON"),
    ('["a"]', "line 2: not a JSON object"),
    ('{"seed": 1, "label": "good"}', "line 2: needs a non-empty 'prompt'"),
    ('{"prompt": "x", "label": "good"}', r"needs 'seed' \+ 'label'"),
    ('{"prompt": "x", "seed": 1, "label": "meh"}', "'label' must be good/bad"),
    ('{"prompt": "x", "seed": -1, "label": "bad"}', "'seed' must be an integer"),
    ('{"prompt": "x", "seed": true, "label": "bad"}', "'seed' must be an integer"),
    ('{"prompt": "x", "seed_win": 3, "seed_lose": 3}', "are the same image"),
    ('{"prompt": "x", "seed": 1, "label": "bad", "size": "64"}', "size must look like"),
    ('{"prompt": "x", "seed": 1, "label": "bad", "noise": "pahi"}', "needs the 'head'"),
    ('{"prompt": "x", "seed": 1, "label": "bad", "noise": "uniform"}', "'noise' must be one"),
])
def test_bad_lines_name_the_line(tmp_path, line, message):
    f = write(tmp_path / "f.jsonl", {"prompt": "ok", "seed": 0, "label": "good"}, line)
    with pytest.raises(InputError, match=message):
        read_records(f)


def test_empty_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match="no feedback records"):
        read_records(write(tmp_path / "e.jsonl", "", "  "))
    with pytest.raises(InputError, match="no such file"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "b.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8"):
        read_records(tmp_path / "b.jsonl")


def label(seed, good, line, prompt="a cat", **source):
    return Record(prompt, (seed,), good, Source(**source), line=line)


def test_duplicates_and_conflicts_warn():
    recs = [label(1, True, 1), label(2, False, 2), label(1, True, 3), label(2, True, 4),
            Record("a cat", (5, 6), None, line=5), Record("a cat", (6, 5), None, line=6)]
    with pytest.warns(UserWarning) as caught:
        out = dedupe(recs, "f")
    messages = [str(w.message) for w in caught]
    assert any("1 duplicate record(s) ignored (e.g. line 3 repeats line 1)" in m
               for m in messages)
    assert any("2 record(s) contradict" in m for m in messages)
    assert [(r.seeds, r.label) for r in out] == [((1,), True), ((2,), True), ((6, 5), None)]


def test_records_must_share_model_size_and_steps():
    same = [label(1, True, 1, model_key="k1", size="64x64"), label(2, False, 2, size="64x64")]
    assert common_source(same, "f").model_key == "k1"
    with pytest.raises(InputError, match="different model keys.*line 1.*line 2"):
        common_source([label(1, True, 1, model_key="k1"), label(2, False, 2, model_key="k2")],
                      "f")
    with pytest.raises(InputError, match="different sizes"):
        common_source([label(1, True, 1, size="64x64"), label(2, False, 2, size="64x96")], "f")
    with pytest.raises(InputError, match="different step counts"):
        common_source([label(1, True, 1, steps=1), label(2, False, 2, steps=2)], "f")


def test_select_records():
    labels = [label(1, True, 1), label(2, False, 2)]
    pair = Record("a cat", (5, 6), None, line=3)
    with pytest.warns(UserWarning, match="1 pair record"):
        assert select_records(labels + [pair], "kto", "f") == labels
    with pytest.raises(InputError, match="no pair records.*use --objective kto"):
        select_records(labels, "dpo", "f")
    with pytest.raises(InputError, match="all 2 labels are 'good'; KTO needs good and bad"):
        select_records([label(1, True, 1), label(2, True, 2)], "kto", "f")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_records([pair], "dpo", "f") == [pair]


def test_resolve_target():
    from pahi_rt.model_key import model_key

    tiny = Source(model="tiny", decoder="tiny (random TAESD)", model_key=model_key("tiny"),
                  size="64x96")
    assert resolve_target(tiny, None, None, None, None, "f") == \
        ("tiny", "tiny (random TAESD)", 96, 64)
    assert resolve_target(tiny, "tiny", None, 96, 64, "f")[2:] == (96, 64)
    with pytest.raises(InputError, match="records are 64x96 images, not 64x64"):
        resolve_target(tiny, None, None, 64, None, "f")
    with pytest.raises(InputError, match="--model synthetic has key"):
        resolve_target(tiny, "synthetic", None, None, None, "f")
    with pytest.raises(InputError, match="name no model; pass --model"):
        resolve_target(Source(size="64x64"), None, None, None, None, "f")
    with pytest.raises(InputError, match="state no image size"):
        resolve_target(Source(), "tiny", None, None, None, "f")
    assert resolve_target(Source(), "tiny", None, 64, 64, "f") == ("tiny", None, 64, 64)
