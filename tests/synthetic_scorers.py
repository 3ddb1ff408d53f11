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


def _luminance(images):
    rgb = images.mean(dim=(2, 3))
    return 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]


def day_night():
    """Bright images for prompts with "day", dark ones for prompts with "night" (PAHI)."""
    def score(images, prompts):
        sign = torch.tensor([-1.0 if "night" in p.split() else 1.0 for p in prompts],
                            device=images.device)
        return 10 * sign * _luminance(images)
    return score


def warm():
    """Warm images (red over blue) for every prompt (HI)."""
    def score(images, prompts):
        rgb = images.mean(dim=(2, 3))
        return 10 * (rgb[:, 0] - rgb[:, 2])
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


DAY_NIGHT = ("a {} by day", "a sunny day with a {}", "a {} at night", "a {} under the night sky")


def day_night_prompts() -> tuple[list[str], list[str]]:
    """(train, held-out) prompts for `day_night`: two day and two night phrasings per object,
    objects split 12 / 4 as in colour_prompts."""
    train = [t.format(o) for o in OBJECTS[:12] for t in DAY_NIGHT]
    held_out = [t.format(o) for o in OBJECTS[12:] for t in DAY_NIGHT]
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


def simulated_feedback(task: str, to, pngs, pairs: bool = False) -> int:
    """A simulated user labels pahi-rt PNGs with scorer `task` into feedback file `to` (as
    `pahi-rt feedback add|pair` would): per prompt, images above the prompt's median score are
    good, the rest bad; pairs: each prompt's best image beats each other one. Returns the number
    of records written."""
    import numpy as np
    from PIL import Image

    from pahi_rt.feedback.collect import append_records, label_records, pair_record, source_from_png

    score = globals()[task]()
    by_prompt: dict = {}
    for png in pngs:
        pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        prompt = source_from_png(png)[0]
        by_prompt.setdefault(prompt, []).append((score(image, [prompt]).item(), png))
    records = []
    for scored in by_prompt.values():
        scored.sort(reverse=True)
        if pairs:
            records += [pair_record(scored[0][1], png) for _, png in scored[1:]]
            continue
        cut = len(scored) // 2  # the better half good (the best one when a prompt has two)
        records += label_records([png for _, png in scored[:cut]], True)
        records += label_records([png for _, png in scored[cut:]], False)
    return len(append_records(to, records))


if __name__ == "__main__":
    # python tests/synthetic_scorers.py DIR: write the prompt files
    # python tests/synthetic_scorers.py label|pair TASK FEEDBACK.jsonl PNG...: simulated feedback
    import sys

    if sys.argv[1] in ("label", "pair"):
        n = simulated_feedback(sys.argv[2], sys.argv[3], sys.argv[4:], sys.argv[1] == "pair")
        print(f"{sys.argv[3]}: added {n} {sys.argv[2]} record(s)")
        raise SystemExit(0)
    for name, n in write_prompt_files(sys.argv[1]).items():
        print(f"{sys.argv[1]}/{name}: {n} prompts")
