"""The exporter a run is handed for exporting on first use (`pahi_rt.artifacts.first_use`):
the command layer passes `export_on_first_use` to `runtime.pipeline.open_pipeline`, so the
runtime reads artifacts without importing the exporter."""
from __future__ import annotations

from typing import Callable

from ..artifacts.first_use import ExportRequest
from .artifacts import ExportReport, export_artifacts
from .build import ExportOptions
from .engine import BuildOptions


def export_on_first_use(request: ExportRequest, log: Callable[[str], None] = lambda m: None
                        ) -> ExportReport:
    """Export `request.graphs` (and engines for `request.engines`) into `request.directory`,
    reusing every artifact whose key and sha256 still match; progress lines go to `log`."""
    options = ExportOptions(shape=request.shape, max_batch=request.max_batch,
                            graphs=request.graphs, engines=request.engines,
                            build=BuildOptions(targets=request.targets))
    return export_artifacts(request.components, request.directory, options, request.head,
                            request.head_source, progress=log, sources=request.sources)
