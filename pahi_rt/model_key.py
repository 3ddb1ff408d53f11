"""Content keys of models: which weights turned an x_T into the pixels a user judged.

A feedback record stores the key of the model that made its image, so training refuses records
of another model even under the same name (a re-downloaded or edited checkpoint). The key
covers everything between x_T and the pixels: tokenizer, text encoder, UNet, scheduler and
decoder.

  random-weight presets (tiny, synthetic): sha256 of the preset definition (architecture
      configs, seed) and of the initialisers' source files; their weights are a function of
      these, so nothing is built or hashed.
  checkpoints (a diffusers dir, an HF id, `sd-turbo`): sha256 over the files the loader reads
      (configs, tokenizer files, non-variant *.safetensors of tokenizer/ text_encoder/ unet/
      scheduler/, SDXL's tokenizer_2/ text_encoder_2/, and the decoder's), each file by a
      content digest. Files in the HF cache are links named by their content hash (git blob
      sha1, or the LFS sha256 for weights): free.
      Other files are hashed once and the digest cached by (path, size, mtime) in
      $PAHI_RT_DIGEST_CACHE (default ~/.cache/pahi-rt/file-digests.json), so a full-size model
      costs seconds once and nothing after.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from .digests import (DIGEST_CACHE_ENV, HEX, _read_cache, _write_cache,  # noqa: F401
                      file_digest)
from .errors import InputError
from .io import sha256_json
from .hub import KEYED_FOLDERS, resolve_model_dir
from .specs import OWN_VAE, PRESETS, random_decoder_label

KEY_CHARS = 16  # hex digits kept: 64 bits tell models apart, and records stay short
_SUFFIXES = (".json", ".txt", ".safetensors")


@functools.lru_cache(maxsize=16)
def model_key(model: str, decoder: str | None = None) -> str:
    """Content key of `model` (preset, diffusers dir or HF id) with `decoder` (None or the
    label `components` gives a preset's own decoder: the preset's default)."""
    preset = PRESETS.get(model)
    if decoder is not None and preset is not None and decoder == random_decoder_label(model):
        decoder = None
    root = None
    if preset is not None and preset.hub_id is None:
        parts = {"preset": _preset_definition(preset)}
    else:
        root = resolve_model_dir(preset.hub_id if preset else model, preset is not None)
        parts = {"model": _tree_digest(root, KEYED_FOLDERS)}
    if decoder == OWN_VAE:  # the model's own full VAE: its vae/ files, or the preset's config
        parts["decoder"] = ({"own_vae": _tree_digest(root, ["vae"])} if root is not None else
                            {"own_vae": sha256_json([dict(preset.vae or {}),
                                                      _source_digest("decoders")])})
        return sha256_json(parts)[:KEY_CHARS]
    if decoder is None and preset is not None:
        decoder = preset.decoder_id  # None for random presets: their decoder is in the definition
    elif decoder is None:
        raise InputError(f"model key of '{model}': name its decoder (--decoder)")
    if decoder is not None:
        parts["decoder"] = _decoder_digest(decoder)
    return sha256_json(parts)[:KEY_CHARS]


def _preset_definition(preset) -> str:
    # the initialisers' source files, read without importing them (they import torch)
    definition = {"name": preset.name, "seed": preset.seed,
                  "configs": [dict(c or {}) for c in (preset.unet, preset.text_encoder,
                                                       preset.decoder)],
                  "init": [_source_digest(m) for m in ("random_init", "taesd")]}
    if preset.text_encoder_2 is not None:  # SDXL (SD 2.x presets keep their keys)
        definition.update(architecture=preset.architecture, scheduler=preset.scheduler_class,
                          text_encoder_2=dict(preset.text_encoder_2))
    return sha256_json(definition)


def _source_digest(module: str) -> str:
    """sha256 of pahi_rt.<module>'s source file, read without importing it (it imports torch)."""
    import importlib.util

    return hashlib.sha256(Path(importlib.util.find_spec(f"pahi_rt.{module}").origin).read_bytes()
                          ).hexdigest()


def _tree_digest(root: Path, folders) -> dict:
    out = {}
    for folder in folders:
        base = root / folder if folder else root
        for path in sorted(base.rglob("*")):
            # skip variants (`x.fp16.safetensors`, `x.safetensors.index.json`): not loaded
            if path.suffix in _SUFFIXES and "." not in path.stem and path.is_file():
                out[str(path.relative_to(root))] = file_digest(path)
    return out


def _decoder_digest(decoder: str) -> dict:
    path = Path(decoder)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise InputError(f"decoder {decoder}: no such file")
        return {"file": file_digest(path)}
    if not (path.exists() or decoder.startswith((".", "/", "~"))):
        from .hub import local_snapshot

        path = Path(local_snapshot(decoder))
    if not (path / "config.json").is_file():
        raise InputError(f"decoder {decoder}: no config.json (expected an AutoencoderTiny or "
                         "AutoencoderKL directory, HF id or taesd_decoder.safetensors)")
    return _tree_digest(path, [""])


