"""What a run asks for when its artifacts are not there yet: the seam between the runtime, which
only reads artifacts, and the exporter, which the command layer passes in.

    directory = cache_dir(sources, request)           # pahi_rt.artifacts.cache
    exporter(request)                                 # pahi_rt.export.first_use.export_on_first_use
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..specs import RenderShape, ShapeFields


@dataclass(frozen=True)
class ExportRequest(ShapeFields):
    """Graphs (and engines) a run needs in `directory`, at `shape` (sized: no None height or
    width; precision fp32 | fp16), exported from `components` (fp32 CPU, what exports trace)
    and `head` (None: no head graph)."""

    components: Any  # pahi_rt.components.Components
    head: Any  # a NoiseHead or None
    head_source: str | None  # the --head directory (manifest metadata)
    sources: dict  # keys.source_hashes(components, head), computed once by the caller
    directory: Path
    graphs: tuple[str, ...]
    shape: RenderShape
    engines: tuple[str, ...] = ()  # graphs to build TensorRT engines for
    max_batch: int = 0  # the runtime exports static shapes
    targets: tuple[str, ...] = ("current",)  # engines built on first use run on this GPU


# Export what `request` names into `request.directory` (reusing what is intact); progress lines
# go to the callable passed second. `pahi_rt.export.first_use.export_on_first_use` is one.
Exporter = Callable[[ExportRequest, Callable[[str], None]], object]
