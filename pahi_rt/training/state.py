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
import math
from pathlib import Path

import torch

from ..errors import InputError, ModelLoadError
from ..heads.checkpoint import WEIGHTS, recover_dir, write_dir_atomically, write_head_files

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
    """state.json of a saved run (without loading any tensors), checked (`check_train_info`)."""
    path = recover_dir(Path(directory) / STATE_DIR) / STATE
    if not path.is_file():
        raise InputError(f"--resume: no training state in {directory} (expected "
                         f"{STATE_DIR}/{STATE}; start without --resume)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ModelLoadError(f"--resume: {path} does not load (not valid JSON: "
                             f"{str(e)[:120]})") from None
    check_train_info(info, path)
    return info


COUNTERS = ("step", "best_step", "bad_evals")


def check_train_info(info, path) -> None:
    """ModelLoadError ("does not load (why)") unless `info` has the shape save_train_state
    writes: counters that are integers >= 0, a numeric best metric, a history of validations
    that holds the best step, and the optimizer and scheduler records."""
    def bad(why: str):
        raise ModelLoadError(f"--resume: {path} does not load ({why}); start a new run "
                             "without --resume, or restore the file")

    if not isinstance(info, dict):
        bad(f"a JSON {type(info).__name__}, not an object")
    for key in COUNTERS:
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            bad(f"'{key}' is {str(value)[:40]!r}, not an integer >= 0")
    if not _number(info.get("best_val_loss")) or math.isnan(info["best_val_loss"]):
        bad("'best_val_loss' is not a number")
    for key in ("fingerprint", "config"):
        if key in info and not isinstance(info[key], dict):
            bad(f"'{key}' is not an object")
    planned = info.get("config", {}).get("steps")
    if isinstance(planned, int) and info["step"] > planned:
        bad(f"step {info['step']} is past the run's {planned} steps")
    history = info.get("history")
    if not isinstance(history, list) or not all(
            isinstance(h, dict) and isinstance(h.get("step"), int) for h in history):
        bad("'history' is not a list of validations with integer steps")
    if history and info["best_step"] not in {h["step"] for h in history}:
        bad(f"best step {info['best_step']} is not in the history")
    opt, sched = info.get("optimizer"), info.get("scheduler")
    if not (isinstance(opt, dict) and isinstance(opt.get("param_groups"), list)
            and isinstance(opt.get("scalars"), dict) and isinstance(sched, dict)):
        bad("no optimizer/scheduler record")
    if not all(isinstance(g, dict) and _number(g.get("lr")) for g in opt["param_groups"]):
        bad("an optimizer param group without a numeric 'lr'")
    if isinstance(sched.get("last_epoch"), bool) or not isinstance(sched.get("last_epoch"), int):
        bad("the scheduler's 'last_epoch' is not an integer")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_train_state(directory: str | Path, head, optimizer, scheduler,
                     extra_modules: dict | None = None) -> dict:
    """Restore head, optimizer, scheduler, extra modules and RNG in place; returns the saved
    info dict. Every file is checked: a missing, truncated or edited one is a one-line
    ModelLoadError naming it and why, never a traceback or a silently different run."""
    from safetensors.torch import load_file

    folder = recover_dir(Path(directory) / STATE_DIR)
    info = read_train_info(directory)
    current = OPTIMIZER
    try:
        tensors = load_file(folder / OPTIMIZER)
        current = WEIGHTS
        head.load_state_dict(load_file(folder / WEIGHTS))
        for name, module in (extra_modules or {}).items():
            current = f"{name}.safetensors"
            module.load_state_dict(load_file(folder / current))
        current = OPTIMIZER
        _check_moments(optimizer, tensors)
        restore_optimizer(optimizer, tensors, info.pop("optimizer"))
        current = STATE
        scheduler.load_state_dict({**info.pop("scheduler"), "lr_lambdas": [None]})
        current = OPTIMIZER
        torch.set_rng_state(tensors["rng.torch"])
    except Exception as e:  # safetensors' own error type, shapes, keys, dtypes: all one kind
        why = (str(e).strip().splitlines() or [""])[0][:160]
        raise ModelLoadError(f"--resume: {folder / current} does not load ({type(e).__name__}"
                             f"{': ' + why if why else ''}); start a new run without --resume"
                             ) from None
    if not all(torch.isfinite(p).all() for p in head.parameters()):
        raise ModelLoadError(f"--resume: {folder / WEIGHTS} does not load (weights not finite)")
    return info


def _check_moments(optimizer, tensors: dict) -> None:
    """Adam's moments must have their parameter's shape (a wrong one loads, then fails later)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, value in tensors.items():
        if key.startswith("state."):
            _, idx, name = key.split(".", 2)
            if not idx.isdecimal() or int(idx) >= len(params):
                raise ValueError(f"{key}: no such parameter")
            if name != "step" and value.shape != params[int(idx)].shape:
                raise ValueError(f"{key} has shape {tuple(value.shape)}, its parameter "
                                 f"{tuple(params[int(idx)].shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{key} is not finite")
    if "rng.torch" not in tensors:
        raise ValueError("no rng.torch")
