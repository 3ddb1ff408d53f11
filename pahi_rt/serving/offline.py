"""Offline generation on Ray Data (`pahi-rt generate --prompts FILE --ray`): `render_batches`
maps `RenderBatches` over batches of (prompt, seed) rows; its actors each open the pipeline once
(`runtime.pipeline.open_pipeline`) and return finished PNG bytes; the driver writes them and the
index (`ledger`). One image per pipeline call, exactly as the non-Ray run renders it, so the
files are byte-identical. (Online serving is `app`: an ingress and a model deployment.)"""
from __future__ import annotations

import logging
import os
from typing import Iterator

import numpy as np

from .. import io
from .ledger import Job
from .schema import ServeSettings

ROWS_PER_BATCH = 8  # rows an actor takes per call (fewer round trips); one image per pipeline run


class RenderBatches:
    """The callable class `map_batches` runs on Ray Data actors: the model loaded and the
    pipeline opened once, in its constructor, and closed in `__del__`, which Ray Data calls when
    it retires the actor; each call renders a batch of rows ({"i", "prompt", "seed", "line"}
    arrays) into {"i", "png"} (PNG bytes with generate's metadata)."""

    def __init__(self, settings: ServeSettings, model_label: str, head_label: str | None,
                 threads: int | None = None):
        from pathlib import Path

        import torch

        from ..export.first_use import export_on_first_use
        from ..runtime.pipeline import PipelineConfig, load_model, open_pipeline
        from ..specs import RenderShape, parse_mode

        if threads:  # Ray gives an actor OMP_NUM_THREADS = its CPUs (1); the driver decides
            torch.set_num_threads(threads)

        s = self.settings = settings
        self.labels = (model_label, head_label)
        self.model = load_model(s.model, s.decoder, device=s.device, head=s.head,
                                noise=(s.noise,), height=s.height, width=s.width,
                                keep_fp32=s.backend != "torch")
        self.pipe = open_pipeline(self.model, PipelineConfig(
            backend=s.backend, mode=parse_mode(s.noise, s.steps),
            shape=RenderShape(batch=1, height=s.height, width=s.width, precision=s.precision),
            artifacts=Path(s.artifacts) if s.artifacts else None), export=export_on_first_use)

    def __call__(self, batch: dict) -> dict:
        s, (model, head) = self.settings, self.labels
        pngs = []
        for prompt, seed, line in zip(batch["prompt"], batch["seed"], batch["line"]):
            pixels = self.pipe([str(prompt)], [int(seed)])[0]
            meta = io.png_metadata(str(prompt), int(seed), s.steps, s.noise, model, head,
                                   s.height, s.width, self.model.base.decoder_id,
                                   extra={"source_line": int(line)}, keys=self.model.keys(),
                                   sampler=self.model.spec.scheduler.sampler)
            pngs.append(io.png_bytes(pixels, meta))
        return {"i": batch["i"], "png": np.array(pngs, dtype=object)}

    def __del__(self):
        """Ray Data calls this when it retires the actor (graceful shutdown): release the
        pipeline's sessions/engines and the model's shared ones."""
        for held in (getattr(self, "pipe", None), getattr(self, "model", None)):
            if held is not None:
                held.close()


def _quiet_console() -> None:
    """Ray Data logs INFO lines (execution plans, "progress bars disabled") to the console of
    every run; keep them in its log files (under the Ray session's logs/ray-data) and show only
    errors. It rebuilds its handlers from its default config on each run, hence both edits.
    RAY_DATA_LOGGING_CONFIG, when set, is the user's choice and left alone."""
    if os.environ.get("RAY_DATA_LOGGING_CONFIG"):
        return
    try:
        from ray.data._internal.logging import DEFAULT_CONFIG

        DEFAULT_CONFIG["handlers"]["console"]["level"] = "ERROR"
    except (ImportError, KeyError, TypeError):  # another Ray version: its default logging
        pass
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":
            handler.setLevel(logging.ERROR)


def render_batches(jobs: list[Job], settings: ServeSettings, model_label: str,
                   head_label: str | None, replicas: int = 1, gpus_per_replica: float = 0.0,
                   threads: int | None = None) -> Iterator[tuple[Job, bytes]]:
    """(job, PNG bytes) as the actors finish them (any order); Ray must be connected.
    `threads`: torch intra-op threads per actor (None: Ray's default, one per actor CPU).
    CPU kernels reduce in an order that depends on the thread count, so images match a plain
    run byte for byte only with its thread count."""
    import ray

    _quiet_console()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    by_index = {job.i: job for job in jobs}
    # seeds travel as text: up to 2**64-1 does not fit an Arrow int64
    rows = [{"i": j.i, "prompt": j.prompt, "seed": str(j.seed), "line": j.line} for j in jobs]
    blocks = max(1, min(len(rows), replicas * 4))  # enough blocks for every actor to work
    ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        RenderBatches, fn_constructor_kwargs=dict(settings=settings, model_label=model_label,
                                             head_label=head_label, threads=threads),
        batch_size=ROWS_PER_BATCH, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=replicas),
        num_cpus=1, num_gpus=gpus_per_replica or None)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i, png in zip(batch["i"], batch["png"]):
            yield by_index[int(i)], bytes(png)
