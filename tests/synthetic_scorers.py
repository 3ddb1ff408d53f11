"""Synthetic preference tasks with a known optimum, used through `--scorer module:factory`.

`colour_by_word`: the target mean colour depends on a colour word in the prompt (PAHI must read
the prompt). `fixed_colour`: one target colour for every prompt (HI can solve it).
Score = -squared distance of the image's mean RGB (in [0, 1]) to the target, scaled.
"""
from __future__ import annotations

import torch

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.1, 0.1, 0.9),
           "yellow": (0.9, 0.9, 0.1)}
FIXED = (0.8, 0.3, 0.6)


def _target(prompt: str) -> tuple[float, float, float]:
    for word, rgb in COLOURS.items():
        if word in prompt.split():
            return rgb
    return (0.5, 0.5, 0.5)


def colour_by_word():
    def score(images, prompts):
        target = torch.tensor([_target(p) for p in prompts], device=images.device)
        return -10 * ((images.mean(dim=(2, 3)) - target) ** 2).sum(-1)
    return score


def fixed_colour():
    def score(images, prompts):
        target = torch.tensor(FIXED, device=images.device)
        return -10 * ((images.mean(dim=(2, 3)) - target) ** 2).sum(-1)
    return score


def not_callable():
    return 42


OBJECTS = ("cat", "dog", "house", "tree", "car", "boat", "bird", "flower", "cup", "chair",
           "lamp", "bike", "hat", "shoe", "kite", "clock")


def colour_prompts() -> tuple[list[str], list[str]]:
    """(train, held-out) prompts: every colour word with every object, objects split 12 / 4."""
    train = [f"a {c} {o}" for o in OBJECTS[:12] for c in COLOURS]
    held_out = [f"a {c} {o}" for o in OBJECTS[12:] for c in COLOURS]
    return train, held_out


def write_prompt_files(folder) -> dict[str, int]:
    """train.txt (48 prompts), val.txt (8) and test.txt (16, objects never seen in training),
    as README's training example and bench/train_tiny.sh use them."""
    from pathlib import Path

    train, held_out = colour_prompts()
    files = {"train.txt": train, "val.txt": held_out[:8], "test.txt": held_out[8:] + held_out[:8]}
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, prompts in files.items():
        (Path(folder) / name).write_text("\n".join(prompts) + "\n")
    return {name: len(prompts) for name, prompts in files.items()}


def not_differentiable():
    def score(images, prompts):
        return torch.tensor(images.mean(dim=(1, 2, 3)).tolist())
    score.differentiable = False  # declared, so --refine refuses it before any work
    return score


def undeclared_not_differentiable():
    """Detached scores without the declaration: caught when the first gradient is asked for."""
    def score(images, prompts):
        return images.detach().mean(dim=(1, 2, 3))
    return score


def nan_after_first():
    """Finite for the first call (the step-0 validation), NaN afterwards: a scorer gone bad."""
    calls = [0]

    def score(images, prompts):
        calls[0] += 1
        s = -((images.mean(dim=(1, 2, 3)) - 0.5) ** 2)
        return s if calls[0] == 1 else s * float("nan")
    return score


if __name__ == "__main__":  # python tests/synthetic_scorers.py DIR: write the prompt files
    import sys

    for name, n in write_prompt_files(sys.argv[1]).items():
        print(f"{sys.argv[1]}/{name}: {n} prompts")
