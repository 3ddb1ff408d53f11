"""The model deployment (`ImageModel`): what renders. Each replica loads the model once (heavy
imports inside `__init__`, as in Ray Serve's Stable Diffusion example), opens one pipeline per
served (noise, steps, size) (`generation.open_generation`), watches the `--head` directory for a
new head, and batches images of concurrent requests with `@serve.batch`. It speaks no HTTP: the
ingress (`ingress.ImageIngress`) calls `generate` through a deployment handle and gets uint8
pixels and the metadata it needs for PNGs and headers (`schema.Rendered`).

Every image is one batch item carrying its own seed, so its eps, and therefore its pixels, do not
depend on what it was batched with. A cancelled call (the ingress gave up: client gone, deadline,
drain) cancels its items, and Serve's batcher skips cancelled items before they render.

Metric: `pahi_batch_size` (histogram of images per pipeline call).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

from ray import serve
from ray.serve import metrics

from . import control
from .schema import Rendered, ServeSettings

log = logging.getLogger("ray.serve")


@serve.deployment(name="ImageModel")
class ImageModel:
    """One model replica: the model and its pipelines, the head watch, the batch queue."""

    def __init__(self, settings: ServeSettings):
        from ..runtime.pipeline import load_model
        from ..runtime.prompt_cache import PromptCache
        from . import cluster
        from .generation import HeadWatch, open_generation

        if settings.loopback:
            cluster.bind_replica_grpc_to_loopback()
        s = self.settings = settings
        self.model = load_model(s.model, s.decoder, device=s.device, head=s.head,
                                noise=s.noises, height=s.height, width=s.width,
                                keep_fp32=s.backend != "torch")
        self.model.keys()  # content keys hashed once, here, not in the event loop
        # repeated prompts skip the text encoder and head (not on a fused graph/engine, whose
        # one call would be split into stages to use it); a new head gets new keys
        self.gen = open_generation(self.model, s, prompt_cache=PromptCache(256))
        self.render.set_max_batch_size(s.max_batch)
        self.render.set_batch_wait_timeout_s(s.batch_wait_ms / 1000)
        self.rendered = 0  # images this replica rendered (dropped requests render none)
        self.batch_sizes = metrics.Histogram(
            "pahi_batch_size", description="Images per pipeline call (dynamic batch).",
            boundaries=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64])
        self.watch = HeadWatch(s.head) if s.head else None
        if self.watch is not None:
            threading.Thread(target=self._watch_head, name="pahi-head-watch",
                             daemon=True).start()

    def __del__(self):
        """Serve calls this when it stops the replica (after draining): release the
        pipelines' sessions/engines/CUDA graphs and what the model shares among them."""
        for held in (getattr(self, "gen", None), getattr(self, "model", None)):
            if held is not None:
                held.close()

    def _watch_head(self) -> None:
        """Take up a new head from the watched directory between requests: a request holds
        the Generation it started with, so requests in flight finish on the old head."""
        while True:
            time.sleep(control.POLL_S)
            if not self.watch.changed():
                continue
            try:
                new = self.watch.reload(self.model, self.settings, self.gen)
            except Exception as e:  # a half-written or unfit head: keep serving the old
                log.warning("head in %s not taken up: %s", self.settings.head, e)
                continue
            if new is not None:
                self.gen = new
                log.warning("took up head %s from %s", new.head_key, self.settings.head)

    async def generate(self, key: tuple[str, int, int, int], prompt: str,
                       seeds: list[int]) -> Rendered:
        """The images of one request: `key` (noise, steps, height, width) picks the pipeline,
        image i uses seeds[i]. All of them render with the head current at the call."""
        gen, model = self.gen, self.model  # the head this request renders with
        items = await asyncio.gather(*(self.render((gen, key, prompt, seed)) for seed in seeds))
        noise = key[0]
        return Rendered(
            pixels=[px for px, *_ in items], batch_sizes=[size for _, size, *_ in items],
            tokens=items[0][2], revised_prompt=items[0][3], batch_s=max(i[4] for i in items),
            head_key=gen.key_of(noise),
            head_path=model.head_path if noise != "gaussian" else None,
            model_key=model.keys()["model_key"], decoder=model.base.decoder_id,
            max_tokens=model.spec.max_tokens, sampler=model.spec.scheduler.sampler)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def render(self, items: list[tuple]) -> list[tuple]:
        """(generation, key, prompt, seed) items from concurrent requests -> (uint8 image
        [H, W, 3], batch size, prompt tokens, the text the text encoder read, seconds the
        pipeline call took)."""
        return await asyncio.to_thread(self._render, items)

    def _render(self, items):
        """Batches run one at a time (Serve's default), so only this thread ever touches the
        tokenizer: a fast tokenizer keeps its padding/truncation state, it is not
        thread-safe."""
        t0, out = time.perf_counter(), [None] * len(items)
        for gen, key in dict.fromkeys((gen, key) for gen, key, _, _ in items):
            idx = [i for i, item in enumerate(items) if item[0] is gen and item[1] == key]
            pixels = gen.pipes[key]([items[i][2] for i in idx], [items[i][3] for i in idx])
            for j, i in enumerate(idx):
                out[i] = pixels[j]
        read = {p: self._encoded(p) for p in dict.fromkeys(p for _, _, p, _ in items)}
        self.batch_sizes.observe(len(items))
        self.rendered += len(items)
        took = time.perf_counter() - t0
        return [(px, len(items), *read[p], took) for px, (_, _, p, _) in zip(out, items)]

    def _encoded(self, prompt: str) -> tuple[int, str]:
        """(tokens the prompt has, the prompt as far as the text encoder reads it): past the
        limit the pipeline truncates exactly as `generate` does; the text is then the longest
        run of whole words that fits (CLIP tokenizes word by word, so that is a prefix)."""
        tokenizer, limit = self.model.base.tokenizer, self.model.spec.max_tokens

        def count(text: str) -> int:
            return len(tokenizer(text, truncation=False).input_ids)

        tokens = count(prompt)
        if tokens <= limit:
            return tokens, prompt
        words = prompt.split(" ")
        lo, hi = 0, len(words)  # words[:lo] fits, words[:hi] does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(" ".join(words[:mid])) <= limit else (lo, mid)
        return tokens, " ".join(words[:lo])

    def stats(self) -> dict:
        """What `/healthz` reports of this replica: head key, images rendered, prompt-cache
        counters, device and torch threads."""
        import torch

        cache = self.gen.prompt_cache
        return {"head_key": self.gen.head_key, "rendered": self.rendered,
                "prompt_cache": cache.stats() if cache else None,
                "device": str(self.model.device), "torch_threads": torch.get_num_threads()}
