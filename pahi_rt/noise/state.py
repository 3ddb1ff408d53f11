"""Training state for `--resume`: safetensors + JSON only, never pickles.

OUT/train_state/ (swapped in atomically):
  head.safetensors, config.json   the head at the last saved step (same format as a head dir)
  optimizer.safetensors           Adam moments and step counts, keyed state.{param}.{name};
                                  the torch RNG state as rng.torch
  {name}.safetensors              extra modules of the run (e.g. `reference`, the frozen
                                  reference head of KTO/DPO), when the objective has any
  state.json                      step, best metric, evaluations without improvement, history,
                                  LR scheduler state, optimizer param groups, the run's config
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import InputError, ModelLoadError
from .checkpoint import WEIGHTS, recover_dir, write_dir_atomically, write_head_files

STATE_DIR, OPTIMIZER, STATE = "train_state", "optimizer.safetensors", "state.json"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_train_state(directory: str | Path, head, optimizer, scheduler, info: dict,
                     extra_modules: dict | None = None) -> Path:
    """Write OUT/train_state atomically (see the module docstring)."""
    from safetensors.torch import save_file

    tensors, opt_meta = optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    payload = {**info, "optimizer": opt_meta, "scheduler": sched}

    def write(tmp: Path) -> None:
        write_head_files(head, tmp, {"resume_step": info.get("step")})
        save_file(tensors, tmp / OPTIMIZER)
        for name, module in (extra_modules or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                      tmp / f"{name}.safetensors")
        (tmp / STATE).write_text(json.dumps(payload, indent=1), encoding="utf-8")

    return write_dir_atomically(Path(directory) / STATE_DIR, write)


def has_train_state(directory: str | Path) -> bool:
    recover_dir(Path(directory) / STATE_DIR)
    return (Path(directory) / STATE_DIR / STATE).is_file()


def read_train_info(directory: str | Path) -> dict:
    """state.json of a saved run (without loading any tensors)."""
    path = recover_dir(Path(directory) / STATE_DIR) / STATE
    if not path.is_file():
        raise InputError(f"--resume: no training state in {directory} (expected "
                         f"{STATE_DIR}/{STATE}; start without --resume)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelLoadError(f"--resume: {path} is not valid JSON ({e})") from None


def load_train_state(directory: str | Path, head, optimizer, scheduler,
                     extra_modules: dict | None = None) -> dict:
    """Restore head, optimizer, scheduler, extra modules and RNG in place; returns the saved
    info dict."""
    from safetensors.torch import load_file

    folder = recover_dir(Path(directory) / STATE_DIR)
    if not (folder / STATE).is_file():
        raise InputError(f"--resume: no training state in {directory} (expected "
                         f"{STATE_DIR}/{STATE}; start without --resume)")
    try:
        info = json.loads((folder / STATE).read_text(encoding="utf-8"))
        tensors = load_file(folder / OPTIMIZER)
        head.load_state_dict(load_file(folder / WEIGHTS))
        for name, module in (extra_modules or {}).items():
            module.load_state_dict(load_file(folder / f"{name}.safetensors"))
        restore_optimizer(optimizer, tensors, info.pop("optimizer"))
        scheduler.load_state_dict({**info.pop("scheduler"), "lr_lambdas": [None]})
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"--resume: training state in {folder} does not load "
                             f"({str(e)[:200]})") from None
    torch.set_rng_state(tensors["rng.torch"])
    return info
