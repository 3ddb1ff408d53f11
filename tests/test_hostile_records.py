"""Hostile input to the feedback records (issue 20): numbers and text from JSONL lines and from
tampered PNG metadata, the kinds of file at `feedback add --to`, and a property-based fuzzer
over the record and metadata readers. Every case ends in a record or a one-line error naming the
file, line or field; never a traceback, a silently changed value or a changed file."""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from pahi_rt import io
from pahi_rt.cli import app
from pahi_rt.errors import InputError
from pahi_rt.feedback.collect import append_records, source_from_png
from pahi_rt.feedback.records import (Record, parse_record, parse_records, read_records,
                                   validate_record)
from pahi_rt.specs import SEED_MAX
from test_cli import assert_one_line_error

TINY = ["--model", "tiny", "--height", "64", "--width", "64"]
GOOD = {"prompt": "a fox", "seed": 7, "label": "good", "size": "64x64", "steps": 1}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAHI_RT_DIGEST_CACHE", str(tmp_path / "digests.json"))


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    """One tiny image with the largest seed generate hands out (2^64 - 1)."""
    root = tmp_path_factory.mktemp("hostile_png")
    r = invoke("generate", "a red fox", *TINY, "--seed", SEED_MAX, "--out", root / "s.png")
    assert r.exit_code == 0, r.output
    return root / "s.png"


# --- numbers and text in a record line: (edit of a good label record, error words or None) --
RECORD_CASES = [
    ({"seed": SEED_MAX}, None),  # the largest seed generate and serve hand out
    ({"seed": str(SEED_MAX)}, None),
    ({"seed": SEED_MAX + 1}, "'seed' must be an integer from 0 to 2^64-1"),
    ({"seed": -1}, "'seed' must be an integer"),
    ({"seed": "²"}, "'seed' must be an integer"),  # str.isdigit is True, int() fails
    ({"seed": "١٢"}, "'seed' must be an integer"),  # Arabic-Indic digits: int() takes them
    ({"seed": 1.5}, "'seed' must be an integer"),
    ({"seed": True}, "'seed' must be an integer"),
    ({"seed": float("nan")}, "'seed' must be an integer"),
    ({"seed": " 7"}, "'seed' must be an integer"),
    ({"size": "²x64"}, "size must look like 512x512"),
    ({"size": "0x0"}, "size 0x0"),
    ({"size": "99999999x99999999"}, "from 64 to 16384"),
    ({"size": "64x60"}, "multiple of 8"),
    ({"size": "64x64x8"}, "size must look like"),
    ({"size": 64}, "'size' must be a string"),
    ({"steps": 0}, "'steps' must be an integer from 1 to 1000"),
    ({"steps": -1}, "'steps' must be an integer from 1 to 1000"),
    ({"steps": 1001}, "'steps' must be an integer from 1 to 1000"),
    ({"steps": "²"}, "'steps' must be an integer"),
    ({"steps": 99}, None),
    ({"prompt": ""}, "needs a non-empty 'prompt'"),
    ({"prompt": "   "}, "needs a non-empty 'prompt'"),
    ({"prompt": ["a", "b"]}, "'prompt' must be a string"),
    ({"prompt": "a fox \ud83d"}, "lone UTF-16 surrogate (U+D83D)"),
    ({"model": "m\udcff"}, "'model' holds a lone UTF-16 surrogate"),
    ({"noise": "bogus"}, "'noise' must be one of gaussian, hi, pahi, got 'bogus'"),
    ({"noise": "pahi"}, "needs the 'head'"),
    ({"label": "maybe"}, "'label' must be good/bad"),
    ({"label": float("nan")}, "'label' must be good/bad"),
]


@pytest.mark.parametrize("edit,error", RECORD_CASES, ids=[repr(c[0])[:40] for c in RECORD_CASES])
def test_record_fields(edit, error, tmp_path):
    line = json.dumps({**GOOD, **edit}, ensure_ascii=True)
    if error is None:
        (record,) = parse_records(line, "f.jsonl")
        assert validate_record(record) is record
        return
    with pytest.raises(InputError, match="f.jsonl line 1") as e:
        parse_records(line, "f.jsonl")
    assert error in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text,error", [
    ("[" * 100_000 + "]" * 100_000, "line 1: JSON nested too deeply"),
    ('{"prompt": "a", "seed": 1' + "0" * 5000 + ', "label": "good"}', "line 1: not JSON"),
    ("\ufeff" + json.dumps(GOOD), None),  # a BOM: accepted, as in prompt files
    (json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "seed": "x"}), "line 3"),
])
def test_record_files(text, error, tmp_path):
    f = tmp_path / "f.jsonl"
    f.write_bytes(text.encode("utf-8"))
    if error is None:
        assert read_records(f)[0].seeds == (7,)
    else:
        with pytest.raises(InputError, match=error):
            read_records(f)


def test_undecodable_byte_names_its_line(tmp_path):
    f = tmp_path / "f.jsonl"
    f.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "a \xff"}\n')
    with pytest.raises(InputError, match=r"line 2: not UTF-8 text \(byte 0xff\)"):
        read_records(f)


def test_largest_seed_round_trips_through_add_and_training_reads(png, tmp_path):
    """Case 1: a seed generate hands out no longer poisons the feedback file."""
    f = tmp_path / "f.jsonl"
    for verdict in ("--good", "--bad"):
        r = invoke("feedback", "add", png, verdict, "--to", f)
        assert r.exit_code == 0, r.output
    assert [r.seeds for r in read_records(f)] == [(SEED_MAX,), (SEED_MAX,)]


# --- tampered PNG metadata: (edit of the pahi-rt fields, error words or None) ---------------
PNG_CASES = [
    ({"steps": "0"}, "'steps' must be an integer from 1 to 1000"),
    ({"steps": "-1"}, "'steps'"),
    ({"steps": "99"}, None),
    ({"steps": "1001"}, "'steps'"),
    ({"size": "0x0"}, "size 0x0"),
    ({"size": "99999999x99999999"}, "from 64 to 16384"),
    ({"size": "²x64"}, "size must look like"),
    ({"prompt": ""}, "non-empty 'prompt'"),
    ({"prompt": ["a", "list"]}, "'prompt' must be a string"),
    ({"prompt": "a \ud800"}, "lone UTF-16 surrogate"),
    ({"seed": "18446744073709551616"}, "'seed' must be an integer from 0 to 2^64-1"),
    ({"seed": "²"}, "'seed'"),
    ({"noise": "bogus"}, "'noise' must be one of gaussian, hi, pahi, got 'bogus'"),
    ({"noise": "pahi", "head": "none"}, "needs the 'head'"),
    ({"model": 5}, "'model' must be a string"),
    ({"seed": None}, "incomplete (no seed)"),
]


def tampered(png, tmp_path, fields) -> str:
    from PIL import Image

    with Image.open(png) as im:
        pixels = __import__("numpy").asarray(im.convert("RGB"))
        meta = json.loads(im.text["pahi-rt"])
    meta = {k: v for k, v in {**meta, **fields}.items() if v is not None}
    out = tmp_path / "t.png"
    out.write_bytes(io.png_bytes(pixels, {"pahi-rt": json.dumps(meta)}))
    return out


@pytest.mark.parametrize("edit,error", PNG_CASES, ids=[repr(c[0])[:40] for c in PNG_CASES])
def test_tampered_png_metadata(png, tmp_path, edit, error):
    f = tmp_path / "f.jsonl"
    r = invoke("feedback", "add", tampered(png, tmp_path, edit), "--good", "--to", f)
    if error is None:
        assert r.exit_code == 0, r.output
        assert read_records(f)[0].source.steps == int(edit["steps"])  # as written, not changed
    else:
        assert_one_line_error(r, error)
        assert not f.exists()


@pytest.mark.parametrize("chunk,error", [("[1, 2]", "not a JSON object"),
                                         ("{", "not a JSON object")])
def test_damaged_metadata_chunk(png, tmp_path, chunk, error):
    import numpy as np

    p = tmp_path / "d.png"
    p.write_bytes(io.png_bytes(np.zeros((64, 64, 3), np.uint8), {"pahi-rt": chunk}))
    with pytest.raises(InputError, match=error):
        source_from_png(p)


# --- what can be at the --to path ------------------------------------------------------------
def _fifo(p):
    os.mkfifo(p)


def _dir(p):
    p.mkdir()


def _dangling(p):
    p.symlink_to(p.parent / "nowhere.jsonl")


def _hardlinked(p):
    p.write_text("")
    os.link(p, p.parent / "other-name.jsonl")


def _non_utf8(p):
    p.write_bytes(b"\xff\xfe{}\n")


def _under_a_file(p):
    pass  # the test passes a path below a regular file


@pytest.mark.parametrize("make,error", [
    (_fifo, "not a regular file"), (_dir, "is a directory"), (_dangling, "does not exist"),
    (_hardlinked, "hard links"), (_non_utf8, "line 1: not UTF-8 text"),
    (_under_a_file, "cannot write there")])
def test_feedback_to_refuses_what_is_not_a_regular_file(png, tmp_path, make, error):
    to = tmp_path / "fb.jsonl"
    if make is _under_a_file:
        (tmp_path / "plain").write_text("x")
        to = tmp_path / "plain" / "fb.jsonl"
    make(to)
    before = sorted((p.name, p.is_file() and p.read_bytes()) for p in tmp_path.iterdir()
                    if not p.is_fifo())
    assert_one_line_error(invoke("feedback", "add", png, "--good", "--to", to), error)
    after = sorted((p.name, p.is_file() and p.read_bytes()) for p in tmp_path.iterdir()
                   if not p.is_fifo() and not p.name.endswith(".lock"))
    assert after == before


def test_feedback_to_a_link_appends_to_its_target(png, tmp_path):
    target, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    target.write_text("")
    link.symlink_to(target)
    assert invoke("feedback", "add", png, "--good", "--to", link).exit_code == 0
    assert link.is_symlink() and len(read_records(target)) == 1


# --- property-based: the readers answer with a record or one InputError, nothing else --------
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=True), st.text(max_size=12))
FIELD_VALUES = st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3),
                         st.sampled_from(["64x64", "²x64", "0x0", "1", "good", "pahi", "bogus",
                                          "\ud83d", "18446744073709551615", " 7"]))
KEYS = st.sampled_from(["prompt", "seed", "label", "seed_win", "seed_lose", "size", "steps",
                        "noise", "head", "model", "decoder", "model_key", "head_key"])
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.dictionaries(KEYS, FIELD_VALUES, max_size=8))
def test_fuzz_parse_record(obj):
    try:
        record = parse_record(obj, "fuzz")
    except InputError as e:
        assert str(e).startswith("fuzz") and "\n" not in str(e)
        return
    assert isinstance(record, Record)
    line = json.dumps(record.to_json(), ensure_ascii=False).encode("utf-8")  # writable as UTF-8
    assert parse_record(json.loads(line), "again") == record  # and reads back the same


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_record_lines(text):
    try:
        parse_records(text, "fuzz")
    except InputError as e:
        assert "\n" not in str(e)


@FUZZ
@given(st.dictionaries(KEYS, FIELD_VALUES, max_size=8))
def test_fuzz_png_metadata(tmp_path, obj):
    import numpy as np

    p = tmp_path / "f.png"
    fields = {"model": "tiny", **{k: v for k, v in obj.items() if k != "model"}}
    p.write_bytes(io.png_bytes(np.zeros((8, 8, 3), np.uint8),
                               {"pahi-rt": json.dumps(fields)}))
    try:
        prompt, seed, source = source_from_png(p)
    except InputError as e:
        assert "\n" not in str(e)
        return
    append_records(tmp_path / "fb.jsonl", [Record(prompt, (seed,), True, source)])
    (tmp_path / "fb.jsonl").unlink()
