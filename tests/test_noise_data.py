"""Prompt sources (.txt, .csv/.tsv, .jsonl, HF id) and the stable hash split."""
from __future__ import annotations

import json

import pytest

from helpers import SHARED
from pahi_rt.errors import InputError, MissingDependencyError
from pahi_rt import prompt_sets as data


def test_txt_dedupes_and_strips(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a cat\n\n  a   cat \na dog\na cat\n")
    assert data.load_prompts(f) == ["a cat", "a dog"]


def test_csv_tsv_jsonl(tmp_path):
    (tmp_path / "p.csv").write_text('id,caption\n1,"a, b"\n2,c\n')
    assert data.load_prompts(tmp_path / "p.csv") == ["a, b", "c"]
    (tmp_path / "p.tsv").write_text("x\ttext\n1\tone\n2\ttwo\n")
    assert data.load_prompts(tmp_path / "p.tsv", column="text") == ["one", "two"]
    with pytest.raises(InputError, match="no column 'missing'"):
        data.load_prompts(tmp_path / "p.tsv", column="missing")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"q": s}) for s in "xyx"))
    assert data.load_prompts(tmp_path / "p.jsonl", field="q") == ["x", "y"]
    with pytest.raises(InputError, match="no field 'prompt'"):
        data.load_prompts(tmp_path / "p.jsonl")


def test_parti_prompts_column():
    path = SHARED / "prompts" / "parti_prompts.tsv"
    if not path.is_file():
        pytest.skip("shared PartiPrompts not present")
    prompts = data.load_prompts(path)  # column `Prompt` found by default
    assert len(prompts) > 1500 and prompts[0] == "bond"


def test_missing_file_and_offline_dataset(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no such file"):
        data.load_prompts(tmp_path / "nope.txt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((InputError, MissingDependencyError), match="(cannot be reached|datasets)"):
        data.load_prompts("someone/some-prompts")


def test_split_is_stable_and_disjoint():
    prompts = [f"prompt number {i}" for i in range(2000)]
    a = data.split_prompts(prompts)
    b = data.split_prompts(list(reversed(prompts)) + ["one more"])
    assert set(a.val) <= set(b.val) and set(a.test) <= set(b.test)
    assert not (set(a.train) & set(a.val)) and not (set(a.val) & set(a.test))
    assert len(a.train) + len(a.val) + len(a.test) == 2000
    assert 15 < len(a.val) < 70 and 15 < len(a.test) < 70  # ~2% each


def test_small_sets_still_get_a_val_prompt():
    s = data.split_prompts(["a", "b", "c"])
    assert len(s.val) == 1 and len(s.train) + len(s.test) == 2
    with pytest.raises(InputError, match="at least 2"):
        data.split_prompts(["a"])
