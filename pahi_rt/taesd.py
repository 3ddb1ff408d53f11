"""TAESD as diffusers' `AutoencoderTiny`: build, load, and read taesd.py-layout weights.

`--decoder` accepts an AutoencoderTiny directory or HF id (e.g. `madebyollin/taesd`), or a
`taesd_decoder.safetensors` file in madebyollin/taesd's own key layout (a sibling
`taesd_encoder.safetensors` is picked up too); TAESDXL's `taesdxl_decoder.safetensors` (same
architecture, SDXL's latent space) likewise. taesd.py's Decoder starts with a parameter-free
Clamp at index 0, which AutoencoderTiny does inside `forward` (tanh(x/3)*3), so decoder layer k in
taesd.py is layer k-1 in diffusers; encoder indices match.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import InputError, ModelLoadError

DECODER_FILE, ENCODER_FILE = "taesd_decoder.safetensors", "taesd_encoder.safetensors"


def build(config: dict | None = None, seed: int | None = None):
    """An AutoencoderTiny (TAESD architecture unless `config` says otherwise); with a `seed`, its
    weights are seeded He-normal draws (a ReLU net), else left empty to be loaded."""
    from diffusers import AutoencoderTiny

    from .random_init import fast_random_init

    with torch.device("meta"):
        model = AutoencoderTiny(**dict(config or {}))
    if seed is None:
        return model.to_empty(device="cpu")
    return _calibrate(fast_random_init(model, seed, gain=2**0.5), seed)


@torch.no_grad()
def _calibrate(model, seed: int):
    """Rescale the last decoder conv so random latents decode to mid-grey +- 0.2 (in [0, 1])
    instead of saturating: random-weight images then have real contrast for parity checks."""
    last = model.decoder.layers[-1]
    z = torch.randn(2, model.config.latent_channels, 16, 16,
                    generator=torch.Generator().manual_seed(seed)) * 3
    out = (model.decoder(z) + 1) / 2  # back to the decoder's native [0, 1] scale
    last.weight.mul_(0.2 / out.std())
    last.bias.add_(0.5 - (out.mean() - last.bias.mean()) * 0.2 / out.std() - last.bias)
    return model


def taesd_to_diffusers(encoder: dict | None, decoder: dict | None) -> dict:
    """Map taesd.py Encoder/Decoder state dicts to AutoencoderTiny keys."""
    out = {}
    for k, v in (encoder or {}).items():
        out[f"encoder.layers.{k}"] = v
    for k, v in (decoder or {}).items():
        idx, rest = k.split(".", 1)
        out[f"decoder.layers.{int(idx) - 1}.{rest}"] = v
    return out


def load(source: str):
    """AutoencoderTiny from a taesd.py safetensors file, a directory or an HF id."""
    from diffusers import AutoencoderTiny

    path = Path(source)
    if path.suffix == ".safetensors":
        return _load_taesd_file(path)
    if not (path.exists() or source.startswith((".", "/", "~"))):
        from .hub import local_snapshot

        path = Path(local_snapshot(source))
    cfg = path / "config.json"
    if not cfg.is_file():
        raise InputError(f"--decoder {source}: no config.json (expected an AutoencoderTiny "
                         "directory, HF id or taesd_decoder.safetensors)")
    from .io import read_json_object

    cls = read_json_object(cfg, f"--decoder {source}").get("_class_name")
    if cls != "AutoencoderTiny":
        raise InputError(f"--decoder {source} is a {cls}, not an AutoencoderTiny (TAESD) or an "
                         "AutoencoderKL (full VAE)")
    try:
        return AutoencoderTiny.from_pretrained(str(path), use_safetensors=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load decoder '{source}': "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _load_taesd_file(path: Path):
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(f"--decoder {path}: no such file")
    # taesd_decoder / taesdxl_decoder (same layout): the encoder is the file named alike
    dec_path = path.with_name(path.name.replace("_encoder.", "_decoder."))
    enc_path = dec_path.with_name(dec_path.name.replace("_decoder.", "_encoder.")
                                  if "_decoder." in dec_path.name else ENCODER_FILE)
    try:
        decoder = load_file(dec_path) if dec_path.is_file() else None
        encoder = load_file(enc_path) if enc_path.is_file() else None
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise ModelLoadError(f"could not read {path}: {e}") from None
    model = build()
    try:
        state = {k: v.float() for k, v in taesd_to_diffusers(encoder, decoder).items()}
    except ValueError:  # keys that are not taesd.py's numbered layers
        raise InputError(f"--decoder {path}: not taesd.py weights (unexpected key layout)"
                         ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    wanted = [k for k in missing if (k.startswith("decoder.") and decoder is not None)
              or (k.startswith("encoder.") and encoder is not None)]
    if unexpected or wanted or decoder is None:
        raise InputError(f"--decoder {path}: not taesd.py weights "
                         f"(unexpected {unexpected[:3]}, missing {wanted[:3]})")
    return model
