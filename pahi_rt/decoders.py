"""The decoder a run uses: TAESD (diffusers `AutoencoderTiny`: fast, approximate) or the full VAE
(diffusers `AutoencoderKL`: what the checkpoint was trained with; slower, the published fidelity).

`--decoder` takes
  vae                        the model's own full VAE: a checkpoint's `vae/` folder (a single-file
                             checkpoint's `first_stage_model`, converted), or for a random preset
                             its seeded `Preset.vae` architecture
  an AutoencoderKL dir/HF id  e.g. another checkpoint's `vae/` (config.json `_class_name`)
  an AutoencoderTiny dir/id   e.g. madebyollin/taesd, or a taesd_decoder.safetensors file

Both decode as diffusers' pipelines do: image = decoder.decode(x0 / scaling_factor), in [-1, 1];
`latent_scale` is that scaling factor (AutoencoderTiny: 1.0; SD's VAE: 0.18215).
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import taesd
from .errors import InputError, ModelLoadError
from .specs import OWN_VAE, ModelSpec, Preset

KL, TINY = "AutoencoderKL", "AutoencoderTiny"


def load_decoder(decoder: str, preset: Preset | None, model_dir: Path | None) -> torch.nn.Module:
    """The decoder named by `--decoder` (see the module docstring), in fp32 on the CPU.
    `model_dir`: the model's diffusers directory (None for random presets)."""
    if decoder == OWN_VAE:
        if preset is not None and preset.hub_id is None:
            return build_vae(preset.vae, seed=preset.seed + 3)
        if model_dir is None or not (model_dir / "vae" / "config.json").is_file():
            raise InputError(f"--decoder {OWN_VAE}: the model has no vae/ folder")
        return _load_kl(str(model_dir / "vae"), OWN_VAE)
    path = Path(decoder)
    if path.suffix == ".safetensors":
        return taesd.load(decoder)
    if not (path.exists() or decoder.startswith((".", "/", "~"))):  # an HF id
        from .hub import local_snapshot

        path = Path(local_snapshot(decoder))
    if _class_name(path) == KL:
        return _load_kl(str(path), decoder)
    return taesd.load(decoder)  # as before the full VAE existed (its messages name `decoder`)


def latent_scale(decoder: torch.nn.Module) -> float:
    """What x0 latents are divided by before decoding (diffusers' `vae.config.scaling_factor`;
    TAESD: 1.0). InputError for a VAE with a shift (SD3/FLUX latents: not these models')."""
    if type(decoder).__name__ != KL:
        return 1.0
    if getattr(decoder.config, "shift_factor", None):
        raise InputError(f"--decoder: a VAE with shift_factor {decoder.config.shift_factor} "
                         "belongs to another latent space (SD3/FLUX)")
    return float(decoder.config.scaling_factor)


def check_fits(decoder: torch.nn.Module, spec: ModelSpec, name: str) -> None:
    """InputError when the decoder's latent channels or pixels per latent cell are not the
    UNet's (a VAE of another model family)."""
    cfg = decoder.config
    scale = 2 ** (len(cfg.block_out_channels) - 1) if type(decoder).__name__ == KL else 8
    if cfg.latent_channels != spec.latent_channels or scale != spec.vae_scale_factor:
        raise InputError(f"--decoder {name}: {cfg.latent_channels} latent channels at 1/{scale} "
                         f"scale, the model's UNet makes {spec.latent_channels} at "
                         f"1/{spec.vae_scale_factor}")


def build_vae(config, seed: int) -> torch.nn.Module:
    """A seeded random AutoencoderKL of `config` (random presets' `--decoder vae`), its last
    conv scaled so random latents decode to mid-grey +- 0.4 (real contrast for parity checks)."""
    from diffusers import AutoencoderKL

    from .random_init import fast_random_init

    if config is None:
        raise InputError(f"--decoder {OWN_VAE}: this preset has no full VAE")
    with torch.device("meta"):
        model = AutoencoderKL(**dict(config))
    model = fast_random_init(model, seed)
    with torch.no_grad():
        z = torch.randn(1, model.config.latent_channels, 8, 8,
                        generator=torch.Generator().manual_seed(seed))
        out = model.decode(z).sample
        last = model.decoder.conv_out
        last.weight.mul_(0.4 / out.std())
        last.bias.sub_(out.mean() * 0.4 / out.std())
    return model


def _class_name(path: Path) -> str | None:
    from .io import read_json_object

    cfg = path / "config.json"
    return read_json_object(cfg, f"--decoder {path}").get("_class_name") if cfg.is_file() else None


def _load_kl(source: str, name: str) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(source, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load decoder '{name}': "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
