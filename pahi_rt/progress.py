"""What a long-running verb says while it works: status lines, per-image progress and the
training bar (stderr).

One line per event and no redrawn bar, so messages never share a terminal line and logs read the
same as the terminal. The first image of a run includes warm-up (allocator, kernel selection), so
the ETA is taken from the images after it and shown once one such image is done.
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import typer


def say(message: str) -> None:
    typer.echo(message, err=True)


def describe_model(model: str) -> str:
    """'building the synthetic preset (random weights)' or 'loading MODEL'."""
    from .specs import PRESETS

    preset = PRESETS.get(model)
    if preset is not None and preset.hub_id is None:
        return f"building the {model} preset (random weights)"
    return f"loading {model}"


@contextmanager
def stage(message: str, done: Callable[[], str] = lambda: "",
          log: Callable[[str], None] = say) -> Iterator[None]:
    """`message ...` now, `message: 12.3 s<done()>` when the block ends."""
    log(f"{message} ...")
    t0 = time.perf_counter()
    yield
    log(f"{message}: {time.perf_counter() - t0:.1f} s{done()}")


def parameter_count(comps) -> str:
    """', 1.21B parameters' for the text encoder, UNet and decoder of `comps`."""
    n = sum(p.numel() for m in comps.modules for p in m.parameters())
    return f", {n / 1e9:.2f}B parameters" if n >= 1e9 else f", {n / 1e6:.1f}M parameters"


class ImageProgress:
    """Iterate (i, prompt); `line()` gives `[3/500] out/00002.png  seed 2  0.41 s  eta 3:24`."""

    def __init__(self, texts):
        self.texts, self.total, self.times = list(texts), len(texts), []

    def __enter__(self) -> "ImageProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __iter__(self):
        return iter(enumerate(self.texts))

    def line(self, path, seed: int, seconds: float) -> str:
        self.times.append(seconds)
        done = len(self.times)
        text = f"{path}  seed {seed}  {seconds:.{3 if seconds < 1 else 2}f} s"
        if self.total == 1:
            return text
        text = f"[{done}/{self.total}] {text}"
        if done == 1:
            return text + "  (includes warm-up)"
        if done < self.total:
            steady = self.times[1:]
            text += f"  eta {_clock(sum(steady) / len(steady) * (self.total - done))}"
        return text


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainProgress:
    """`pahi-rt train` (both objectives): a tqdm bar over steps with loss, val loss and val win
    rate / accuracy (main process only); keeps the step times for the closing line."""

    def __init__(self, config, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=config.steps, desc=f"train {config.mode}", disable=not enabled,
                        dynamic_ncols=True)
        self.pre = tqdm(total=config.pretrain_steps, desc="pretrain", leave=False,
                        disable=not enabled or config.mode != "pahi" or not config.pretrain_steps)
        self.post: dict = {}
        self.step_seconds: list[float] = []

    def update(self, kind: str, step: int, metrics: dict) -> None:
        if kind == "pretrain":
            self.pre.update(1)
            self.pre.set_postfix(kl=f"{metrics['kl']:.4f}", recon=f"{metrics['recon']:.3f}")
            return
        if kind == "val":
            self.post["val_loss"] = f"{metrics['val_loss']:.4f}"
            for key, short in (("val_win_rate", "val_win"), ("val_accuracy", "val_acc")):
                if key in metrics and metrics[key] == metrics[key]:  # nan: nothing to rank
                    self.post[short] = f"{100 * metrics[key]:.1f}%"
        else:
            self.post["loss"] = f"{metrics['loss']:.4f}"
            if "seconds" in metrics:
                self.step_seconds.append(metrics["seconds"])
            self.bar.n = step
        self.bar.set_postfix(self.post, refresh=True)

    def cost(self) -> str:
        """'; median step X s; peak GPU memory Y GiB' (steps after the first: warm-up)."""
        import torch

        timed = self.step_seconds[1:] or self.step_seconds
        text = f"; median step {statistics.median(timed):.3f} s" if timed else ""
        if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
            text += f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        return text

    def close(self) -> None:
        self.pre.close()
        self.bar.close()
