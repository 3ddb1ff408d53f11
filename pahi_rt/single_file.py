"""Single-file checkpoints in the original Stable Diffusion layout (`sd_turbo.safetensors`,
`sd_xl_turbo_1.0_fp16.safetensors`: what A1111 and ComfyUI users have), loaded offline.

`--model FILE.safetensors` is converted once into a diffusers-layout directory in the cache
($PAHI_RT_CACHE/single-file/KEY, default ~/.cache/pahi-rt/artifacts/single-file), KEY the sha256
of the file's bytes, the architecture and this converter's source; after that the directory
loader takes over, so every verb and backend works unchanged. The conversion:

  architecture  from the keys (`ARCHITECTURES`): `cond_stage_model.model.` (OpenCLIP) => SD 2.x,
                `conditioner.embedders.1.model.` => SDXL; CLIP-L-only SD 1.x and anything else
                are refused in one line
  configs       shipped inside pahi-rt (pahi_rt/data/single_file/<sd-turbo|sdxl-turbo>/: model
                index, UNet, VAE, text encoder(s), scheduler; tokenizers from the shipped CLIP BPE
                vocabulary), chosen by the UNet's and text encoder's widths; the `tiny` preset's
                architecture is known too (tests, README). No hub access.
  weights       read from safetensors only (pickled .ckpt/.pt/.bin are refused), renamed by
                diffusers' own single-file converters (diffusers.loaders.single_file_utils:
                convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                convert_open_clip_checkpoint, convert_ldm_clip_checkpoint), loaded strictly
                (a missing tensor is an error), saved as safetensors in the file's dtype.

The cache directory is written beside its final name and renamed into place under a lock, so a
reader never sees half a conversion and two processes converting one file do it once.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DATA = Path(__file__).resolve().parent / "data" / "single_file"
PICKLES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
DONE = "pahi-rt-single-file.json"  # written last: the conversion is complete


@dataclass(frozen=True)
class Architecture:
    """An original-layout family: the key that marks it, its shipped configs, its text parts."""

    name: str  # "sd2" | "sdxl"
    marker: str  # a key only this layout has
    configs: str  # folder under pahi_rt/data/single_file
    text_encoders: tuple[tuple[str, str, str], ...]  # (subfolder, layout, key prefix)
    tokenizers: tuple[tuple[str, str], ...]  # (subfolder, pad token)


ARCHITECTURES = (
    Architecture("sd2", "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
                 "sd-turbo", (("text_encoder", "openclip", "cond_stage_model.model."),),
                 (("tokenizer", "!"),)),
    Architecture("sdxl",
                 "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                 "sdxl-turbo", (("text_encoder", "clip", "conditioner.embedders.0.transformer."),
                                ("text_encoder_2", "openclip", "conditioner.embedders.1.model.")),
                 (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!"))),
)
UNSUPPORTED = {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":
               "SD 1.x (CLIP ViT-L text encoder)"}
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def is_single_file(source: str) -> bool:
    """Whether `--model source` names a file (not a directory, preset or HF id)."""
    path = Path(source).expanduser()
    return path.is_file() or path.suffix.lower() in (".safetensors",) + PICKLES


def read_header(path: Path) -> dict:
    """The safetensors header {name: {dtype, shape, data_offsets}} of `path`, checked against the
    file's size. InputError (one line) for a pickle, a missing file, a non-safetensors or a
    truncated file."""
    if path.suffix.lower() in PICKLES:
        raise InputError(f"--model {path}: pickled checkpoints (.ckpt/.pt/.bin) can run code when "
                         "loaded and are refused; use the .safetensors version")
    if not path.is_file():
        raise InputError(f"--model {path}: no such file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > min(size - 8, 100 << 20):
                raise ValueError
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise InputError(f"--model {path}: not a safetensors file") from None
    if 8 + n + end > size:
        raise InputError(f"--model {path}: truncated ({size} bytes, the header describes "
                         f"{8 + n + end}); download it again")
    return {k: v for k, v in header.items() if k != "__metadata__"}


def detect(header: dict, name: str = "checkpoint") -> Architecture:
    """The architecture whose marker key the checkpoint has; InputError otherwise."""
    for arch in ARCHITECTURES:
        if arch.marker in header:
            return arch
    for key, what in UNSUPPORTED.items():
        if key in header:
            raise InputError(f"--model {name}: {what} is not supported (supported: "
                             f"{', '.join(a.name for a in ARCHITECTURES)})")
    raise InputError(f"--model {name}: unknown architecture (no Stable Diffusion 2.x or SDXL "
                     "keys such as cond_stage_model.model. or conditioner.embedders.1.)")


def configs_for(arch: Architecture, header: dict, name: str = "checkpoint") -> dict:
    """{subfolder: config dict} (model_index.json under "") for the checkpoint: the shipped set
    of its architecture, or the `tiny` preset's when the widths are tiny's. InputError when
    no set matches the UNet's and text encoders' widths."""
    from .specs import TINY_TEXT, TINY_UNET, TINY_VAE

    sets = [shipped_configs(arch)]
    if arch.name == "sd2":
        sets.append({**sets[0], "unet": {"_class_name": "UNet2DConditionModel", **TINY_UNET},
                     "text_encoder": dict(TINY_TEXT),
                     "vae": {"_class_name": "AutoencoderKL", **TINY_VAE}})
    for configs in sets:
        if _widths(arch, header) == _widths(arch, configs):
            return {k: dict(v) for k, v in configs.items()}
    raise InputError(f"--model {name}: unknown {arch.name} variant (UNet/text widths "
                     f"{_widths(arch, header)}; pahi-rt knows {_widths(arch, sets[0])})")


def shipped_configs(arch: Architecture) -> dict:
    """{subfolder: config} of the architecture's shipped set ("" = model_index.json)."""
    base = DATA / arch.configs
    return {p.parent.name if p.parent != base else "": json.loads(p.read_text())
            for p in base.rglob("*.json")}


def _widths(arch: Architecture, source: dict) -> tuple:
    """(UNet conv_in width, text encoder widths) of a header or of a config set."""
    if "unet" in source:
        return (source["unet"]["block_out_channels"][0],
                *(source[sub]["hidden_size"] for sub, _, _ in arch.text_encoders))
    shape = source.get(CONV_IN, {}).get("shape", [None])
    texts = []
    for _, layout, prefix in arch.text_encoders:
        key = prefix + ("token_embedding.weight" if layout == "openclip"
                        else "text_model.embeddings.token_embedding.weight")
        texts.append(source.get(key, {}).get("shape", [None, None])[1])
    return (shape[0], *texts)


def cache_dir() -> Path:
    """Where converted checkpoints live: $PAHI_RT_CACHE/single-file."""
    base = os.environ.get("PAHI_RT_CACHE") or Path.home() / ".cache" / "pahi-rt" / "artifacts"
    return Path(base) / "single-file"


def converted_dir(path: Path, log=lambda m: None) -> Path:
    """The diffusers-layout directory of single-file checkpoint `path`, converted on first use
    (see the module docstring). InputError for bad files; ModelLoadError when unwritable."""
    from .digests import file_digest

    path = Path(path).expanduser()
    header = read_header(path)
    arch = detect(header, str(path))
    configs = configs_for(arch, header, str(path))
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    key = hashlib.sha256(f"{file_digest(path)}|{arch.name}|{code}".encode()).hexdigest()[:16]
    final = cache_dir() / f"{arch.name}-{key}"
    if (final / DONE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second converter waits, then finds it done
        if not (final / DONE).is_file():
            log(f"converting {path.name} ({arch.name}) into {final} (once)")
            tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                from .single_file_convert import convert

                convert(path, arch, configs, tmp)
                (tmp / DONE).write_text(json.dumps({"source": str(path), "architecture":
                                                    arch.name, "key": key}) + "\n")
                shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return final
