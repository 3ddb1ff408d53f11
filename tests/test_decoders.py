"""`--decoder vae`: the full VAE (AutoencoderKL) through torch, onnxruntime (component and fused
graphs), PNG metadata and content keys; TAESD stays the default."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pahi_rt import sampling
from pahi_rt.errors import InputError
from pahi_rt.specs import MODES, NAMES, OWN_VAE, RenderShape

PROMPTS, SEEDS = ["a red fox in the snow", "an astronaut riding a horse"], [5, 6]


@pytest.fixture(scope="module")
def vae_components():
    from pahi_rt.components import load_components

    return load_components("tiny", OWN_VAE)


@pytest.fixture(scope="module")
def vae_artifacts(tmp_path_factory, vae_components):
    from pahi_rt.export.artifacts import export_artifacts
    from pahi_rt.export.build import ExportOptions

    options = ExportOptions(shape=RenderShape(batch=2, height=64, width=64, precision="fp32"),
                            graphs=("gaussian-1step",))
    return export_artifacts(vae_components, tmp_path_factory.mktemp("vae_artifacts"), options)


def test_own_vae_is_the_full_vae_with_its_scaling_factor(vae_components, tiny_components):
    from diffusers import AutoencoderKL

    assert isinstance(vae_components.decoder, AutoencoderKL)
    assert vae_components.spec.latent_scale == pytest.approx(0.18215)
    assert tiny_components.spec.latent_scale == 1.0  # TAESD default unchanged
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = vae_components.decoder.decode(z / 0.18215).sample  # as diffusers' pipelines
        got = sampling.decode(vae_components.decoder, z, vae_components.spec.latent_scale)
    torch.testing.assert_close(got, want)
    assert want.std() > 0.1  # calibrated: random latents decode to real contrast


def test_onnxruntime_matches_torch_with_the_full_vae(vae_components, vae_artifacts):
    from pahi_rt.export import graphs
    from pahi_rt.runtime.backend import RunConfig, null_timer
    from pahi_rt.runtime.ort_backend import OrtBackend
    from pahi_rt.runtime.torch_backend import TorchBackend

    cfg = RunConfig(MODES["gaussian-1step"], RenderShape(batch=2, height=64, width=64))
    ids = sampling.tokenize(vae_components.tokenizer, PROMPTS).numpy()
    eps = sampling.draw_eps(SEEDS, vae_components.spec.latent_shape(64, 64)).numpy()
    ref = TorchBackend(cfg, vae_components, sampling.gaussian).run(ids, eps)
    ort = OrtBackend(cfg, vae_artifacts.directory, vae_components.spec, "cpu")
    assert ref.std() > 20, "images need contrast for the comparison to mean anything"
    for out in (ort.run(ids, eps), ort.run_staged(ids, eps, null_timer)):
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2
    z = torch.from_numpy(eps)
    with torch.no_grad():
        image = sampling.decode(vae_components.decoder, z, vae_components.spec.latent_scale)
    torch.testing.assert_close(ort.infer(graphs.DECODER, {NAMES.latents: z})[NAMES.image], image,
                               atol=1e-4, rtol=1e-4)


def test_decoder_choice_changes_keys_and_pixels(vae_components, tiny_components):
    from pahi_rt.artifacts.keys import source_hashes
    from pahi_rt.model_key import model_key

    assert model_key("tiny", OWN_VAE) != model_key("tiny", None)
    assert source_hashes(vae_components)["decoder"] != source_hashes(tiny_components)["decoder"]
    a = sampling.generate(vae_components, PROMPTS[:1], SEEDS[:1], height=64, width=64)
    b = sampling.generate(tiny_components, PROMPTS[:1], SEEDS[:1], height=64, width=64)
    assert (a.int() - b.int()).abs().float().mean() > 5


def test_checkpoint_vae_folder_and_refusals(tiny_vae_checkpoint, tmp_path):
    from pahi_rt.components import load_components

    model_dir, _ = tiny_vae_checkpoint
    own = load_components(str(model_dir), OWN_VAE)
    by_path = load_components(str(model_dir), str(model_dir / "vae"))
    assert own.decoder_id == OWN_VAE and own.spec.latent_scale == pytest.approx(0.18215)
    for a, b in zip(own.decoder.state_dict().values(), by_path.decoder.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="needs --decoder"):
        load_components(str(model_dir))
    bare = tmp_path / "bare"
    bare.mkdir()
    for sub in ("tokenizer", "text_encoder", "unet", "scheduler"):
        (bare / sub).symlink_to(model_dir / sub)
    with pytest.raises(InputError, match="has no vae/ folder"):
        load_components(str(bare), OWN_VAE)


def test_png_metadata_names_the_decoder(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from pahi_rt.cli import app

    out = tmp_path / "vae.png"
    result = CliRunner().invoke(app, ["generate", "a lighthouse", "--model", "tiny", "--decoder",
                                      OWN_VAE, "--height", "64", "--width", "64", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    info = Image.open(out).info
    assert json.loads(info["pahi-rt"])["decoder"] == OWN_VAE
    assert "VAE: vae," in info["parameters"]
