"""What a model replica (`model.ImageModel`) renders with: one pipeline per (noise, steps, height,
width) it serves, and the head they use. A new head in the watched `--head` directory gives a
new Generation; requests hold the one they started with, so requests in flight finish on the old
head and new ones use the new (gaussian pipelines are shared between generations)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .schema import ServeSettings

Key = tuple[str, int, int, int]  # (noise, steps, height, width)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (batch grouping)
class Generation:
    pipes: dict
    head_key: str | None  # content key of the head (checkpoint.head_key); None: no head
    prompt_cache: object = None  # runtime.prompt_cache.PromptCache shared by the pipelines

    def key_of(self, noise: str) -> str:
        return "none" if noise == "gaussian" or self.head_key is None else self.head_key

    def close(self) -> None:
        """Close every pipeline (replica shutdown). A head reload does not: requests in flight
        still render on the old generation, whose head pipelines are freed with it."""
        for pipe in self.pipes.values():
            pipe.close()


def served_keys(s: ServeSettings) -> list[Key]:
    """Every pipeline a replica opens. A head is trained for one size: its noise is served at
    the default size only; gaussian at every size."""
    sizes = list(dict.fromkeys([(s.height, s.width), *s.more_sizes]))
    return [(noise, steps, h, w) for noise in s.noises for steps in s.step_list
            for h, w in (sizes if noise == "gaussian" else sizes[:1])]


def open_generation(model, s: ServeSettings, old: Generation | None = None,
                    head_key: str | None = None, prompt_cache=None) -> Generation:
    """Open the pipelines of every served key (gaussian ones reused from `old`, whose prompt
    cache is kept: its keys hold the head's content key, so old entries never meet the new
    head)."""
    from ..export.first_use import export_on_first_use
    from ..runtime.pipeline import PipelineConfig, open_pipeline
    from ..specs import RenderShape, parse_mode

    artifacts = Path(s.artifacts) if s.artifacts else None
    cache = old.prompt_cache if old is not None else prompt_cache
    pipes = {}
    for key in served_keys(s):
        noise, steps, h, w = key
        if old is not None and noise == "gaussian" and key in old.pipes:
            pipes[key] = old.pipes[key]
            continue
        pipes[key] = open_pipeline(model, PipelineConfig(
            backend=s.backend, mode=parse_mode(noise, steps),
            shape=RenderShape(batch=s.max_batch, height=h, width=w, precision=s.precision),
            artifacts=artifacts), export=export_on_first_use)
        pipes[key].prompt_cache = None if pipes[key].fused else cache
    return Generation(pipes, head_key or _head_key(s.head), cache)


def _head_key(head: str | None) -> str | None:
    from ..heads.checkpoint import head_key

    return head_key(head) if head else None


class HeadWatch:
    """Notices a changed head checkpoint in `directory` (file sizes and mtimes, cheap to poll);
    `reload` loads it into `model` and opens a new Generation when its content key changed."""

    def __init__(self, directory: str):
        self.directory = Path(directory)
        self.stamp = self._stamp()

    def _stamp(self):
        from ..heads.checkpoint import CONFIG, WEIGHTS

        try:
            return tuple((st.st_size, st.st_mtime_ns) for st in
                         (self.directory.joinpath(f).stat() for f in (WEIGHTS, CONFIG)))
        except OSError:
            return None

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp is None or stamp == self.stamp:
            return False
        self.stamp = stamp
        return True

    def reload(self, model, s: ServeSettings, old: Generation) -> Generation | None:
        """A Generation for the head now in the directory, or None when its key is unchanged.
        Raises what load_head raises (a head that does not fit keeps the old one serving)."""
        from ..heads.checkpoint import load_head

        key = _head_key(s.head)
        if key == old.head_key:
            return None
        heads = {kind: load_head(s.head, model.spec, s.height, s.width, expect_mode=kind)
                 for kind in model.heads}
        model.heads.update(heads)  # built pipelines hold their own copy of the old head
        model._sources = None  # artifact backends: the graphs' content keys change
        return open_generation(model, s, old, key)
