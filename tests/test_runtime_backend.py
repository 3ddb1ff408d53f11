"""The backend protocol: a lifecycle (context managers that release what they hold, refusal
after close), every graph output by name, and public methods that check their inputs."""
from __future__ import annotations

import gc
import hashlib
import json
import shutil
import weakref

import numpy as np
import pytest
import torch

from pahi_rt import sampling
from pahi_rt.errors import BackendError, InputError
from pahi_rt.runtime.backend import RunConfig
from pahi_rt.runtime.ort_backend import OrtBackend
from pahi_rt.runtime.torch_backend import TorchBackend
from pahi_rt.specs import GRAPHS, MODES, NAMES, RenderShape

PROMPTS, SEEDS = ["a red fox in the snow", "an astronaut riding a horse"], [5, 6]


def _inputs(comps):
    ids = sampling.tokenize(comps.tokenizer, PROMPTS).numpy()
    return ids, sampling.draw_eps(SEEDS, comps.spec.latent_shape(64, 64)).numpy()


def _config(mode="gaussian-1step"):
    return RunConfig(MODES[mode], RenderShape(batch=2, height=64, width=64))


def test_torch_backend_closes_and_refuses_after(tiny_components, pahi_head):
    ids, eps = _inputs(tiny_components)
    with TorchBackend(_config("pahi-1step"), tiny_components, pahi_head) as backend:
        head = weakref.ref(backend.noise_source)
        assert backend.run(ids, eps).shape == (2, 64, 64, 3)
    assert backend.closed and backend.comps is None and backend.noise_source is None
    del pahi_head  # the fixture keeps its own reference: only the backend's one is gone
    assert head() is not None
    backend.close()  # idempotent
    for call in (lambda: backend.run(ids, eps), lambda: backend.encode_text(ids)):
        with pytest.raises(BackendError, match="torch backend was closed"):
            call()
    with pytest.raises(BackendError, match="closed"):
        backend.__enter__()


def test_with_releases_on_exceptions(tiny_components):
    from pahi_rt.runtime.pipeline import LoadedModel, Pipeline, PipelineConfig

    model = LoadedModel(tiny_components, {}, "cpu", None)
    model.cache["onnxruntime"] = {"a session": object()}
    pipe = Pipeline(model, TorchBackend(_config(), tiny_components),
                    PipelineConfig(shape=RenderShape(height=64, width=64)))
    with pytest.raises(RuntimeError, match="boom"):
        with model, pipe:
            assert pipe(PROMPTS[:1], [0]).shape == (1, 64, 64, 3)
            raise RuntimeError("boom")
    assert pipe.closed and pipe.backend.comps is None and model.cache == {}
    with pytest.raises(BackendError, match="closed"):
        pipe(PROMPTS[:1], [0])


def test_ort_session_released_on_close(tiny_artifacts, tiny_components):
    ids, eps = _inputs(tiny_components)
    backend = OrtBackend(_config(), tiny_artifacts.directory, tiny_components.spec, "cpu",
                         fused=False)
    with pytest.raises(KeyError):
        with backend:
            backend.run(ids, eps)
            session = weakref.ref(backend.session(GRAPHS.unet))
            raise KeyError("any error")
    gc.collect()
    assert backend._sessions == {} and backend.shared == {} and session() is None
    with pytest.raises(BackendError, match="onnxruntime backend was closed"):
        backend.infer(GRAPHS.decoder, {})
    with pytest.raises(BackendError, match="closed"):
        backend.run(ids, eps)


def test_shared_sessions_stay_with_the_model(tiny_artifacts, tiny_components):
    shared: dict = {}
    ids, eps = _inputs(tiny_components)
    first = OrtBackend(_config(), tiny_artifacts.directory, tiny_components.spec,
                       sessions=shared, fused=False)
    first.run(ids, eps)
    first.close()
    assert shared, "sessions other pipelines of the model share outlive one pipeline"
    with OrtBackend(_config(), tiny_artifacts.directory, tiny_components.spec,
                    sessions=shared, fused=False) as second:
        second.run(ids, eps)


def test_torch_encode_text_returns_outputs_by_name(tiny_components):
    ids, _ = _inputs(tiny_components)
    out = TorchBackend(_config(), tiny_components).encode_text(ids)
    assert set(out) == {NAMES.text_embeddings}
    with torch.no_grad():
        ref = sampling.encode_text(tiny_components.text_encoder, torch.from_numpy(ids))
    assert torch.equal(out[NAMES.text_embeddings], ref)


def _two_output_text_encoder(source, out_dir, extra: str):
    """A copy of the exported text encoder that also returns its hidden states before the
    final layer norm (as SDXL's text encoders return hidden states and pooled embeddings)."""
    import onnx

    manifest = json.loads((source / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"]
                 if e["graph"] == GRAPHS.text_encoder and e["kind"] == "onnx")
    model = onnx.load(str(source / entry["path"]), load_external_data=False)
    for rel, _ in [(entry.get("external_data"), None)] + entry.get("depends", []):
        if rel:  # the weights stay in their files, which the graph names
            shutil.copy(source / rel, out_dir / rel)
    final_norm = [n for n in model.graph.node if n.op_type == "LayerNormalization"][-1]
    model.graph.node.append(onnx.helper.make_node("Identity", [final_norm.input[0]], [extra]))
    model.graph.output.append(onnx.helper.make_tensor_value_info(
        extra, onnx.TensorProto.FLOAT, None))
    path = out_dir / entry["path"]
    onnx.save(model, str(path))
    entry.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                 size_bytes=path.stat().st_size)
    manifest["artifacts"] = [entry]
    (out_dir / "manifest.json").write_text(json.dumps(manifest))


def test_ort_returns_every_output_by_name(tmp_path, tiny_artifacts, tiny_components):
    extra = "hidden_states_before_norm"  # a test graph's name, not one the package uses
    _two_output_text_encoder(tiny_artifacts.directory, tmp_path, extra)
    ids, _ = _inputs(tiny_components)
    with OrtBackend(_config(), tmp_path, tiny_components.spec, "cpu", fused=False) as backend:
        out = backend.encode_text(ids)
    assert set(out) == {NAMES.text_embeddings, extra}
    with torch.no_grad():
        ref = sampling.encode_text(tiny_components.text_encoder, torch.from_numpy(ids))
    torch.testing.assert_close(out[NAMES.text_embeddings], ref, atol=1e-4, rtol=1e-4)
    assert out[extra].shape == ref.shape and not torch.allclose(out[extra], ref, atol=1e-2)


def test_public_methods_check_inputs(tiny_artifacts, tiny_components):
    ids, eps = _inputs(tiny_components)
    torch_backend = TorchBackend(_config(), tiny_components)
    ort = OrtBackend(_config(), tiny_artifacts.directory, tiny_components.spec, fused=False)
    text = torch_backend.encode_text(ids)
    x = torch.zeros(2, *tiny_components.spec.latent_shape(64, 64))
    bad = [("encode_text", (ids[:, :10],), "token ids must be integers"),
           ("encode_text", (ids.astype(np.float32),), "token ids must be"),
           ("encode_text", (np.concatenate([ids, ids]),), "batch 4 outside"),
           ("make_noise", (eps[:, :2], text), "eps must be float"),
           ("make_noise", (eps, text[NAMES.text_embeddings]), "by name"),
           ("make_noise", (eps[:1], text), "has batch 2, the run 1"),
           ("unet_step", (1, x, text), "step index must be 0..0"),
           ("unet_step", (0, x.long(), text), "x must be a float tensor"),
           ("decode", (x[:, :, :4],), "latents must be a float tensor"),
           ("run", (ids, eps[:1]), "2 token id rows but 1 eps rows")]
    for backend in (torch_backend, ort):
        for method, args, message in bad:
            with pytest.raises(InputError, match=message) as caught:
                getattr(backend, method)(*args)
            assert "\n" not in str(caught.value) and backend.name in str(caught.value)
    with pytest.raises(InputError, match="graph 'unet' takes sample, timestep"):
        ort.infer(GRAPHS.unet, {NAMES.sample: x})
    with pytest.raises(InputError, match=r"decoder input latents must be \[2, 4, 8, 8\]"):
        ort.infer(GRAPHS.decoder, {NAMES.latents: x[:, :, :4]})
    if torch.cuda.is_available():
        with pytest.raises(InputError, match="is on cuda"):
            torch_backend.decode(x.cuda())


def test_openvino_backend_closes(tiny_artifacts, tiny_components, tmp_path):
    pytest.importorskip("openvino")
    from pahi_rt.runtime.ov_backend import OpenVinoBackend

    directory = tmp_path / "artifacts"  # OpenVINO writes its model cache beside the graphs
    shutil.copytree(tiny_artifacts.directory, directory)
    ids, _ = _inputs(tiny_components)
    with OpenVinoBackend(_config(), directory, tiny_components.spec, threads=1) as backend:
        out = backend.encode_text(ids)
        compiled = weakref.ref(next(iter(backend.shared.values())))
    assert set(out) == {NAMES.text_embeddings} and backend._requests == {}
    gc.collect()
    assert compiled() is None
    with pytest.raises(BackendError, match="openvino backend was closed"):
        backend.encode_text(ids)
