"""Hostile input to the newer verbs (issue 20): numbers from options and the environment, damaged
`--resume` state, scorers that misbehave, undecodable prompt text, and feedback training on one
repeated prompt. Every case ends in a finished run or a one-line error naming the option, file,
variable or scorer, before any work where the value is an input; never a traceback."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from pahi_rt.cli import app
from pahi_rt.errors import InputError
from test_cli import assert_one_line_error

TINY = ["--model", "tiny", "--height", "64", "--width", "64"]
SCORER = "synthetic_scorers:colour_by_word"


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def records(path, prompts=("a red fox", "a cat"), n=8):
    with open(path, "w") as f:
        for s in range(1, n + 1):
            f.write(json.dumps({"prompt": prompts[(s - 1) * len(prompts) // n], "seed": s,
                                "label": "good" if s % 2 else "bad", "model": "tiny",
                                "size": "64x64", "steps": 1}) + "\n")
    return path


# --- numbers from options: every float option finite and in range, before any work ---------
@pytest.mark.parametrize("args,error", [
    (["--beta", "nan"], "--beta must be a finite number in (0, 10000], got nan"),
    (["--beta", "inf"], "--beta must be a finite number"),
    (["--beta", "0"], "--beta must be a finite number"),
    (["--good-weight", "nan"], "--good-weight must be a finite number"),
    (["--bad-weight", "-1"], "--bad-weight must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number in (0, 10], got nan"),
    (["--lr", "1e308"], "--lr must be a finite number"),
    (["--lr", "-inf"], "--lr must be a finite number"),
    (["--seed", "-1"], "--seed must be in 0..18446744073709551615, got -1"),
    (["--seed", str(2**64)], "--seed must be in 0..18446744073709551615"),
    (["--hidden", "0"], "--hidden must be at least 1"),  # was silently 144
    (["--hidden", str(10**12)], "--hidden must be in 0..65536"),
    (["--pretrain-steps", "-1"], "--pretrain-steps must be in"),
])
def test_train_number_options(tmp_path, args, error):
    r = invoke("train", "--mode", "hi", "--objective", "kto", "--feedback",
               records(tmp_path / "f.jsonl"), "--out", tmp_path / "run", *args)
    assert_one_line_error(r, error)
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("args,error", [
    (["--refine-lr", "nan"], "--refine-lr must be a finite number"),
    (["--refine-reg", "inf"], "--refine-reg must be a finite number"),
    (["--refine-reg", "-1"], "--refine-reg must be a finite number"),
    (["--gpus-per-replica", "nan"], "--gpus-per-replica must be a finite number"),
    (["--seed", str(2**64)], "outside 0..2**64-1"),
    (["--steps", "1001"], "--steps must be an integer from 1 to 1000"),
    (["--height", "99999999"], "--height must be a multiple of 8 from 64 to 16384"),
])
def test_generate_number_options(tmp_path, args, error):
    assert_one_line_error(invoke("generate", "x", *TINY, *args, "--out", tmp_path / "o"), error)
    assert not list(tmp_path.glob("o/*.png"))


def test_export_batch_beyond_any_use(tmp_path):
    r = invoke("export", *TINY, "--batch", 10**9, "--out", tmp_path / "a")
    assert_one_line_error(r, "--batch and --max-batch must be at most 256")


@pytest.mark.parametrize("args,error", [
    (["--batch-wait-ms", "nan"], "--batch-wait-ms must be a finite number"),
    (["--cpus-per-replica", "inf"], "--cpus-per-replica must be a finite number"),
    (["--gpus-per-replica", "-1"], "--gpus-per-replica must be a finite number"),
])
def test_serve_float_options(args, error):
    assert_one_line_error(invoke("serve", *TINY, *args), error)


# --- numbers from the environment ------------------------------------------------------------
@pytest.mark.parametrize("value", ["-5G", "nan", "inf", "abc", "0", "1e400", "G", "2E"])
def test_memory_variable_refused_by_name(tmp_path, value):
    r = invoke("generate", "x", *TINY, "--out", tmp_path / "o",
               env={"PAHI_RT_MEMORY_AVAILABLE": value})
    assert_one_line_error(r, f"PAHI_RT_MEMORY_AVAILABLE={value!r}: give a positive number")


@pytest.mark.parametrize("value,expected", [("12G", 12 * 2**30), ("1.5GiB", 3 * 2**29),
                                            ("4096", 4096), ("512m", 512 * 2**20)])
def test_memory_variable_accepted(monkeypatch, value, expected):
    from pahi_rt import memory

    monkeypatch.setenv("PAHI_RT_MEMORY_AVAILABLE", value)
    assert memory.available_bytes() == expected


@pytest.mark.parametrize("content", [b"[1, 2]", b'{"k": "not a digest"}', b"\xff", b"[" * 5000])
def test_damaged_digest_cache_costs_time_not_keys(tmp_path, monkeypatch, content):
    from pahi_rt import model_key as mk

    cache = tmp_path / "digests.json"
    monkeypatch.setenv("PAHI_RT_DIGEST_CACHE", str(cache))
    (tmp_path / "f.bin").write_bytes(b"weights")
    key = mk.file_digest(tmp_path / "f.bin")
    cache.write_bytes(content)
    assert mk.file_digest(tmp_path / "f.bin") == key  # recomputed, not a damaged entry


def test_digest_cache_never_replaces_a_fifo_or_dir(tmp_path, monkeypatch):
    import os

    from pahi_rt import model_key as mk

    for name, make in (("fifo", os.mkfifo), ("dir", os.mkdir)):
        target = tmp_path / name
        make(target)
        monkeypatch.setenv("PAHI_RT_DIGEST_CACHE", str(target))
        assert mk._read_cache() == {}  # a FIFO is never opened (it would block)
        mk._write_cache({"a": "0" * 64})
        assert target.is_fifo() if name == "fifo" else target.is_dir()


# --- damaged --resume state --------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    f = records(root / "f.jsonl")
    r = invoke("train", "--mode", "hi", "--objective", "kto", "--feedback", f, "--out",
               root / "run", "--steps", 2, "--val-every", 1, "--batch-size", 2,
               "--feedback-method", "density")  # the method that trains on these few records
    assert r.exit_code == 0 or "error: no improvement" in r.output, r.output  # state saved
    return root


def _truncate(p):
    p.write_bytes(p.read_bytes()[:50])


def _empty(p):
    p.write_bytes(b"")


def _json_edit(**edit):
    def apply(p):
        p.write_text(json.dumps({**json.loads(p.read_text()), **edit}))
    return apply


def _moments_of_another_shape(p):
    from safetensors.torch import load_file, save_file

    tensors = load_file(p)
    save_file({k: (v[..., :1].contiguous() if k.endswith("exp_avg") else v)
               for k, v in tensors.items()}, p)


@pytest.mark.parametrize("name,damage,error", [
    ("optimizer.safetensors", _truncate, "optimizer.safetensors does not load"),
    ("optimizer.safetensors", _empty, "optimizer.safetensors does not load"),
    ("optimizer.safetensors", _moments_of_another_shape, "optimizer.safetensors does not load"),
    ("head.safetensors", _truncate, "head.safetensors does not load"),
    ("reference.safetensors", lambda p: p.unlink(), "reference.safetensors does not load"),
    ("state.json", _json_edit(step="abc"), "'step' is 'abc', not an integer >= 0"),
    ("state.json", _json_edit(step=-3), "'step' is '-3'"),
    ("state.json", _json_edit(best_step=99), "best step 99 is not in the history"),
    ("state.json", _json_edit(history="x"), "'history' is not a list"),
    ("state.json", _json_edit(scheduler={"last_epoch": "x"}), "'last_epoch' is not an integer"),
    ("state.json", lambda p: p.write_text("[1]"), "a JSON list, not an object"),
    ("state.json", _json_edit(step=True), "'step' is 'True'"),
    ("state.json", _json_edit(step=10**6), "step 1000000 is past the run's 2 steps"),
    ("state.json", _json_edit(fingerprint="x"), "'fingerprint' is not an object"),
    ("state.json", lambda p: p.write_text(p.read_text().replace('"best_val_loss": 0',
                                                                 '"best_val_loss": NaN, "x": 0')),
     "'best_val_loss' is not a number"),
    ("state.json", lambda p: (p.unlink(), p.mkdir()), "no training state"),
    ("state.json", lambda p: p.write_text("{" * 10), "not valid JSON"),
    ("state.json", lambda p: p.write_text("[" * 100_000), "not valid JSON"),
])
def test_damaged_resume_state(saved_run, tmp_path, name, damage, error):
    run = tmp_path / "run"
    shutil.copytree(saved_run / "run", run)
    damage(run / "train_state" / name)
    r = invoke("train", "--mode", "hi", "--objective", "kto", "--feedback",
               saved_run / "f.jsonl", "--out", run, "--steps", 4, "--val-every", 1,
               "--batch-size", 2, "--feedback-method", "density", "--resume")
    assert_one_line_error(r, error)


def test_undamaged_state_resumes(saved_run, tmp_path):
    shutil.copytree(saved_run / "run", tmp_path / "run")
    r = invoke("train", "--mode", "hi", "--objective", "kto", "--feedback",
               saved_run / "f.jsonl", "--out", tmp_path / "run", "--steps", 4, "--val-every",
               1, "--batch-size", 2, "--feedback-method", "density", "--resume")
    assert r.exit_code == 0 or "error: no improvement" in r.output, r.output


# --- case 3: one prompt repeated: finite features, no blame on a scorer ---------------------
def test_feature_stats_of_one_repeated_prompt():
    from helpers import random_head

    head = random_head("pahi")
    emb = torch.randn(1, 77, 32).repeat(16, 1, 1)
    head.fit_feature_stats(emb)
    assert torch.equal(head.feature_scale, torch.ones_like(head.feature_scale))
    assert torch.isfinite(head.features(emb)).all() and head.features(emb).abs().max() < 1e-3
    two = torch.randn(2, 77, 32)
    head.fit_feature_stats(two.repeat(8, 1, 1))
    repeated = head.feature_scale.clone()
    head.fit_feature_stats(two)
    assert torch.allclose(repeated, head.feature_scale)  # repeats do not shrink the std


def test_kto_on_one_prompt_trains(tmp_path):
    f = records(tmp_path / "f.jsonl", prompts=("a red fox",), n=16)
    r = invoke("train", "--mode", "pahi", "--objective", "kto", "--feedback", f, "--out",
               tmp_path / "run", "--steps", 20, "--batch-size", 4, "--val-every", 2,
               "--hidden", 16, "--feedback-method", "density")  # the standardised text feature
    finished = r.exit_code == 0 or "error: no improvement" in r.output
    assert finished and "not finite" not in r.output and "scorer" not in r.output, r.output


def test_non_finite_message_names_the_objective():
    from pahi_rt.training.loop import TrainConfig, _suspects

    assert "scorer" not in _suspects(TrainConfig(objective="kto"))
    assert "--beta" in _suspects(TrainConfig(objective="dpo"))
    assert "scorer" in _suspects(TrainConfig(objective="scorer"))


# --- scorers that misbehave ---------------------------------------------------------------
def _scorer_set(fn, weight=1.0):
    from pahi_rt.scorers.scorer_set import ScorerSet, ScorerSpec

    return ScorerSet([ScorerSpec("mod:bad", None, weight)], [fn])


@pytest.mark.parametrize("fn,weight,error", [
    (lambda im, p: torch.full((im.shape[0],), float("nan")), 1.0, "returned nan for image 0"),
    (lambda im, p: torch.tensor([1.0, float("inf")]), 1.0, "returned inf for image 1"),
    (lambda im, p: torch.tensor([1.0, -float("inf")]), 1.0, "returned -inf for image 1"),
    (lambda im, p: torch.ones(im.shape[0]) * 10, -1e308, "not finite (weight x score"),
    (lambda im, p: 1 / 0, 1.0, "--scorer mod:bad failed (ZeroDivisionError"),
    (lambda im, p: (_ for _ in ()).throw(RuntimeError("CUDA said no\nmore")), 1.0,
     "failed (RuntimeError: CUDA said no)"),
    (lambda im, p: torch.ones(3), 1.0, "returned torch.Size([3]), expected [2] scores"),
])
def test_misbehaving_scorer_is_named(fn, weight, error):
    with pytest.raises(InputError, match=None) as e:
        _scorer_set(fn, weight).total(torch.rand(2, 3, 8, 8), ["a", "b"])
    assert error in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.fixture()
def bad_scorers(tmp_path, monkeypatch):
    (tmp_path / "bad_scorers.py").write_text(
        "import torch\n"
        "def nan():\n    return lambda im, p: im.mean((1, 2, 3)) * float('nan')\n"
        "def boom():\n    raise RuntimeError('factory exploded')\n"
        "def raises():\n    return lambda im, p: 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_module.py").write_text("raise RuntimeError('import exploded')\n")


@pytest.mark.parametrize("args,error", [
    (["--best-of", "2", "--scorer", "bad_scorers:nan"], "--scorer bad_scorers:nan returned nan"),
    (["--refine", "2", "--scorer", "bad_scorers:nan"], "--scorer bad_scorers:nan returned nan"),
    (["--best-of", "2", "--scorer", "bad_scorers:boom"], "boom() failed (RuntimeError: factory"),
    (["--best-of", "2", "--scorer", "bad_scorers:raises"], "failed (ZeroDivisionError"),
    (["--best-of", "2", "--scorer", "broken_module:f"], "importing 'broken_module' failed"),
    (["--best-of", "2", "--scorer", f"{SCORER}=-1e308"], "not finite (weight x score"),
])
def test_misbehaving_scorer_in_generate(bad_scorers, tmp_path, args, error):
    r = invoke("generate", "a red fox", *TINY, *args, "--out", tmp_path / "o")
    assert_one_line_error(r, error)
    assert not list(tmp_path.glob("o/*.png"))  # nothing written with a nan score


# --- undecodable text -----------------------------------------------------------------------
def test_argv_byte_that_is_not_utf8(tmp_path):
    """A real process: Python turns the byte into U+DCFF (surrogateescape)."""
    r = subprocess.run([sys.executable, "-m", "pahi_rt.cli", "generate", b"a \xff fox", *TINY,
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "error: the PROMPT holds byte 0xff that is not UTF-8" in r.stderr


@pytest.mark.parametrize("name,content,error", [
    ("p.jsonl", b'{"prompt": "a cat"}\n{"prompt": "a fox \\ud83d"}\n',
     "line 2 holds a lone UTF-16 surrogate (U+D83D)"),
    ("p.txt", b"a cat\na \xff fox\n", "line 2: not UTF-8 text (byte 0xff)"),
])
@pytest.mark.parametrize("ray", [[], ["--ray"]])
def test_prompt_file_with_undecodable_text(tmp_path, name, content, error, ray):
    (tmp_path / name).write_bytes(content)
    r = invoke("generate", "--prompts", tmp_path / name, *TINY, *ray, "--out", tmp_path / "o")
    assert_one_line_error(r, error)  # before any image (and before Ray starts)
    assert not list(tmp_path.glob("o/*.png"))


# --- concurrent runs into one directory --------------------------------------------------------
def test_a_second_training_run_into_one_out_is_refused(tmp_path):
    from pahi_rt import io

    out = tmp_path / "run"
    out.mkdir()
    with io.run_lock(out, "training run"):  # what a run in progress holds
        r = invoke("train", "--mode", "hi", "--objective", "kto", "--feedback",
                   records(tmp_path / "f.jsonl"), "--out", out, "--steps", 2, "--val-every", 1,
                   "--batch-size", 2)
    assert_one_line_error(r, "another training run is writing there")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
