"""Hostile and careless input across the CLI (issue 13): one-line errors with exit code 2, never
a traceback; and no run silently writes something wrong or replaces what a user made."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pahi_rt.cli import app

runner = CliRunner()
TINY = ["--model", "tiny", "--height", "64", "--width", "64"]


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], result.output
    assert "Traceback" not in result.output


def gen(tmp_path, *args, out="o"):
    return run("generate", *TINY, *args, "--out", tmp_path / out)  # args win over TINY


@pytest.mark.parametrize("args,pattern", [
    (("x", "--seed", 2**70), "outside 0..2**64-1"),
    (("x", "--seed", 2**64), "outside"),
    (("x", "--seed", -1), "outside"),
    (("x", "--device", "mps"), "--device 'mps' is not supported"),
    (("x", "--device", "meta"), "--device 'meta' is not supported"),
    (("x", "--height", 16384, "--width", 16384), "needs about"),
    (("x", "--height", 100000, "--width", 64), "from 64 to 16384"),
    (("x", "--steps", 0), "--steps must be an integer from 1 to 1000"),
    (("   ",), "the PROMPT is empty"),
])
def test_generate_argument_errors(tmp_path, monkeypatch, args, pattern):
    # a fixed figure: whether 16384x16384 fits must not depend on what else the machine runs
    # (tiny needs ~1.9 GiB there; with more available it would really render it)
    monkeypatch.setenv("PAHI_RT_MEMORY_AVAILABLE", "1G")
    one_line_error(gen(tmp_path, *args), pattern)
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True


def test_seed_range_of_a_whole_prompt_file_is_checked_first(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a\nb\nc\n")
    one_line_error(gen(tmp_path, "--prompts", f, "--seed", 2**64 - 2), "outside")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("config,pattern", [
    ("{not json", "is not valid JSON"), ("[1, 2]", "holds a JSON list, not an object")])
def test_decoder_config_that_is_not_an_object(tmp_path, config, pattern):
    d = tmp_path / "dec"
    d.mkdir()
    (d / "config.json").write_text(config)
    one_line_error(gen(tmp_path, "x", "--decoder", d), pattern)


@pytest.mark.parametrize("edit,pattern", [
    (lambda c: {**c, "hidden": -5}, "hidden must be positive"),
    (lambda c: [c], "holds a JSON list"),
    (lambda c: {**c, "latent_shape": [4, 8]}, "latent_shape must be 3"),
    (lambda c: {**c, "mode": "xx"}, "mode must be hi or pahi")])
def test_head_config_edited_by_hand(tmp_path, edit, pattern):
    from pahi_rt.heads.checkpoint import save_head

    from helpers import random_head

    save_head(random_head("pahi"), tmp_path / "h")
    cfg = tmp_path / "h" / "config.json"
    cfg.write_text(json.dumps(edit(json.loads(cfg.read_text()))))
    one_line_error(gen(tmp_path, "x", "--noise", "pahi", "--head", tmp_path / "h"), pattern)


def test_output_paths(tmp_path):
    (tmp_path / "o" / "00000.png").mkdir(parents=True)
    one_line_error(gen(tmp_path, "x", "--overwrite"), "is a directory")
    one_line_error(run("generate", "x", *TINY, "--out", ""), "--out is empty")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    one_line_error(gen(tmp_path, "--prompts", prompts, out="fox.png"), "names one image file")
    r = gen(tmp_path, "a fox", out="fox.png")
    assert r.exit_code == 0 and (tmp_path / "fox.png").is_file(), r.output
    assert (tmp_path / "fox.png").stat().st_mode & 0o777 == 0o666 & ~_umask()
    one_line_error(gen(tmp_path, "a fox", out="fox.png"), "pass --overwrite")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_existing_images_are_not_replaced_without_overwrite(tmp_path):
    assert gen(tmp_path, "a cat", "--seed", 1).exit_code == 0
    first = (tmp_path / "o" / "00000.png").read_bytes()
    r = gen(tmp_path, "a dog", "--seed", 2)  # numbered on: 00001.png, 00000.png kept
    assert r.exit_code == 0 and "00001.png" in r.output, r.output
    assert (tmp_path / "o" / "00000.png").read_bytes() == first
    assert gen(tmp_path, "a dog", "--seed", 2, "--overwrite").exit_code == 0
    assert (tmp_path / "o" / "00000.png").read_bytes() != first


def test_a_name_taken_while_writing_is_not_clobbered(tmp_path):
    from pahi_rt import io
    from pahi_rt.errors import InputError

    target = tmp_path / "x.png"
    target.write_text("mine")
    with pytest.raises(InputError, match="appeared while writing"):
        io.atomic_write(target, lambda tmp: tmp.write_text("theirs"), overwrite=False)
    assert target.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["x.png"]
    io.atomic_write_text(target, "replaced")  # overwrite=True by default for non-images
    assert target.read_text() == "replaced"


def _meta(path: Path) -> dict:
    return json.loads(Image.open(path).text["pahi-rt"])


def test_prompt_files_follow_one_rule(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text('\ufeffPrompts,n\n"a cat, sitting",1\n"a dog\nrunning",2\n,3\n')
    r = gen(tmp_path, "--prompts", csv, "--prompt-column", "Prompts", out="c")
    assert r.exit_code == 0, r.output
    metas = [_meta(p) for p in sorted((tmp_path / "c").glob("*.png"))]
    assert [m["prompt"] for m in metas] == ["a cat, sitting", "a dog running"]
    assert [m["source_line"] for m in metas] == ["2", "3"]
    txt = tmp_path / "p.txt"
    txt.write_text("\ufeffred\vfox\n\n\u2028blue\fbird\x1c\n", encoding="utf-8")
    assert gen(tmp_path, "--prompts", txt, out="t").exit_code == 0
    metas = [_meta(p) for p in sorted((tmp_path / "t").glob("*.png"))]
    assert [(m["prompt"], m["source_line"]) for m in metas] == [("red fox", "1"),
                                                                ("blue bird", "3")]
    r = run("generate", "--prompts", "-", *TINY, "--out", tmp_path / "s", input="a cat\n")
    assert r.exit_code == 0 and _meta(tmp_path / "s" / "00000.png")["prompt"] == "a cat"


@pytest.mark.parametrize("content,pattern", [
    ('{"prompt": 123}\n', "line 1: 'prompt' is a int, not a string"),
    ('{"prompt": "ok"}\n{"prompt": null}\n', "line 2: 'prompt' is a NoneType"),
    ('{"prompt": ["a"]}\n', "is a list")])
def test_jsonl_values_must_be_strings(tmp_path, content, pattern):
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    one_line_error(gen(tmp_path, "--prompts", f), pattern)


def test_prompt_sources_that_are_not_files(tmp_path):
    one_line_error(gen(tmp_path, "--prompts", tmp_path), "is a directory")
    one_line_error(run("train", *TINY, "--prompts", "foo/bar.txt", "--out", tmp_path / "t"),
                   "foo/bar.txt: no such file")


def test_nul_in_a_prompt_is_escaped_in_png_text(tmp_path):
    r = gen(tmp_path, "a\x00fox")
    assert r.exit_code == 0, r.output
    image = Image.open(tmp_path / "o" / "00000.png")
    assert image.text["parameters"].startswith("a\\x00fox\n")  # the text chunk: no NUL (PNG spec)
    assert _meta(tmp_path / "o" / "00000.png")["prompt"] == "a\x00fox"  # the exact prompt


@pytest.mark.parametrize("manifest,pattern", [
    ("[]", "no usable manifest.json"),
    ('{"format": 1, "artifacts": [1, "x", null]}', "no usable manifest.json"),
    (None, "no usable manifest.json")])
def test_bad_artifact_directories_say_what_is_wrong(tmp_path, manifest, pattern):
    art = tmp_path / "art"
    art.mkdir()
    if manifest is not None:
        (art / "manifest.json").write_text(manifest)
    one_line_error(gen(tmp_path, "x", "--backend", "onnxruntime", "--artifacts", art), pattern)


def test_manifest_paths_may_not_leave_the_directory(tiny_artifacts, tmp_path):
    import shutil

    from pahi_rt.errors import ArtifactError
    from pahi_rt.artifacts import manifest as mf

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts.directory, art)
    data = json.loads((art / "manifest.json").read_text())
    for entry in data["artifacts"]:
        if entry["graph"] == "unet" and entry["kind"] == "onnx":
            entry["path"] = "../other/graph.onnx"
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="leaves the artifact directory"):
        mf.verified_artifact(art, "unet", "onnx")


def test_cache_and_export_destinations(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("PAHI_RT_CACHE", str(blocker))
    one_line_error(gen(tmp_path, "x", "--backend", "onnxruntime"), "PAHI_RT_CACHE")
    one_line_error(run("export", *TINY, "--no-engine", "--out", blocker), "--out")
    one_line_error(run("export", *TINY, "--no-engine", "--out", "/proc/x"), "--out /proc/x")


def test_stale_export_temporaries_are_removed(tmp_path):
    out = tmp_path / "a"
    (out / ".trace.unet.onnx.ab12cd34").mkdir(parents=True)
    (out / ".unet.onnx.k2j3h4g5").mkdir()
    (out / ".keep-me").mkdir()
    r = run("export", *TINY, "--graph", "decoder", "--no-engine", "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".keep-me",
                                                                               ".lock"]


def test_scorer_and_training_input(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue dog\na green car\n")
    base = ["train", *TINY, "--prompts", prompts, "--steps", 2, "--batch-size", 2,
            "--pretrain-steps", 0, "--device", "cpu"]
    one_line_error(run(*base, "--scorer", "os:sep", "--out", tmp_path / "a"), "not a factory")
    one_line_error(run(*base, "--scorer", "synthetic_scorers:fixed_colour=nan",
                       "--out", tmp_path / "b"), "not a finite number")
    one_line_error(run(*base, "--scorer", "synthetic_scorers:fixed_colour", "--val-prompts",
                       prompts, "--out", tmp_path / "c"), "hold the same prompts")


def test_nan_loss_stops_training_and_leaves_no_usable_head(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue dog\na green car\na cup\n")
    v = tmp_path / "v.txt"
    v.write_text("a yellow hat\n")
    r = run("train", "--mode", "hi", *TINY, "--prompts", prompts, "--val-prompts", v,
            "--steps", 3, "--batch-size", 2, "--device", "cpu", "--scorer",
            "synthetic_scorers:nan_after_first", "--out", tmp_path / "h")
    one_line_error(r, "--scorer synthetic_scorers:nan_after_first returned nan")
    if (tmp_path / "h" / "config.json").exists():  # the scorer may fail before the first save
        config = json.loads((tmp_path / "h" / "config.json").read_text())
        assert config["training"]["status"].startswith("failed")
    r = gen(tmp_path, "x", "--noise", "hi", "--head", tmp_path / "h")
    assert r.exit_code == 2 and ("before improving on its start" in r.output
                                 or "not a head checkpoint" in r.output), r.output


def test_resume_checks_what_the_run_was_trained_with(tmp_path):
    prompts, val = tmp_path / "p.txt", tmp_path / "v.txt"
    prompts.write_text("a red cat\na blue dog\n")
    val.write_text("a green car\n")
    base = ["train", "--mode", "hi", *TINY, "--prompts", prompts, "--val-prompts", val,
            "--batch-size", 2, "--device", "cpu", "--val-every", 1, "--out", tmp_path / "h"]
    first = run(*base, "--steps", 1, "--scorer", "synthetic_scorers:fixed_colour")
    # a finished run; after one step it may keep its start (exit 2, "no improvement")
    assert first.exit_code == 0 or "error: no improvement" in first.output, first.output
    one_line_error(run(*base, "--steps", 2, "--resume", "--scorer",
                       "synthetic_scorers:colour_by_word"), "--scorer")
    prompts.write_text("a red cat\na pink dog\n")
    one_line_error(run(*base, "--steps", 2, "--resume", "--scorer",
                       "synthetic_scorers:fixed_colour"), "--prompts")


def test_eval_output_paths_are_checked_before_work(tmp_path):
    from pahi_rt.heads.checkpoint import save_head

    from helpers import random_head

    save_head(random_head("hi"), tmp_path / "h")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    base = ["eval", "--head", tmp_path / "h", "--model", "tiny", "--prompts", prompts,
            "--scorer", "synthetic_scorers:fixed_colour", "--device", "cpu"]
    one_line_error(run(*base, "--max-prompts", 0), "--max-prompts must be at least 1")
    one_line_error(run(*base, "--json", tmp_path), "--json")
    one_line_error(run(*base, "--json", "/proc/x/y.json"), "--json /proc/x")


def test_scheduler_without_timesteps(tmp_path, tiny_checkpoint):
    import shutil

    model_dir, decoder_dir = tiny_checkpoint
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    cfg = copy / "scheduler" / "scheduler_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "num_train_timesteps": 0}))
    one_line_error(run("generate", "x", "--model", copy, "--decoder", decoder_dir, "--height",
                       64, "--width", 64, "--out", tmp_path / "o"), "num_train_timesteps")


def test_train_state_survives_a_crash_between_the_two_renames(tmp_path):
    from pahi_rt.heads.checkpoint import write_dir_atomically
    from pahi_rt.training.state import has_train_state

    state = tmp_path / "train_state"
    write_dir_atomically(state, lambda d: (d / "state.json").write_text("{}"))
    os.replace(state, tmp_path / ".train_state.old")  # the crash window: only .old is left
    assert has_train_state(tmp_path) and (state / "state.json").is_file()
    assert state.stat().st_mode & 0o777 == 0o777 & ~_umask()
