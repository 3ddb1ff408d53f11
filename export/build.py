"""What an export builds: its options, the graphs it plans, and each ONNX graph's content key.

The key hashes what the graph is built from (`pahi_rt.artifacts.keys.source_hashes`: weights,
configs, code version, tool versions) and the options (`keys.options_key`: shapes, precision).
An artifact is reused only when its key matches and its files still have the recorded sha256.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..artifacts.keys import options_key
from ..errors import InputError
from ..io import sha256_json
from ..specs import MODES, RenderShape, ShapeFields, component_graphs, fused_graph
from . import graphs
from .engine import BuildOptions
from .onnx_export import PRECISIONS

MAX_EXPORT_BATCH = 256  # images per graph call; serve --max-batch has the same limit


@dataclass(frozen=True)
class ExportOptions(ShapeFields):
    """Shape, precision and which engines to build. Static shapes unless max_batch > batch; a
    None size in `shape` is the model's (`export_artifacts` fills it in)."""

    shape: RenderShape = RenderShape()
    max_batch: int = 0  # > batch: dynamic batch axis and an optimisation profile 1..max_batch
    graphs: tuple[str, ...] = ()  # graph names to export (empty: all of `graph_plan`)
    engines: tuple[str, ...] = ()  # graph names to build engines for (empty: none)
    build: BuildOptions = field(default_factory=BuildOptions)

    def check(self) -> "ExportOptions":
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.batch < 1 or (self.max_batch and self.max_batch < self.batch):
            raise InputError("--batch must be >= 1 and --max-batch >= --batch")
        if max(self.batch, self.max_batch or 0) > MAX_EXPORT_BATCH:
            raise InputError(f"--batch and --max-batch must be at most {MAX_EXPORT_BATCH} "
                             "(serve's largest batch)")
        return self


def graph_plan(head=None, only: tuple[str, ...] = (), spec=None) -> list[tuple[str, int]]:
    """(graph name, Euler steps) of the graphs exported for a model `spec` (None: SD 2.x's):
    components, then the fused modes (composed from the components, so asking for a fused
    graph brings its components); `specs.fused_graph` says which modes have one."""
    # the largest first: an export that consumes its components frees each after its graph
    plan = [(graphs.UNET, 1), (graphs.TEXT_ENCODER, 1), (graphs.DECODER, 1)]
    fused = [m for m in MODES.values() if (m.noise == "gaussian" or (
        head is not None and m.noise == head.config.kind)) and fused_graph(m, spec)]
    if head is not None:
        plan.append((graphs.HEAD, 1))
    plan += [(m.name, m.steps) for m in fused]
    staged = [n for n in only if n in MODES and not fused_graph(MODES[n], spec)]
    if staged:
        raise InputError(f"--graph {staged[0]}: Euler-ancestral at 2+ steps has no fused graph "
                         "(its step noise comes from the seed on the host); it runs staged on "
                         "the component graphs")
    unknown = set(only) - {name for name, _ in plan}
    if unknown:
        raise InputError(f"--graph {', '.join(sorted(unknown))}: not one of "
                         f"{', '.join(name for name, _ in plan)}")
    wanted = set(only)
    for name in only:
        if name in MODES:
            wanted.update(component_graphs(MODES[name]))
    return [(name, steps) for name, steps in plan if not only or name in wanted]


_USES = {graphs.TEXT_ENCODER: ("text_encoder", "text_encoder_2"), graphs.UNET: ("unet",),
         graphs.DECODER: ("decoder",), graphs.HEAD: ("head", "head_config")}


def onnx_key(name: str, steps: int, sources: dict, options: ExportOptions) -> str:
    used = _USES.get(name, ("text_encoder", "text_encoder_2", "unet", "decoder", "head",
                            "head_config"))
    if name in MODES and MODES[name].noise == "gaussian":
        used = ("text_encoder", "text_encoder_2", "unet", "decoder")
    used = tuple(k for k in used if k != "text_encoder_2" or k in sources)  # SD 2.x: as before
    return sha256_json({"graph": name, "steps": steps, "code": sources["code"],
                        "tools": sources["tools"], "spec": sources["model_spec"],
                        "weights": {k: sources.get(k) for k in used},
                        "options": options_key(options)})
