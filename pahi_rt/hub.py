"""Resolve an HF repo id to a local snapshot (cache first), failing fast when offline.

Only safetensors weights and small text files are fetched; pickled .bin/.ckpt files never are.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from .errors import InputError, ModelLoadError
from .single_file import converted_dir, is_single_file
from .specs import PRESETS

ALLOW = ["*.json", "*.txt", "*.safetensors"]
HUB_HOST = "huggingface.co"
SUBFOLDERS = ("tokenizer", "text_encoder", "unet", "scheduler")  # what a diffusers model needs
SDXL_SUBFOLDERS = ("tokenizer_2", "text_encoder_2")  # what SDXL needs besides
# what a model's content key covers: every folder the loader may read (absent ones add nothing)
KEYED_FOLDERS = SUBFOLDERS + SDXL_SUBFOLDERS


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def local_snapshot(repo_id: str, hint: str = "") -> str:
    """Path of a snapshot of `repo_id` from the HF cache, downloading it if the hub answers."""
    from huggingface_hub import snapshot_download

    return _cached_or_downloaded(
        lambda **k: snapshot_download(repo_id, allow_patterns=ALLOW, **k), repo_id,
        f"'{repo_id}'", hint)


def local_file(repo_id: str, filename: str, hint: str = "") -> str:
    """Path of one file of `repo_id` from the HF cache, downloading it if the hub answers."""
    from huggingface_hub import hf_hub_download

    return _cached_or_downloaded(lambda **k: hf_hub_download(repo_id, filename, **k), repo_id,
                                 f"'{repo_id}/{filename}'", hint)


def _cached_or_downloaded(fetch, repo_id: str, what: str, hint: str) -> str:
    """`fetch(local_files_only=True)`, else (hub reachable) `fetch()`; one-line errors."""
    try:
        return fetch(local_files_only=True)
    except Exception:  # not cached (or a bad id): fall through to the hub
        pass
    if not hub_reachable():
        raise ModelLoadError(f"'{repo_id}' is not in the local HF cache and the hub cannot be "
                             f"reached{hint}")
    try:
        return fetch()
    except Exception as e:
        raise ModelLoadError(f"could not download {what}: {str(e).splitlines()[0]}") from None


def check_model_source(model: str) -> None:
    """Refuse at once a --model that can be no preset, directory or HF id: a path that does not
    exist (not "not a diffusers model directory") or a bare name that is no preset (a typo:
    named with the presets, not "not in the local HF cache")."""
    import difflib

    if model in PRESETS or Path(model).expanduser().exists():
        return
    presets = ", ".join(PRESETS)
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:
        raise InputError(f"--model {model}: no such directory (presets: {presets})")
    if "/" not in model:
        close = difflib.get_close_matches(model, PRESETS, n=1)
        raise InputError(f"--model {model}: not a preset ({presets}), a directory or an HF id "
                         f"(owner/name)" + (f"; did you mean {close[0]}?" if close else ""))


def default_size(model: str) -> tuple[int, int]:
    """(height, width) `model` renders when none is given (`ModelSpec.default_size`), read
    without torch: a preset's own, else from the UNet config of the directory or HF id."""
    import json

    from .specs import ModelSpec

    if model in PRESETS:
        return PRESETS[model].spec().default_size
    config = resolve_model_dir(model, is_preset=False) / "unet" / "config.json"
    try:
        sample = unet_sample_size(json.loads(config.read_text()))
        return ModelSpec(model, 0, default_sample_size=sample).default_size
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ModelLoadError(f"--model {model}: bad {config} ({e})") from None


def unet_sample_size(unet_config) -> int | tuple[int, int]:
    """unet.config.sample_size (an int, or [h, w]) as ModelSpec.default_sample_size takes it."""
    from .specs import ModelSpec

    s = unet_config.get("sample_size", ModelSpec.default_sample_size)
    return s if isinstance(s, int) else tuple(s)


def resolve_model_dir(source: str, is_preset: bool) -> Path:
    """The local diffusers-layout directory of a model dir, HF id (the cache, else the hub) or
    single-file checkpoint (converted once into the cache: single_file.py)."""
    if not is_preset and is_single_file(source):
        return converted_dir(Path(source))
    if not is_preset:
        check_model_source(source)
    path = Path(source)
    if is_preset or not (path.exists() or source.startswith((".", "/", "~"))):
        xl = "xl" in source.lower()  # sdxl-turbo and the like: the random SDXL presets
        path = Path(local_snapshot(source, hint=f"; try --model synthetic{'-xl' if xl else ''} "
                                              f"(random weights) or --model tiny"
                                              f"{'-xl' if xl else ''}"))
    missing = [s for s in SUBFOLDERS if not (path / s).is_dir()]
    if missing:
        raise InputError(f"--model {source}: not a diffusers model directory "
                         f"(missing {', '.join(missing)}/)")
    return path
