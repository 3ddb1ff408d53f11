"""The per-prompt conditioning cache: LRU bound and counters, same pixels as without it, the text
encoder skipped on a hit, and no reuse across heads."""
from __future__ import annotations

import numpy as np
import pytest

from pahi_rt import sampling
from pahi_rt.runtime.backend import RunConfig
from pahi_rt.runtime.pipeline import LoadedModel, Pipeline, PipelineConfig
from pahi_rt.runtime.prompt_cache import Conditioning, PromptCache
from pahi_rt.runtime.torch_backend import TorchBackend
from pahi_rt.specs import MODES, RenderShape

PROMPTS = ["a red fox", "a blue boat", "a red fox"]


def test_lru_bound_and_counters():
    cache = PromptCache(max_entries=2)
    assert cache.get("a") is None
    cache.put("a", Conditioning(1))
    cache.put("b", Conditioning(2))
    assert cache.get("a").text == 1  # a is now the most recent
    cache.put("c", Conditioning(3))  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("c").text == 3
    assert cache.stats() == {"hits": 2, "misses": 2, "evictions": 1, "entries": 2,
                             "max_entries": 2}
    with pytest.raises(ValueError):
        PromptCache(0)


def _pipeline(comps, head, cache=None, mode="pahi-1step", batch=2):
    model = LoadedModel(comps, {"pahi": head} if head is not None else {}, "cpu", None)
    config = PipelineConfig(backend="torch", mode=MODES[mode],
                            shape=RenderShape(batch=batch, height=64, width=64))
    source = head if head is not None else sampling.gaussian
    backend = TorchBackend(RunConfig(MODES[mode], RenderShape(batch, 64, 64)), comps, source)
    return Pipeline(model, backend, config, prompt_cache=cache)


def _count_encodes(monkeypatch, backend) -> list:
    calls = []
    original = backend.encode_text
    monkeypatch.setattr(backend, "encode_text", lambda ids: calls.append(len(ids)) or
                        original(ids))
    return calls


def test_same_pixels_and_text_encoder_skipped(monkeypatch, tiny_components, pahi_head):
    plain = _pipeline(tiny_components, pahi_head)(PROMPTS, [1, 2, 3])
    cache = PromptCache()
    pipe = _pipeline(tiny_components, pahi_head, cache)
    calls = _count_encodes(monkeypatch, pipe.backend)
    first = pipe(PROMPTS, [1, 2, 3])
    # batch 2: [fox, boat] both miss (one encode), [fox] hits
    assert calls == [2] and cache.stats()["hits"] == 1 and cache.stats()["misses"] == 2
    again = pipe(PROMPTS, [1, 2, 3])
    assert calls == [2] and cache.stats()["hits"] == 4  # no encode at all the second time
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - plain.astype(int)).max() <= 1


def test_head_change_invalidates(tiny_components, pahi_head):
    from helpers import random_head

    other = random_head("pahi", seed=99)
    cache = PromptCache()
    _pipeline(tiny_components, pahi_head, cache)(PROMPTS[:2], [1, 2])
    assert cache.stats()["misses"] == 2
    out = _pipeline(tiny_components, other, cache)(PROMPTS[:2], [1, 2])
    stats = cache.stats()
    assert stats["hits"] == 0 and stats["misses"] == 4 and stats["entries"] == 4
    plain = _pipeline(tiny_components, other)(PROMPTS[:2], [1, 2])
    assert np.abs(out.astype(int) - plain.astype(int)).max() <= 1
    gauss = _pipeline(tiny_components, None, cache, mode="gaussian-1step")
    gauss(PROMPTS[:2], [1, 2])
    assert cache.stats()["misses"] == 6  # gaussian rows have their own key too


def test_artifact_backend_runs_its_head_graph(tiny_artifacts, tiny_components, pahi_head):
    from pahi_rt.runtime.ort_backend import OrtBackend

    model = LoadedModel(tiny_components, {"pahi": pahi_head}, "cpu", None)
    config = PipelineConfig(backend="onnxruntime", mode=MODES["pahi-1step"],
                            shape=RenderShape(batch=2, height=64, width=64))
    backend = OrtBackend(config.run_config(), tiny_artifacts.directory, tiny_components.spec)
    plain = Pipeline(model, backend, config)(PROMPTS, [1, 2, 3])
    cache = PromptCache()
    cached = Pipeline(model, backend, config, prompt_cache=cache)
    cached(PROMPTS, [1, 2, 3])
    out = cached(PROMPTS, [1, 2, 3])
    assert cache.stats()["hits"] == 4 and cache.get(("x",)) is None
    assert np.abs(out.astype(int) - plain.astype(int)).max() <= 1
