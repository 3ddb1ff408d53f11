"""Single-file checkpoints in the original SD layout (`--model FILE.safetensors`): detected,
converted offline once into a content-keyed cache dir, and then the same model as the
diffusers directory it was made from (same pixels); bad files refused in one line."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from typer.testing import CliRunner

from pahi_rt import sampling
from pahi_rt.cli import app
from pahi_rt.errors import InputError
from pahi_rt.specs import OWN_VAE


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("single_file_cache")
    mp.setenv("PAHI_RT_CACHE", str(root / "cache"))
    mp.setenv("PAHI_RT_DIGEST_CACHE", str(root / "digests.json"))
    yield root / "cache"
    mp.undo()


@pytest.fixture(scope="module")
def single_file(tiny_vae_checkpoint, tmp_path_factory, cache):
    from original_layout import write_original

    model_dir, _ = tiny_vae_checkpoint
    return write_original(model_dir, tmp_path_factory.mktemp("sf") / "tiny_sd2.safetensors")


@pytest.mark.parametrize("decoder", [OWN_VAE, "taesd"])
def test_single_file_gives_the_directory_models_pixels(tiny_vae_checkpoint, single_file, decoder):
    from pahi_rt.components import load_components

    model_dir, taesd_dir = tiny_vae_checkpoint
    name = OWN_VAE if decoder == OWN_VAE else str(taesd_dir)
    want = load_components(str(model_dir), name)
    got = load_components(str(single_file), name)
    assert got.spec.latent_scale == want.spec.latent_scale
    a = sampling.generate(want, ["a red fox"], [3], steps=2, height=64, width=64)
    b = sampling.generate(got, ["a red fox"], [3], steps=2, height=64, width=64)
    assert a.float().std() > 20 and torch.equal(a, b)


def test_converted_once_into_a_content_keyed_dir(single_file, cache):
    from pahi_rt.single_file import DONE, converted_dir

    first = converted_dir(single_file)
    stamp = (first / DONE).stat().st_mtime_ns
    assert converted_dir(single_file) == first and (first / DONE).stat().st_mtime_ns == stamp
    assert first.parent == cache / "single-file" and first.name.startswith("sd2-")
    assert json.loads((first / DONE).read_text())["architecture"] == "sd2"
    assert not [p for p in first.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt")]
    copy = single_file.with_name("copy.safetensors")  # same bytes: same key
    copy.write_bytes(single_file.read_bytes())
    assert converted_dir(copy) == first


def test_generate_from_a_single_file(single_file, tmp_path):
    out = tmp_path / "sf.png"
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "a lighthouse",
            "--model",
            str(single_file),
            "--decoder",
            OWN_VAE,
            "--height",
            "64",
            "--width",
            "64",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()


def _header_file(path, tensors: dict) -> None:
    header, offset = {}, 0
    for name, shape in tensors.items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_bad_files_are_refused_in_one_line(single_file, tmp_path):
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04not really")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(single_file.read_bytes()[: single_file.stat().st_size // 2])
    other = tmp_path / "other.safetensors"
    _header_file(other, {"some.weight": (2, 2)})
    sd1 = tmp_path / "sd1.safetensors"
    _header_file(
        sd1, {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (4, 2)}
    )
    for path, pattern in (
        (pickle, "pickled checkpoints"),
        (garbage, "not a safetensors file"),
        (cut, "truncated"),
        (other, "unknown architecture"),
        (sd1, "SD 1.x (CLIP ViT-L text encoder) is not supported"),
    ):
        result = CliRunner().invoke(
            app,
            [
                "generate",
                "x",
                "--model",
                str(path),
                "--decoder",
                OWN_VAE,
                "--height",
                "64",
                "--width",
                "64",
                "--out",
                str(tmp_path / "o.png"),
            ],
        )
        lines = [x for x in result.output.splitlines() if x.startswith("error:")]
        assert result.exit_code == 2 and len(lines) == 1 and pattern in lines[0], result.output
        assert "Traceback" not in result.output


def test_architecture_is_read_from_the_keys(tmp_path):
    from pahi_rt.single_file import configs_for, detect, read_header

    xl = tmp_path / "xl.safetensors"
    marker = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    _header_file(
        xl, {marker: (6, 2), "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3)}
    )
    header = read_header(xl)
    arch = detect(header)
    assert arch.name == "sdxl" and [t[0] for t in arch.text_encoders] == [
        "text_encoder",
        "text_encoder_2",
    ]
    with pytest.raises(InputError, match="unknown sdxl variant"):
        configs_for(arch, header)
    shipped = configs_for(
        arch,
        {
            "model.diffusion_model.input_blocks.0.0.weight": {"shape": [320, 4, 3, 3]},
            "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": {
                "shape": [49408, 768]
            },
            "conditioner.embedders.1.model.token_embedding.weight": {"shape": [49408, 1280]},
        },
    )
    assert shipped[""]["_class_name"] == "StableDiffusionXLPipeline"
    assert shipped["scheduler"]["_class_name"] == "EulerAncestralDiscreteScheduler"


TINY_XL_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    attention_head_dim=(2, 4),
    norm_num_groups=16,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 32,
)
TINY_CLIP = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=32,
)


def test_sdxl_single_file_converts_to_the_diffusers_model(tmp_path):
    """A tiny SDXL written in the original layout converts back (diffusers' converters, the
    shipped SDXL-Turbo model index and scheduler) to the same tensors, and diffusers'
    StableDiffusionXLPipeline loads the result, and so does pahi-rt's SDXL path (its own VAE)."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from original_layout import write_original_xl
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pahi_rt.single_file import converted_dir, detect, read_header, shipped_configs
    from pahi_rt.single_file_convert import convert
    from pahi_rt.specs import TINY_VAE

    src = tmp_path / "xl"
    torch.manual_seed(0)
    UNet2DConditionModel(**TINY_XL_UNET).save_pretrained(src / "unet")
    AutoencoderKL(**TINY_VAE).save_pretrained(src / "vae")
    CLIPTextModel(CLIPTextConfig(**TINY_CLIP, hidden_act="quick_gelu")).save_pretrained(
        src / "text_encoder"
    )
    CLIPTextModelWithProjection(CLIPTextConfig(**TINY_CLIP)).save_pretrained(src / "text_encoder_2")
    single = write_original_xl(src, tmp_path / "tiny_xl.safetensors")
    arch = detect(read_header(single))
    assert arch.name == "sdxl"
    with pytest.raises(InputError, match="unknown sdxl variant"):
        converted_dir(single)  # only SDXL-Turbo's full-size widths ship
    configs = {
        **shipped_configs(arch),
        "unet": {"_class_name": "UNet2DConditionModel", **TINY_XL_UNET},
        "vae": {"_class_name": "AutoencoderKL", **TINY_VAE},
        "text_encoder": {
            "architectures": ["CLIPTextModel"],
            **TINY_CLIP,
            "hidden_act": "quick_gelu",
        },
        "text_encoder_2": {"architectures": ["CLIPTextModelWithProjection"], **TINY_CLIP},
    }
    out = tmp_path / "converted"
    convert(single, arch, configs, out)
    for part, name in (
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
        ("text_encoder_2", "model"),
    ):
        want = load_file(src / part / f"{name}.safetensors")
        got = load_file(out / part / f"{name}.safetensors")
        assert set(got) == set(want), part
        for k, v in want.items():
            assert torch.equal(got[k].reshape(v.shape), v), (part, k)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(out))
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert pipe.tokenizer.pad_token == "<|endoftext|>" and pipe.tokenizer_2.pad_token == "!"
    from pahi_rt import sampling
    from pahi_rt.components import load_components

    comps = load_components(str(out), decoder="vae")
    assert comps.spec.architecture == "sdxl" and comps.spec.default_size == (64, 64)
    assert comps.spec.latent_scale == TINY_VAE["scaling_factor"]
    assert sampling.generate(comps, ["a red fox"], [1], steps=2).shape == (1, 64, 64, 3)


def test_fp16_file_keeps_its_dtype(tiny_vae_checkpoint, single_file, tmp_path):
    """`*_fp16.safetensors` files convert without an fp32 copy on disk; runs cast as asked."""
    from original_layout import write_original
    from safetensors.torch import load_file

    from pahi_rt.components import load_components
    from pahi_rt.single_file import converted_dir

    model_dir, _ = tiny_vae_checkpoint
    half = write_original(model_dir, tmp_path / "tiny_fp16.safetensors", dtype=torch.float16)
    folder = converted_dir(half)
    assert folder != converted_dir(single_file)  # other bytes, other key
    weights = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.float16}
    got = load_components(str(half), OWN_VAE)
    want = load_components(str(model_dir), OWN_VAE)
    assert got.dtype == torch.float32
    a = sampling.generate(want, ["a red fox"], [3], height=64, width=64)
    b = sampling.generate(got, ["a red fox"], [3], height=64, width=64)
    assert (a.int() - b.int()).abs().float().mean() < 2  # fp16-rounded weights, fp32 math
