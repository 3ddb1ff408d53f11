"""Fused prompt->image graphs composed from the exported component graphs, not traced again.

    input_ids -> text_encoder -> [head(eps)] -> step_in_i -> unet -> step_out_i (x steps)
              -> decoder -> to_image -> image (uint8 NHWC)

The components are loaded without their weights; their initializers keep pointing at the
components' own `NAME.onnx.data` files, so a fused graph is a few MB of structure and the
weights exist once on disk. In a two-step graph both UNet calls use the same initializers.
The glue between components is traced from `pahi_rt.sampling` itself (`model_input`,
`euler_step`, `to_uint8`) with the schedule's numbers from `specs`, so a fused graph computes
exactly what the staged path computes. Names are kept apart with `onnx.compose.add_prefix_graph`:
each component's initializers get the component's prefix once, each use of a component gets
its own prefix for nodes and edges.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import torch
from torch import nn

from .. import sampling
from ..errors import require
from ..io import atomic_write
from ..specs import GRAPHS, NAMES, Mode
from .onnx_export import OPSET, io_signature

# glue edge names (local to each glue graph; torch renames an input that shares an output's
# name); the UNet's prediction and timestep keep their graph names
LATENT, X, X_NEXT, E, T = "latent", "x", "x_next", NAMES.noise_pred, NAMES.timestep


class StepIn(nn.Module):
    """Step i's inputs from the latent: (x, model_input(x, sigma_i), timestep [B]). Step 0 takes
    the unit-scale noise and scales it by the initial sigma first."""

    def __init__(self, scale: float, sigma: float, timestep: float):
        super().__init__()
        self.scale, self.sigma, self.timestep = scale, sigma, timestep

    def forward(self, x):
        x = x * self.scale if self.scale != 1.0 else x
        t = torch.full_like(x[:, 0, 0, 0], self.timestep)
        return x, sampling.model_input(x, self.sigma), t


class StepOut(nn.Module):
    """The Euler update after step i's UNet call (`sampling.euler_step`, float32)."""

    def __init__(self, sigma: float, sigma_next: float, prediction_type: str):
        super().__init__()
        self.sigma, self.sigma_next, self.prediction_type = sigma, sigma_next, prediction_type

    def forward(self, x, e):
        return sampling.euler_step(x, e, self.sigma, self.sigma_next, self.prediction_type)


class PerImage(nn.Module):
    """A constant row [1, ...] repeated to the latent's batch [B, ...]: the conditioning the
    host makes (`conditioning.host_conditioning`, SDXL's time_ids at the exported size)."""

    def __init__(self, row: torch.Tensor):
        super().__init__()
        self.register_buffer("row", row)

    def forward(self, x):
        return x[:, :1, 0, 0] * 0.0 + self.row  # not folded away: the batch stays the input's


class ToImage(nn.Module):
    """Decoder output [-1, 1] NCHW -> uint8 NHWC (`sampling.to_uint8`)."""

    def forward(self, image):
        return sampling.to_uint8(image)


def glue_graph(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str],
               dynamic_batch: bool):
    """Trace a weightless glue module to an onnx GraphProto (in memory; it is tiny)."""
    onnx = require("onnx", "onnx")
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, args, buf, input_names=inputs, output_names=outputs,
                          opset_version=OPSET, dynamo=False, dynamic_axes={
                              n: {0: "batch"} for n in inputs + outputs} if dynamic_batch else None)
    return onnx.load_from_string(buf.getvalue()).graph


class Composer:
    """Collects nodes and initializers of placed graphs into one graph."""

    def __init__(self):
        self.nodes, self.initializers, self.value_info, self.outputs = [], {}, [], {}

    def place(self, graph, prefix: str, inputs: dict[str, str]) -> dict[str, str]:
        """Add a copy of `graph` whose inputs read the edges in `inputs` (graph input name ->
        edge); returns graph output name -> edge. Initializers already placed under the same
        name (a component used twice) are shared, not copied."""
        from onnx.compose import add_prefix_graph

        placed = add_prefix_graph(graph, prefix, rename_initializers=False)
        rename = {prefix + name: edge for name, edge in inputs.items()}
        unbound = [i.name for i in placed.input if i.name not in rename]
        if unbound:
            raise ValueError(f"{prefix}: unbound graph inputs {unbound}")
        for node in placed.node:
            for i, name in enumerate(node.input):
                node.input[i] = rename.get(name, name)
            self.nodes.append(node)
        for t in placed.initializer:
            self.initializers.setdefault(t.name, t)
        self.value_info.extend(v for v in placed.value_info if v.name not in rename)
        self.outputs.update({o.name: o for o in placed.output})
        return {o.name[len(prefix):]: o.name for o in placed.output}

    def model(self, inputs: list, output_edge: str, name: str, like):
        """The ModelProto: graph `inputs` (ValueInfos), the edge `output_edge` as the graph
        output `image`, opset and IR version of the component model `like`."""
        onnx = require("onnx", "onnx")
        for node in self.nodes:
            node.output[:] = [NAMES.image if o == output_edge else o for o in node.output]
        out = type(self.outputs[output_edge])()
        out.CopyFrom(self.outputs[output_edge])
        out.name = NAMES.image
        graph = onnx.helper.make_graph(self.nodes, name, inputs, [out],
                                       list(self.initializers.values()),
                                       value_info=self.value_info)
        model = onnx.helper.make_model(graph, opset_imports=like.opset_import,
                                       producer_name="pahi-rt compose")
        model.ir_version = like.ir_version
        return model


def with_initializer_prefix(graph, prefix: str):
    """A copy of a component graph with its initializers (and their uses) renamed once."""
    from onnx.compose import add_prefix_graph

    return add_prefix_graph(graph, prefix, rename_nodes=False, rename_edges=False,
                            rename_inputs=False, rename_outputs=False, rename_initializers=True,
                            rename_value_infos=False)


def compose(directory: Path, mode: Mode, schedule: sampling.Schedule, graphs: dict[str, str],
            dynamic_batch: bool = False, host: dict | None = None):
    """The fused graph of `mode` from the component graph files in `directory` (`graphs`: name
    -> file name); returns the ModelProto (structure only, weights stay in the data files).
    The UNet reads every text encoder output by name, and `host` (name -> one image's row
    [1, ...], from `conditioning.host_conditioning`) as constants repeated to the batch.
    Euler-ancestral at 2+ steps is refused (no graph input carries its step noise)."""
    onnx = require("onnx", "onnx")
    if schedule.ancestral and mode.steps > 1:
        raise ValueError(f"{mode.name}: Euler-ancestral at 2+ steps is not composed")
    models = {name: onnx.load(str(directory / file), load_external_data=False)
              for name, file in graphs.items()}
    comps = {name: with_initializer_prefix(m.graph, f"{name}/") for name, m in models.items()}
    c = Composer()
    text = c.place(comps[GRAPHS.text_encoder], "te/", {NAMES.input_ids: NAMES.input_ids})
    x = NAMES.eps
    if mode.noise != "gaussian":
        x = c.place(comps[GRAPHS.head], "head/", {
            NAMES.eps: NAMES.eps, NAMES.text_embeddings: text[NAMES.text_embeddings]})[NAMES.noise]
    latent = _example(comps[GRAPHS.unet], NAMES.sample)
    for name, row in (host or {}).items():
        text[name] = c.place(glue_graph(PerImage(row), (latent,), [LATENT], [name],
                                        dynamic_batch), f"host_{name}/", {LATENT: x})[name]
    for i in range(mode.steps):
        sigma, sigma_next = schedule.sigmas[i], schedule.sigmas[i + 1]
        step_in = glue_graph(StepIn(schedule.init_sigma if i == 0 else 1.0, sigma,
                                    schedule.timesteps[i]), (latent,), [LATENT],
                             [X, NAMES.sample, T], dynamic_batch)
        got = c.place(step_in, f"in{i}/", {LATENT: x})
        e = c.place(comps[GRAPHS.unet], f"unet{i}/", {
            NAMES.sample: got[NAMES.sample], NAMES.timestep: got[T], **text})[NAMES.noise_pred]
        step_out = glue_graph(StepOut(sigma, sigma_next, schedule.prediction_type),
                              (latent, latent), [X, E], [X_NEXT], dynamic_batch)
        x = c.place(step_out, f"out{i}/", {X: got[X], E: e})[X_NEXT]
    image = c.place(comps[GRAPHS.decoder], "dec/", {NAMES.latents: x})[NAMES.image]
    to_image = glue_graph(ToImage(), (_example(models[GRAPHS.decoder].graph, NAMES.image,
                                               output=True),), ["decoded"], [NAMES.image],
                          dynamic_batch)
    out = c.place(to_image, "img/", {"decoded": image})[NAMES.image]
    ids = next(i for i in comps[GRAPHS.text_encoder].input if i.name == NAMES.input_ids)
    eps = type(ids)()
    eps.CopyFrom(next(i for i in comps[GRAPHS.unet].input if i.name == NAMES.sample))
    eps.name = NAMES.eps
    return c.model([ids, eps], out, mode.name, models[GRAPHS.text_encoder])


def _example(graph, name: str, output: bool = False) -> torch.Tensor:
    """A random float tensor shaped like graph input (or output) `name` (free dims -> 1)."""
    values = graph.output if output else graph.input
    dims = [d.dim_value or 1 for d in next(
        v for v in values if v.name == name).type.tensor_type.shape.dim]
    return torch.randn(dims, generator=torch.Generator().manual_seed(0))


def compose_graph(directory: Path, mode: Mode, schedule: sampling.Schedule,
                  graphs: dict[str, str], path: Path, dynamic_batch: bool = False,
                  host: dict | None = None) -> dict:
    """Compose `mode`'s fused graph and save it atomically as `path` (beside the components,
    whose data files it refers to); returns facts for the manifest."""
    onnx = require("onnx", "onnx")
    t0 = time.perf_counter()
    model = compose(directory, mode, schedule, graphs, dynamic_batch, host)

    def write(tmp: Path) -> None:  # beside the components: relative data paths resolve
        onnx.save_model(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=False)
    atomic_write(path, write)
    return {"external_data": None, "seconds": round(time.perf_counter() - t0, 2),
            "opset": OPSET, "exporter": "pahi-rt compose (component graphs + traced glue)",
            "cleanup": "none (components are cleaned)", "io": io_signature(model)}
