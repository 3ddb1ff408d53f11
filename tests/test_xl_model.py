"""What pahi-rt knows about an SDXL model without running it: the conditioning its spec declares,
content keys that cover text_encoder_2/tokenizer_2, memory estimates, head configs."""
from __future__ import annotations

import json
import shutil

import pytest

from pahi_rt.model_key import model_key
from pahi_rt.specs import NAMES, PRESETS

from helpers import save_tiny_xl_checkpoint


pytestmark = pytest.mark.usefixtures("fresh_model_keys")


def test_specs_declare_the_conditioning():
    sd, xl = PRESETS["sd-turbo"].spec(), PRESETS["synthetic-xl"].spec()
    assert [(c.name, c.unet_arg, c.shape) for c in sd.conditioning] == [
        (NAMES.text_embeddings, "encoder_hidden_states", (77, 1024))]
    assert [(c.name, c.unet_arg, c.shape, c.added) for c in xl.conditioning] == [
        (NAMES.text_embeddings, "encoder_hidden_states", (77, 2048), False),
        (NAMES.text_embeds, "text_embeds", (1280,), True),
        (NAMES.time_ids, "time_ids", (6,), True)]
    assert sd.token_ids_shape == (77,) and xl.token_ids_shape == (2, 77)
    assert PRESETS["sdxl-turbo"].decoder_id == "madebyollin/taesdxl"
    assert PRESETS["sdxl-turbo"].spec().default_size == (512, 512)
    assert xl.scheduler.sampler == "Euler a" and sd.scheduler.sampler == "Euler"


def test_time_ids_as_diffusers_builds_them(tiny_xl_components):
    import torch

    from pahi_rt import sampling

    cond = sampling.encode_prompts(tiny_xl_components,
                                   sampling.tokenize_prompts(tiny_xl_components, ["a", "b"]))
    kwargs = sampling.unet_kwargs(cond, torch.zeros(2, 4, 8, 12))
    assert kwargs["encoder_hidden_states"].shape == (2, 77, 64)
    assert kwargs["added_cond_kwargs"]["text_embeds"].shape == (2, 32)
    assert kwargs["added_cond_kwargs"]["time_ids"].tolist() == [[64, 96, 0, 0, 64, 96]] * 2


def test_keys_cover_the_second_text_encoder(tmp_path):
    model_dir, decoder_dir = save_tiny_xl_checkpoint(tmp_path / "a", 1)
    key = model_key(str(model_dir), str(decoder_dir))
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    tok = copy / "tokenizer_2" / "tokenizer_config.json"
    cfg = json.loads(tok.read_text())
    cfg["pad_token"] = "<|endoftext|>"
    tok.write_text(json.dumps(cfg))
    assert model_key(str(copy), str(decoder_dir)) != key
    shutil.rmtree(copy)
    shutil.copytree(model_dir, copy)
    weights = copy / "text_encoder_2" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    model_key.cache_clear()
    assert model_key(str(copy), str(decoder_dir)) != key
    assert len({model_key(m) for m in ("tiny", "tiny-xl", "synthetic-xl")}) == 3


def test_memory_estimates_count_both_text_encoders(tmp_path):
    from pahi_rt.memory import model_params

    xl = model_params("synthetic-xl")
    assert 2.5e9 < xl.unet < 2.6e9 and 8.1e8 < xl.text_encoder < 8.3e8  # 123M + 695M
    assert model_params("sdxl-turbo") == xl  # same architecture, known before a download
    model_dir, _ = save_tiny_xl_checkpoint(tmp_path, 1)
    from_dir, preset = model_params(str(model_dir)), model_params("tiny-xl")
    assert from_dir.text_encoder == preset.text_encoder and from_dir.unet == preset.unet


def test_sd_head_configs_keep_their_bytes():
    from pahi_rt.heads.config import HeadConfig

    sd = HeadConfig("pahi", (4, 8, 8), 32, base_model="tiny")
    assert "architecture" not in sd.to_dict()  # heads written before SDXL keep their keys
    xl = HeadConfig("pahi", (4, 8, 8), 64, base_model="tiny-xl", architecture="sdxl")
    assert xl.to_dict()["architecture"] == "sdxl" and xl.problem() is None
    assert "architecture must be one of" in HeadConfig("hi", (4, 8, 8), 1,
                                                       architecture="flux").problem()


def test_xl_presets_build_their_own_full_vae():
    """`--decoder vae` on the random SDXL presets: a seeded AutoencoderKL of SD's architecture
    (synthetic-xl with SDXL's scaling factor), decoding through the XL path."""
    from pahi_rt import sampling
    from pahi_rt.components import load_components
    from pahi_rt.specs import PRESETS

    assert PRESETS["synthetic-xl"].vae["scaling_factor"] == 0.13025
    comps = load_components("tiny-xl", decoder="vae")
    assert type(comps.decoder).__name__ == "AutoencoderKL"
    assert comps.spec.latent_scale == PRESETS["tiny-xl"].vae["scaling_factor"]
    images = sampling.generate(comps, ["a red fox"], [0], steps=2)
    assert images.shape == (1, 64, 64, 3) and images.float().std() > 0
