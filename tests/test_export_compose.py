"""Fused graphs composed from the component graphs: same pixels as tracing the whole sampler,
as the staged path and as torch; weights stored once and shared."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pahi_rt import sampling
from pahi_rt.artifacts import manifest as mf
from pahi_rt.export.graphs import graph_spec
from pahi_rt.export.onnx_export import export_graph
from pahi_rt.runtime.backend import RunConfig, null_timer
from pahi_rt.runtime.ort_backend import OrtBackend
from pahi_rt.runtime.torch_backend import TorchBackend
from pahi_rt.specs import MODES, NAMES, RenderShape

from helpers import traced_fused_graph

PROMPTS, SEEDS = ["a red fox in the snow", "an astronaut riding a horse"], [11, 12]


def _inputs(comps):
    ids = sampling.tokenize(comps.tokenizer, PROMPTS).numpy()
    return ids, sampling.draw_eps(SEEDS, comps.spec.latent_shape(64, 64)).numpy()


@pytest.mark.parametrize("mode", ["pahi-1step", "gaussian-1step", "gaussian-2step"])
def test_composed_equals_traced_staged_and_torch(tiny_artifacts, tiny_components, pahi_head,
                                                 tmp_path, mode):
    comps, m = tiny_components, MODES[mode]
    head = pahi_head if m.noise == "pahi" else None
    ids, eps = _inputs(comps)
    traced_path = tmp_path / "traced.onnx"
    export_graph(traced_fused_graph(comps, m.steps, head),
                 (torch.from_numpy(ids), torch.from_numpy(eps)), graph_spec(mode), traced_path)
    traced = ort.InferenceSession(str(traced_path), providers=["CPUExecutionProvider"]).run(
        None, {NAMES.input_ids: ids, NAMES.eps: eps})[0]
    backend = OrtBackend(RunConfig(m, RenderShape(2, 64, 64)), tiny_artifacts.directory,
                         comps.spec, "cpu")
    assert backend.fused
    composed = backend.run(ids, eps)
    staged = backend.run_staged(ids, eps, null_timer)
    reference = TorchBackend(RunConfig(m, RenderShape(2, 64, 64)), comps,
                             head or sampling.gaussian).run(ids, eps)
    assert reference.std() > 20, "images need contrast for the comparison to mean anything"
    for other in (traced, staged, reference):
        assert np.abs(composed.astype(int) - other.astype(int)).max() <= 1


def _external(model) -> list[tuple[str, str, str]]:
    return [(info["location"], info["offset"], t.name) for t in model.graph.initializer
            if (info := {e.key: e.value for e in t.external_data})]


@pytest.mark.parametrize("which", ["tiny_artifacts", "tiny_artifacts_fp16"])
def test_fused_graphs_hold_no_copy_of_the_weights(request, which):
    report = request.getfixturevalue(which)
    directory, manifest = report.directory, mf.read_manifest(report.directory)
    component_data = {e["external_data"] for e in manifest["artifacts"]
                      if e["kind"] == "onnx" and e["graph"] not in MODES and e["external_data"]}
    for mode in ("pahi-1step", "gaussian-1step", "gaussian-2step"):
        entry = mf.find_artifact(manifest, mode, "onnx")
        model = onnx.load(str(directory / entry["path"]), load_external_data=False)
        refs = _external(model)
        assert refs and {loc for loc, _, _ in refs} <= component_data
        places = [(loc, off) for loc, off, _ in refs]
        assert len(places) == len(set(places)), "each stored tensor is referenced once"
        inline = sum(len(t.raw_data) for t in model.graph.initializer)
        assert inline < 64 << 10, f"{mode}: {inline} bytes of weights inside the fused graph"
        assert {d for d, _ in entry["depends"]} == {loc for loc, _, _ in refs}


def test_fused_graphs_follow_the_umask(tiny_artifacts):
    """The composed .onnx is written through a temp file (mkstemp: 0600), then given the mode a
    plain open() gives, like every other artifact (issue 19 item 10)."""
    mask = os.umask(0)
    os.umask(mask)
    fused = [p for p in tiny_artifacts.directory.glob("*-*step.onnx")]
    assert fused and {p.stat().st_mode & 0o777 for p in fused} == {0o666 & ~mask}
    assert (tiny_artifacts.directory / "unet.onnx").stat().st_mode & 0o777 == 0o666 & ~mask


def test_two_step_graph_shares_the_unet_initializers(tiny_artifacts):
    directory = tiny_artifacts.directory
    unet = onnx.load(str(directory / "unet.onnx"), load_external_data=False)
    fused = onnx.load(str(directory / "gaussian-2step.onnx"), load_external_data=False)
    unet_refs = [r for r in _external(fused) if r[0] == "unet.onnx.data"]
    assert len(unet_refs) == len(_external(unet))  # once, though the UNet runs twice
    calls = [n for n in fused.graph.node if n.name.startswith(("unet0/", "unet1/"))]
    used = {i for n in calls for i in n.input}
    assert {name for _, _, name in unet_refs} <= used
    assert {n.name.split("/")[0] for n in calls} == {"unet0", "unet1"}


def test_fused_graph_is_refused_when_a_component_is_corrupt(tiny_artifacts, tmp_path):
    import shutil

    from pahi_rt.errors import ArtifactError

    out = tmp_path / "a"
    shutil.copytree(tiny_artifacts.directory, out)
    data = out / "unet.onnx.data"
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(ArtifactError, match="corrupt"):
        mf.verified_artifact(out, "gaussian-1step", "onnx")
