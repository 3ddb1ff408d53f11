"""The OpenVINO backend against the torch reference (fp32, bf16), and its int8 UNet artifact:
content key, refusal when stale or corrupt, rebuild on first use."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from pahi_rt import sampling
from pahi_rt.errors import ArtifactError, BackendError
from pahi_rt.runtime.backend import RunConfig, null_timer
from pahi_rt.runtime.ov_backend import OpenVinoBackend
from pahi_rt.runtime.torch_backend import TorchBackend
from pahi_rt.specs import MODES, RenderShape

pytest.importorskip("openvino")

PROMPTS, SEEDS = ["a red fox in the snow", "an astronaut riding a horse"], [5, 6]
# the tolerances fp16 graphs meet on tiny (tests/test_runtime_ort.py): bf16 and int8 are held
# to them only where the README says they meet them
FP16_MAX_LEVELS, FP16_MEAN_LEVELS = 16, 2.0


def _inputs(comps):
    ids = sampling.tokenize(comps.tokenizer, PROMPTS).numpy()
    eps = sampling.draw_eps(SEEDS, comps.spec.latent_shape(64, 64)).numpy()
    return ids, eps


def _reference(comps, head, mode):
    source = head if MODES[mode].noise != "gaussian" else sampling.gaussian
    cfg = RunConfig(MODES[mode], RenderShape(2, 64, 64))
    return TorchBackend(cfg, comps, source).run(*_inputs(comps))


def _ov(directory, comps, mode, precision="fp32", **kw):
    cfg = RunConfig(MODES[mode], RenderShape(2, 64, 64, precision))

    def tokenize(prompts):
        return sampling.tokenize(comps.tokenizer, prompts).numpy()
    return OpenVinoBackend(cfg, directory, comps.spec, threads=1, tokenize=tokenize, **kw)


@pytest.mark.parametrize("mode", ["pahi-1step", "gaussian-1step", "gaussian-2step"])
def test_fused_and_staged_match_torch_fp32(tiny_artifacts, tiny_components, pahi_head, mode):
    ref = _reference(tiny_components, pahi_head, mode)
    backend = _ov(tiny_artifacts.directory, tiny_components, mode)
    assert backend.fused
    ids, eps = _inputs(tiny_components)
    fused, staged = backend.run(ids, eps), backend.run_staged(ids, eps, null_timer)
    assert fused.shape == ref.shape == (2, 64, 64, 3) and fused.dtype == np.uint8
    assert ref.std() > 20, "images need contrast for the comparison to mean anything"
    for out in (fused, staged):
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    backend.close()


def test_bf16_runs_and_stays_close(tiny_artifacts, tiny_components, pahi_head):
    ref = _reference(tiny_components, pahi_head, "pahi-1step")
    out = _ov(tiny_artifacts.directory, tiny_components, "pahi-1step", "bf16").run(
        *_inputs(tiny_components))
    diff = np.abs(out.astype(int) - ref.astype(int))
    # measured on tiny: max 12-18, mean 1.05-1.08 (8 prompts); full size max 12, mean 1.14
    assert diff.mean() <= FP16_MEAN_LEVELS and diff.max() <= 2 * FP16_MAX_LEVELS, (
        diff.max(), diff.mean())
    assert diff.max() > 0, "bf16 really ran (OpenVINO's precision hint was applied)"


def test_compiled_model_cache_is_keyed(tiny_artifacts, tiny_components):
    b32 = _ov(tiny_artifacts.directory, tiny_components, "gaussian-1step")
    b16 = _ov(tiny_artifacts.directory, tiny_components, "gaussian-1step", "bf16")
    assert b32.cache_dir("a" * 64) != b16.cache_dir("a" * 64) != b32.cache_dir("b" * 64)
    b32.run(*_inputs(tiny_components))
    assert any(p.is_file() for p in b32.cache_dir(b32.model_file("gaussian-1step")[1]).iterdir())


def test_refusals(tiny_artifacts, tiny_components):
    with pytest.raises(BackendError, match="not fp16"):
        _ov(tiny_artifacts.directory, tiny_components, "pahi-1step", "fp16")


def test_int8_unet_is_content_keyed_and_refused_when_stale(tmp_path, tiny_artifacts,
                                                           tiny_components, pahi_head):
    pytest.importorskip("nncf")
    from pahi_rt.runtime import ov_int8

    directory = tmp_path / "art"
    shutil.copytree(tiny_artifacts.directory, directory)
    logs = []
    backend = _ov(directory, tiny_components, "pahi-1step", "int8",
                  calibration=("a cat", "a dog"), log=logs.append)
    assert not backend.fused  # the int8 UNet runs stage by stage
    out = backend.run(*_inputs(tiny_components))
    assert any("quantizing the UNet" in m for m in logs)
    ref = _reference(tiny_components, pahi_head, "pahi-1step")
    assert out.shape == ref.shape and np.abs(out.astype(int) - ref.astype(int)).mean() < 40
    xml, key = backend.model_file("unet")
    assert xml.parent.name == ov_int8.FOLDER and ov_int8.load_int8(directory, key) == xml
    # reopened with the same inputs: reused, not quantized again
    logs.clear()
    _ov(directory, tiny_components, "pahi-1step", "int8", calibration=("a cat", "a dog"),
        log=logs.append).model_file("unet")
    assert logs == []
    # other calibration prompts -> another key: the stored one is stale and refused
    other = ov_int8.int8_key("x" * 64, ("a cat",), (999.0,), (2, 4, 8, 8))
    with pytest.raises(ArtifactError, match="stale"):
        ov_int8.load_int8(directory, other)
    # a corrupted weight file is refused, and rebuilt by the backend
    (xml.with_suffix(".bin")).write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="corrupt"):
        ov_int8.load_int8(directory, key)
    logs.clear()
    rebuilt = _ov(directory, tiny_components, "pahi-1step", "int8",
                  calibration=("a cat", "a dog"), log=logs.append)
    assert rebuilt.model_file("unet") == (xml, key) and logs


def test_generate_cli_openvino_auto_precision(tmp_path, monkeypatch):
    """`generate --backend openvino --precision auto` says what it picked and writes the PNG."""
    from typer.testing import CliRunner

    from pahi_rt.cli import app
    from pahi_rt.cpu import auto_precision

    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fox.png"
    r = CliRunner().invoke(app, ["generate", "a red fox", "--model", "tiny", "--height", "64",
                                 "--width", "64", "--backend", "openvino", "--precision", "auto",
                                 "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    picked, why = auto_precision("openvino", "cpu")
    assert f"precision auto: {picked} ({why})" in r.output and out.is_file()


def test_images_outlive_the_next_call(tiny_artifacts, tiny_components):
    """OpenVINO reuses its output buffers: an image returned earlier must not change."""
    backend = _ov(tiny_artifacts.directory, tiny_components, "gaussian-1step")
    ids, eps = _inputs(tiny_components)
    first = backend.run(ids, eps)
    kept = first.copy()
    backend.run(ids[::-1].copy(), eps[::-1].copy())
    assert np.array_equal(first, kept)
