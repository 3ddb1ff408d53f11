"""`pahi-rt generate` through Typer's CliRunner: files, metadata, and one-line errors."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from pahi_rt.cli import app, main  # noqa: F401

runner = CliRunner()
SMALL = ["--model", "tiny", "--height", "64", "--width", "64"]


def run(*args):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, pattern):
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], result.output
    assert "Traceback" not in result.output


def test_generate_writes_png_with_metadata(tmp_path):
    r = run("generate", "a red fox in the snow", *SMALL, "--seed", "7", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    im = Image.open(tmp_path / "00000.png")
    assert im.size == (64, 64)
    meta = json.loads(im.text["pahi-rt"])
    assert meta["prompt"] == "a red fox in the snow" and meta["seed"] == "7"
    assert meta["noise"] == "gaussian" and meta["model"] == "tiny"
    assert meta["head"] == "none" and meta["steps"] == "1"
    assert im.text["parameters"].startswith("a red fox in the snow\nSteps: 1, Sampler: Euler")
    assert set(im.text) == {"pahi-rt", "parameters"}  # the prompt once in each


def test_prompt_file_numbers_images_and_seeds(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n\na dog\na bird\n")
    out = tmp_path / "out"
    r = run("generate", "--prompts", str(prompts), *SMALL, "--seed", "3", "--steps", "2",
            "--out", str(out))
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == ["00000.png", "00001.png", "00002.png"]
    meta = [json.loads(Image.open(out / f).text["pahi-rt"]) for f in files]
    assert [m["prompt"] for m in meta] == ["a cat", "a dog", "a bird"]
    assert [m["seed"] for m in meta] == ["3", "4", "5"] and meta[0]["steps"] == "2"


@pytest.mark.parametrize("args,message", [
    (("x", "--height", "100"), "--height must be a multiple of 8"),
    (("x", "--width", "32"), "--width must be a multiple of 8 from 64 to 16384"),
    (("x", "--model", "no-such-preset-here"),
     "not a preset (sd-turbo, synthetic, tiny, sdxl-turbo, synthetic-xl, tiny-xl)"),
    (("x", "--model", "tinny"), "did you mean tiny?"),
    (("x", "--model", "nobody/no-such-model-here"), "try --model synthetic"),
    (("x", "--model", "./missing-dir"), "no such directory (presets: sd-turbo"),
    (("--prompts", "missing.txt"), "no such file"),
    (("x", "--dtype", "fp8"), "--precision must be one of"),
    (("x", "--noise", "pahi"), "needs --head"),
    (("x", "--noise", "hi", "--head", "nowhere"), "not a head checkpoint"),
    (("x", "--steps", "0"), "--steps must be an integer from 1 to 1000"),
    ((), "give a PROMPT"),
    (("x", "--prompts", "p.txt"), "give a PROMPT or --prompts FILE, not both"),
    (("x", "--backend", "foo"), "--backend must be one of torch, onnxruntime, tensorrt"),
    (("x", "--backend", "tensorrt", "--device", "cpu"), "on the CPU use --backend onnxruntime"),
    (("x", "--format", "tiff"), "--format must be one of png, jpeg, webp"),
])
def test_bad_input_is_one_line_error(tmp_path, args, message):
    extra = [] if "--model" in args else ["--model", "tiny"]
    r = run("generate", *args, *extra, "--out", str(tmp_path / "o"))
    assert_one_line_error(r, message)
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True


def test_wrong_decoder_type(tmp_path):
    # an AutoencoderKL folder is a decoder now (the full VAE: tests/test_decoders.py)
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    r = run("generate", "x", *SMALL, "--decoder", str(tmp_path), "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "not an AutoencoderTiny")


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run("generate", "x", *SMALL, "--out", str(blocker / "sub"))
    assert_one_line_error(r, "cannot write there")


def test_long_prompt_warns_and_still_writes(tmp_path):
    r = run("generate", "word " * 100, *SMALL, "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert "truncated to 77 tokens" in r.output
    assert (tmp_path / "00000.png").is_file()


def test_no_temp_files_left(tmp_path):
    r = run("generate", "x", *SMALL, "--out", str(tmp_path))
    assert r.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.png"]


def _pixels(path):
    import numpy as np

    return np.asarray(Image.open(path)).astype(int)


def test_export_then_generate_with_onnxruntime(tmp_path):
    art = tmp_path / "art"
    r = run("export", *SMALL, "--graph", "gaussian-1step", "--no-engine", "--out", str(art))
    assert r.exit_code == 0, r.output
    assert (art / "gaussian-1step.onnx").is_file() and "built" in r.output
    again = run("export", *SMALL, "--graph", "gaussian-1step", "--no-engine", "--out", str(art))
    assert "cached" in again.output and "built " not in again.output
    ref = run("generate", "a red fox", *SMALL, "--seed", "3", "--out", str(tmp_path / "t"))
    ort = run("generate", "a red fox", *SMALL, "--seed", "3", "--backend", "onnxruntime",
              "--artifacts", str(art), "--out", str(tmp_path / "o"))
    assert ref.exit_code == 0 and ort.exit_code == 0, ort.output
    diff = abs(_pixels(tmp_path / "t" / "00000.png") - _pixels(tmp_path / "o" / "00000.png"))
    assert diff.max() <= 2


def test_generate_onnxruntime_exports_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path / "cache"))
    args = ("generate", "a cat", *SMALL, "--steps", "2", "--backend", "onnxruntime")
    first = run(*args, "--out", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    assert "using the cache" in first.output and "composing gaussian-2step" in first.output
    second = run(*args, "--out", str(tmp_path / "b"))
    assert "exporting" not in second.output
    assert (_pixels(tmp_path / "a" / "00000.png") == _pixels(tmp_path / "b" / "00000.png")).all()


def test_generate_refuses_artifacts_of_other_weights(tmp_path, tiny_checkpoint):
    art = tmp_path / "art"
    assert run("export", *SMALL, "--graph", "gaussian-1step", "--no-engine",
               "--out", str(art)).exit_code == 0
    model_dir, decoder_dir = tiny_checkpoint
    r = run("generate", "a cat", "--model", str(model_dir), "--decoder", str(decoder_dir),
            "--height", "64", "--width", "64", "--backend", "onnxruntime", "--artifacts",
            str(art), "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "re-run `pahi-rt export`")


def test_backend_errors_are_one_line(tmp_path):
    r = run("generate", "a cat", *SMALL, "--backend", "nope", "--artifacts", str(tmp_path))
    assert_one_line_error(r, "--backend")
    r = run("generate", "a cat", *SMALL, "--backend", "tensorrt", "--artifacts", str(tmp_path))
    assert r.exit_code == 2 and "error:" in r.output
