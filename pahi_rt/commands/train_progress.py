"""What `pahi-rt train` shows while and after it trains (both objectives)."""
from __future__ import annotations

import statistics

import typer

from ..errors import InputError


class Progress:
    """tqdm bar over steps with loss, val loss and val win rate / accuracy (main process only);
    keeps the step times for the closing line."""

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


def report(out, run, progress: Progress | None = None) -> None:
    """The run's last line: where it stopped, its best validation metrics, and its cost; then
    an InputError (exit 2) when the best head is the starting head."""
    from ..training.loop import NO_IMPROVEMENT, final_status

    best = next(h for h in run.history if h["step"] == run.best_step)
    stop = "early stop" if run.stopped_early else "done"
    extra = "".join(f" {k.replace('_', ' ')} {100 * best[k]:.1f}%"
                    for k in ("val_win_rate", "val_accuracy")
                    if k in best and best[k] == best[k])
    typer.echo(f"{out}: {stop} at step {run.step}; best step {run.best_step} val loss "
               f"{best['val_loss']:.4f}{extra}{progress.cost() if progress else ''}")
    if final_status(run) == NO_IMPROVEMENT:
        raise InputError(f"no improvement: no step beat the starting head on validation, so "
                         f"{out} holds the starting head (config.json status '{NO_IMPROVEMENT}'"
                         "); more feedback, or other --steps/--lr, may help")
