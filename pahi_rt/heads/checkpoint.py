"""Head checkpoints: a directory with `head.safetensors` and `config.json`.

config.json holds the HeadConfig (mode, latent shape, text dim, hidden width, base model) plus
free-form training info (scorer, steps, validation metrics) under "training".
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import InputError, ModelLoadError
from ..io import atomic_write_files, atomic_write_text, current_umask, read_json_object
from .config import HeadConfig

WEIGHTS, CONFIG = "head.safetensors", "config.json"


def save_head(head, directory: str | Path, training: dict | None = None) -> Path:
    """Write the head atomically: a temp dir beside `directory`, renamed into place."""
    return write_dir_atomically(directory, lambda tmp: write_head_files(head, tmp, training))


def write_head_files(head, folder: Path, training: dict | None = None) -> None:
    """head.safetensors (float32) and config.json (HeadConfig + "training") into `folder`."""
    from safetensors.torch import save_file

    state = {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, folder / WEIGHTS)
    meta = {**head.config.to_dict(), "training": training or {}}
    (folder / CONFIG).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def save_head_in_place(head, directory: str | Path, training: dict | None = None) -> Path:
    """Like save_head, but leaves other files in `directory` alone (a training run keeps its
    resume state beside the best head): each file is written to a temp file and renamed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_files(directory, (WEIGHTS, CONFIG),
                       lambda tmp: write_head_files(head, tmp, training), prefix=".head.")
    return directory


def update_training_info(directory: str | Path, training: dict) -> None:
    """Replace the "training" dict of a head's config.json (atomically), weights untouched."""
    path = Path(directory) / CONFIG
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["training"] = training
    atomic_write_text(path, json.dumps(meta, indent=2))


def write_dir_atomically(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a fresh temp dir beside `directory`, then swap it into place: a
    reader sees the old directory or the new one, never a half-written one."""
    directory = recover_dir(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a plain mkdir would not
        write(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def recover_dir(directory: str | Path) -> Path:
    """`directory`, put back from `.NAME.old` when a crash in `write_dir_atomically` left only
    that (between its two renames): the previous complete version is never lost."""
    directory = Path(directory)
    old = directory.with_name(f".{directory.name}.old")
    if not directory.exists() and old.is_dir():
        os.replace(old, directory)
    return directory


def read_head_config(directory: str | Path) -> tuple[HeadConfig, dict]:
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise InputError(f"--head {directory}: not a head checkpoint (needs {CONFIG} and "
                         f"{WEIGHTS})")
    meta = read_json_object(directory / CONFIG, f"--head {directory}", ModelLoadError)
    try:
        training = meta.pop("training", {})
        config = HeadConfig.from_dict(meta)
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"--head {directory}: bad {CONFIG} ({e})") from None
    problem = config.problem()
    if problem:
        raise ModelLoadError(f"--head {directory}: bad {CONFIG} ({problem})")
    if not isinstance(training, dict):
        training = {}
    return config, training


def usable_head_config(directory: str | Path) -> HeadConfig:
    """The head's config, refusing a head whose training failed before improving on its start
    (its weights are the untrained step 0) and warning when it failed later."""
    config, training = read_head_config(directory)
    status = str(training.get("status", "done"))
    if status.startswith("failed") and not training.get("best_step"):
        raise InputError(f"--head {directory}: its training {status}, before improving on its "
                         "start; train it again (or --resume)")
    if status == "no improvement":
        import warnings

        warnings.warn(f"--head {directory}: its training found nothing better than its start; "
                      "it is the starting head (N(0, I) for a fresh one)", stacklevel=3)
    if status.startswith("failed"):
        import warnings

        warnings.warn(f"--head {directory}: its training {status}; using its best head (step "
                      f"{training.get('best_step')})", stacklevel=3)
    return config


def head_key(directory: str | Path) -> str:
    """Content key of a head checkpoint: sha256 of its weights file and HeadConfig (first 16
    hex digits). Feedback records carry it, so a head retrained in place is noticed."""
    import hashlib

    config = usable_head_config(directory)
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    h.update((Path(directory) / WEIGHTS).read_bytes())
    return h.hexdigest()[:16]


def check_base_model(directory, config: HeadConfig, model_spec) -> None:
    """A head was trained on `config.base_model`: on another model it is refused when the
    conditioning it reads differs (PAHI: the text embedding width), and used with a warning
    naming both models when only the weights may differ (its noise was tuned for the other).
    The architecture (SD 2.x or SDXL) must match for any head: it fixes the latent space."""
    trained_on, here = config.base_model, model_spec.name
    if config.architecture != model_spec.architecture:
        raise InputError(f"--head {directory} was trained on {trained_on or 'another model'} "
                         f"({config.architecture}); --model {here} is {model_spec.architecture}, "
                         "so its conditioning and latent space differ: train a head for this "
                         "model")
    if config.kind == "pahi" and config.text_dim != model_spec.text_dim:
        raise InputError(f"--head {directory} was trained on {trained_on or 'another model'} "
                         f"({config.text_dim}-wide text embeddings); --model {here} gives "
                         f"{model_spec.text_dim}-wide ones, so its conditioning differs: train a "
                         "head for this model")
    if trained_on and _model_name(trained_on) != _model_name(here):
        import warnings

        warnings.warn(f"--head {directory} was trained on {trained_on}, used here with {here} "
                      "(same conditioning shapes; its noise was tuned for the other model)",
                      stacklevel=3)


def _model_name(name: str) -> str:
    """One spelling per model: a hub preset by its HF id, a directory by its absolute path."""
    from ..specs import PRESETS

    preset = PRESETS.get(name)
    if preset is not None:
        return preset.hub_id or preset.name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def load_head(directory: str | Path, model_spec, height: int | None = None,
              width: int | None = None, expect_mode: str | None = None):
    """Load a head and check it fits the model (text width) and, if given, the image size."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = usable_head_config(directory)
    if expect_mode and config.kind != expect_mode:
        raise InputError(f"--head {directory} is a '{config.kind}' head, not '{expect_mode}'")
    check_base_model(directory, config, model_spec)
    if height and width and tuple(config.latent_shape) != model_spec.latent_shape(height, width):
        c, h, w = config.latent_shape
        f = model_spec.vae_scale_factor
        raise InputError(f"--head {directory} was trained for {w * f}x{h * f} images "
                         f"(latent {c}x{h}x{w}); use --width {w * f} --height {h * f}")
    from .head import build_head

    head = build_head(config)
    try:
        state = load_file(Path(directory) / WEIGHTS)
        head.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise ModelLoadError(f"--head {directory}: weights do not load ({str(e)[:200]})") from None
    return head.eval().requires_grad_(False)
