"""A newcomer's first hour (issue 19): directory output numbers on, JPEG/WebP with A1111 metadata,
PNG info that real readers (sd-parsers) parse and that reproduces the image, argument errors and
`feedback add|pair` without torch, and the project's own errors where numpy's leaked."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pahi_rt.cli import app
from test_cli import assert_one_line_error

runner = CliRunner()
SMALL = ["--model", "tiny", "--height", "64", "--width", "64"]
HEAVY = ("torch", "diffusers", "transformers")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_directory_output_numbers_on_and_prints_names(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    out = tmp_path / "o"
    first = run("generate", "--prompts", prompts, *SMALL, "--out", out)
    assert first.exit_code == 0, first.output
    kept = (out / "00000.png").read_bytes()
    again = run("generate", "--prompts", prompts, *SMALL, "--seed", "9", "--out", out)
    assert again.exit_code == 0, again.output
    assert "numbering on from 00002.png" in again.output
    assert str(out / "00002.png") in again.output and str(out / "00003.png") in again.output
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(4)]
    assert (out / "00000.png").read_bytes() == kept
    assert json.loads(Image.open(out / "00003.png").text["pahi-rt"])["seed"] == "10"
    one = run("generate", "a bird", *SMALL, "--out", out, "--format", "jpeg")  # any format counts
    assert one.exit_code == 0 and (out / "00004.jpg").is_file(), one.output
    replaced = run("generate", "--prompts", prompts, *SMALL, "--seed", "9", "--out", out,
                   "--overwrite")
    assert replaced.exit_code == 0 and (out / "00000.png").read_bytes() != kept
    assert len(list(out.iterdir())) == 5  # --overwrite: fixed names 00000, 00001 replaced


def test_a_number_taken_meanwhile_moves_on(tmp_path):
    import numpy as np

    from pahi_rt import image_files

    outputs = image_files.plan_outputs(tmp_path, 2)
    (tmp_path / "00000.png").write_bytes(b"another run's image")
    meta = {"parameters": "x\nSteps: 1"}
    path = image_files.write(outputs, 0, np.zeros((8, 8, 3), np.uint8), meta)
    assert path.name == "00001.png" and (tmp_path / "00000.png").read_bytes() == b"another " \
        b"run's image"


@pytest.mark.parametrize("name,fmt", [("fox.jpg", "JPEG"), ("fox.jpeg", "JPEG"),
                                      ("fox.webp", "WEBP"), ("fox.png", "PNG")])
def test_file_formats_carry_metadata_real_readers_parse(tmp_path, name, fmt):
    import sd_parsers

    from pahi_rt.model_key import model_key

    r = run("generate", "a red fox, in the snow", *SMALL, "--seed", "7", "--out", tmp_path / name)
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / name).format == fmt
    info = sd_parsers.ParserManager().parse(tmp_path / name)
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    assert [p.value for p in info.prompts] == ["a red fox, in the snow"]
    assert info.samplers[0].parameters == {"cfg_scale": "0", "seed": "7", "steps": "1"}
    (model,) = info.models
    assert model.name == "tiny" and model.hash == model_key("tiny", "tiny (random TAESD)")[:10]


def test_out_suffixes_that_are_refused(tmp_path):
    assert_one_line_error(run("generate", "x", *SMALL, "--out", tmp_path / "fox.gif"),
                          "pahi-rt writes .png, .jpg/.jpeg or .webp files, not .gif")
    assert_one_line_error(run("generate", "x", *SMALL, "--out", tmp_path / "f.jpg", "--format",
                              "webp"), "names a jpeg file but --format is webp")
    assert not list(tmp_path.iterdir())


def _in_subprocess(tmp_path: Path, *argv) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the CLI in a fresh interpreter; returns (process, heavy modules it imported)."""
    code = ("import sys\nfrom pahi_rt.cli import app\ntry:\n    app()\nexcept SystemExit:\n"
            "    pass\nprint('IMPORTED', [m for m in %r if m in sys.modules], file=sys.stderr)"
            % (HEAVY,))
    p = subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    line = next(x for x in p.stderr.splitlines() if x.startswith("IMPORTED"))
    return p, eval(line.split(" ", 1)[1])


@pytest.fixture(scope="module")
def two_pngs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pngs")
    for seed in (1, 2):
        assert run("generate", "a cat", *SMALL, "--seed", seed, "--out", d / "o").exit_code == 0
    return d


@pytest.mark.parametrize("argv,expect", [
    (["generate", "--model", "tiny"], "error: give a PROMPT"),
    (["generate", "x", "--backend", "foo"], "error: --backend must be one of"),
    (["generate", "x", "--model", "tinny"], "did you mean tiny?"),
    (["generate", "x", "--best-of", "2"], "needs at least one --scorer"),
    (["generate", "x", "--seed", "-1"], "outside 0..2**64-1"),
    (["export", "--model", "tiny", "--precision", "fp8"], "--precision must be one of"),
    (["export", "--model", "tiny", "--target", "sm1"], "--target must be among"),
    (["train", "--mode", "foo", "--out", "x"], "--mode must be hi or pahi"),
    (["train", "--lr", "nan", "--out", "x"], "--lr must be a finite number"),
    (["train", "--objective", "scorer", "--out", "x"], "needs --prompts"),
    (["bench", "--backends", "foo"], "--backends: unknown foo"),
    (["bench", "--best-of", "2"], "needs at least one --scorer"),
    (["--help"], "Usage"),
    (["generate", "--help"], "Usage"),
    (["--version"], "pahi-rt "),
    (["feedback", "add", "o/00000.png", "--good"], "added 1 good record"),
    (["feedback", "pair", "o/00000.png", "o/00001.png"], "added 1 pair record"),
])
def test_fast_paths_do_not_import_torch(two_pngs, argv, expect):
    p, heavy = _in_subprocess(two_pngs, *argv)
    assert expect in p.stdout + p.stderr, p.stdout + p.stderr
    assert heavy == [], f"{' '.join(argv)} imported {heavy}"


def test_version():
    from importlib.metadata import version

    r = run("--version")
    assert r.exit_code == 0 and r.output.strip() == f"pahi-rt {version('pahi-rt')}"


def test_pipeline_without_prompts_raises_the_project_error():
    from pahi_rt.errors import InputError
    from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline

    pipe = open_pipeline(load_model("tiny", device="cpu"), PipelineConfig())  # tiny: 64x64
    with pytest.raises(InputError, match="0 prompts and 0 seeds"):
        pipe([], [])
    with pytest.raises(InputError, match="1 prompts and 2 seeds"):
        pipe(["a"], [1, 2])


def test_memory_check_knows_sd_turbo_and_skips_weight_variants(tmp_path):
    import json
    import struct

    from pahi_rt import memory

    assert memory.model_params("sd-turbo") == memory.model_params("synthetic")  # uncached here

    def tensors(path: Path, n: int) -> None:
        header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(4 * n))

    tensors(tmp_path / "m" / "text_encoder" / "model.safetensors", 10)
    tensors(tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors", 100)
    tensors(tmp_path / "m" / "unet" / "diffusion_pytorch_model.fp16.safetensors", 100)
    params = memory.model_params(str(tmp_path / "m"))
    assert (params.text_encoder, params.unet) == (10, 100)


def _help(*verb) -> str:
    """The rendered --help of a verb, box drawing and wrapping removed."""
    r = runner.invoke(app, [*verb, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return " ".join(r.output.replace("│", " ").split())


def test_help_texts_say_what_they_mean():
    for verb in ("generate", "train", "eval", "bench"):
        assert "NAME[@SOURCE][=WEIGHT]" in _help(verb), verb  # rich markup ate [@SOURCE]
    assert "hpsv2" in _help("bench")
    bench = _help("bench")
    assert "Untimed calls per row" in bench and "Timed calls per row" in bench
    assert "best iterate is kept (default: off)" in _help("generate")
    export = _help("export")
    assert "fp32 | fp16: the graphs' and engines' precision" in export
    train = _help("train")
    assert "the usual mixed precision is fp32 weights with --bf16" in train
    import typer

    commands = typer.main.get_command(app).commands  # rich keeps a docstring's line breaks:
    broken = [n for n, c in commands.items() if "\n" in (c.help or "").strip()]  # mid-sentence
    assert not broken, broken
    assert "--version" in _help()


def test_tensorrt_without_a_gpu_names_the_cpu_backends(tmp_path):
    import torch

    from helpers import has_module

    if torch.cuda.is_available() or not (has_module("tensorrt_rtx") or has_module("tensorrt")):
        pytest.skip("needs a machine without a GPU and a TensorRT flavour installed")
    r = run("generate", "x", *SMALL, "--backend", "tensorrt", "--artifacts", tmp_path,
            "--out", tmp_path / "o")
    assert_one_line_error(r, "torch sees none here; on the CPU use --backend onnxruntime or torch")
    assert "--device cuda" not in r.output


def test_a_misspelt_backend_is_not_answered_with_an_install_hint():
    from pahi_rt.extras import needs

    for verb in ("generate", "serve"):
        assert not [n for n in needs(verb, backend="foo") if n.extra in ("onnx", "tensorrt-rtx")]
    r = run("generate", "x", *SMALL, "--backend", "tensorrtt")
    assert_one_line_error(r, "--backend must be one of torch, onnxruntime, tensorrt, openvino, got "
                             "'tensorrtt'")
    assert "pip install" not in r.output
