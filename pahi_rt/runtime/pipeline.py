"""The one place a prompt->image pipeline is opened; generate, bench and serve call it.

    with load_model("synthetic", device="cuda", head="runs/pahi") as model:      # once
        config = PipelineConfig(backend="onnxruntime", mode=MODES["pahi-1step"],
                                shape=RenderShape(batch=4))          # the model's size
        with open_pipeline(model, config, export=export_on_first_use) as pipe:  # export.first_use
            images = pipe(prompts, seeds)                            # uint8 [B, H, W, 3]

`load_model` keeps the fp32 CPU weights that exports are traced from and hashes them once;
`open_pipeline` checks the backend/device/precision/mode combination, exports into the
content-keyed cache on first use when no artifact directory is given (with the exporter its
caller passes in: the runtime reads artifacts through `pahi_rt.artifacts` and imports nothing
from `pahi_rt.export`), and builds the backend.
`Pipeline.inputs` is the one definition of the host inputs (token ids and fp32 eps drawn from
the seeds), so every backend and every caller renders the same image for a seed. Pipelines and
loaded models are context managers: leaving the `with` (an exception included) or `close()`
releases the backend's sessions/engines/graphs (pipeline) or what its pipelines share (model).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import sampling
from ..artifacts.first_use import Exporter, ExportRequest
from ..errors import ArtifactError, InputError
from ..specs import (BACKENDS, GRAPHS, MODES, PRECISIONS, SEED_MAX, Mode,  # noqa: F401
                     RenderShape, ShapeFields, check_seeds, component_graphs, fused_graph)
from .backend import Backend, Closing, RunConfig, Timer
from .config_check import check_config

Log = Callable[[str], None]


@dataclass(frozen=True)
class PipelineConfig(ShapeFields):
    """What to run: backend, mode, shapes, precision, and where artifacts come from."""

    backend: str = "torch"  # torch | onnxruntime | tensorrt | openvino
    mode: Mode = MODES["gaussian-1step"]
    # precision: fp32 | fp16 | bf16 (torch, openvino) | int8 (openvino); a None size: the model's
    shape: RenderShape = RenderShape()
    artifacts: Path | None = None  # exported dir; None: export into the cache on first use
    fused: bool = True  # artifact backends: one fused graph/engine per call when the mode has one
    compile: bool = False  # torch: torch.compile, and CUDA-graph replay on a GPU
    calibration: tuple[str, ...] | None = None  # openvino int8: calibration prompts

    @property
    def export_precision(self) -> str:
        """Precision of the exported graphs: OpenVINO compiles fp32 graphs at any precision."""
        return "fp32" if self.backend == "openvino" else self.precision

    def run_config(self) -> RunConfig:
        return RunConfig(self.mode, self.shape)


class LoadedModel(Closing):
    """A model loaded once: fp32 CPU components (what exports trace), the heads it serves, the
    device it runs on, and its content hashes (computed once)."""

    def __init__(self, components, heads: dict, device: torch.device, head_path: str | None,
                 keep_fp32: bool = True):
        self.base, self.heads, self.device = components, heads, torch.device(device)
        self.head_path = head_path  # metadata: the --head the heads came from
        self.keep_fp32 = keep_fp32  # False: the torch path may convert `base` in place
        self.cache: dict = {}  # runtime objects shared by pipelines of this model (compiled
        # modules, onnxruntime sessions): a bench opens many rows over the same weights
        self._torch: dict = {}
        self._sources: dict | None = None
        self._keys: dict | None = None

    @property
    def spec(self):
        return self.base.spec

    def close(self) -> None:
        """Release what this model's pipelines share (sessions, compiled models and modules,
        converted weights); idempotent. Open pipelines keep what they hold."""
        self.cache.clear()
        self._torch.clear()

    def head(self, kind: str):
        """The head for noise `kind` (None for gaussian); InputError when none was loaded."""
        if kind == "gaussian":
            return None
        if kind not in self.heads:
            raise InputError(f"--noise {kind} needs --head DIR (a head trained by `pahi-rt train`)")
        return self.heads[kind]

    @property
    def export_head(self):
        """The head exported beside the components (all modes share one artifact directory)."""
        return next(iter(self.heads.values()), None)

    def sources(self) -> dict:
        """Content hashes of the weights/configs/code the graphs are built from (once)."""
        from ..artifacts.keys import source_hashes

        if self._sources is None:
            self._sources = source_hashes(self.base, self.export_head)
        return self._sources

    def keys(self) -> dict:
        """Content keys every image records (`io.png_metadata`): `model_key`, and `head_key`
        (None without a head), so `feedback add` notices a model or head changed in place since
        the image was made. Computed once (free for presets and HF-cache files)."""
        if self._keys is None:
            from ..model_key import model_key
            from ..heads.checkpoint import head_key

            self._keys = {"model_key": model_key(self.base.model_id, self.base.decoder_id),
                          "head_key": head_key(self.head_path) if self.head_path else None}
        return self._keys

    def torch_components(self, precision: str):
        """The components on the run device in `precision` (the fp32 CPU ones when they match;
        a converted copy while exports may still need fp32, else converted in place)."""
        from ..components import DTYPES

        dtype = DTYPES[precision]
        if self.device.type == "cpu" and dtype == torch.float32:
            return self.base
        if dtype not in self._torch:
            comps = copy.deepcopy(self.base) if self.keep_fp32 else self.base
            for m in comps.modules:
                m.to(device=self.device, dtype=dtype)
            self._torch[dtype] = comps
        return self._torch[dtype]


def load_model(model: str, decoder: str | None = None, *, device: str = "auto",
               head: str | Path | None = None, noise: Sequence[str] = (),
               height: int | None = None, width: int | None = None, random_heads: bool = False,
               keep_fp32: bool = True, log: Log = lambda m: None) -> LoadedModel:
    """Load `model` once. Heads: the checkpoint `head` for each kind in `noise` that needs one
    (its own kind), or with `random_heads` a random head of the right shape (latency work), for
    images of height x width (None: the model's default size)."""
    from .. import progress
    from ..components import load_components, resolve_device
    from ..heads.checkpoint import load_head
    from ..heads.head import random_head

    run_device = resolve_device(device)
    with progress.stage(progress.describe_model(model), lambda: progress.parameter_count(comps),
                        log):
        comps = load_components(model, decoder)
    shape = RenderShape(height=height, width=width).sized(comps.spec)
    height, width = shape.height, shape.width
    heads = {}
    for kind in dict.fromkeys(k for k in noise if k != "gaussian"):
        if head is not None:
            heads[kind] = load_head(head, comps.spec, height, width, expect_mode=kind)
        elif random_heads:
            heads[kind] = random_head(kind, comps.spec, height, width)
    return LoadedModel(comps, heads, run_device, str(head) if head else None, keep_fp32)


class Pipeline(Closing):
    """An opened backend plus the host side: prompts and seeds in, uint8 images out."""

    def __init__(self, model: LoadedModel, backend: Backend, config: PipelineConfig,
                 prompt_cache=None):
        self.model, self.backend, self.config = model, backend, config
        self.latent_shape = model.spec.latent_shape(config.height, config.width)
        # a runtime.prompt_cache.PromptCache: repeated prompts skip text encoder and head
        self.prompt_cache = prompt_cache
        self.cache_prefix: tuple | None = None  # its key prefix, set on first use

    fused = property(lambda self: self.backend.fused)  # one fused graph per call

    def close(self) -> None:
        """Close the backend (its sessions/engines/CUDA graphs/modules); idempotent. A closed
        pipeline raises BackendError when called."""
        self.backend.close()

    closed = property(lambda self: self.backend.closed)  # see `close`

    def inputs(self, prompts: Sequence[str], seeds: Sequence[int]
               ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [B, *spec.token_ids_shape] int64 ([B, 77]; SDXL [B, 2, 77]) and eps
        [B, 4, h, w] float32: image i from seeds[i]."""
        if len(prompts) != len(seeds):
            raise InputError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        check_seeds(seeds)
        ids = sampling.tokenize_prompts(self.model.base, prompts)
        return ids.numpy(), sampling.draw_eps(seeds, self.latent_shape).numpy()

    def step_noise(self, seeds: Sequence[int]) -> np.ndarray | None:
        """Ancestral noise [steps - 1, B, 4, h, w] (`sampling.draw_step_noise`), else None."""
        n = self.config.mode.steps
        ancestral = self.model.spec.scheduler.ancestral and n > 1
        return sampling.draw_step_noise(seeds, self.latent_shape, n).numpy() if ancestral else None

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """uint8 images [len(prompts), H, W, 3], in chunks of the pipeline's batch."""
        if len(prompts) != len(seeds) or not len(prompts):
            raise InputError(f"{len(prompts)} prompts and {len(seeds)} seeds: give one seed per "
                             "prompt, at least one")
        from .prompt_cache import run_cached

        self.backend.check_open()
        b, cached = self.config.batch, self.prompt_cache is not None
        out = []
        for i in range(0, len(prompts), b):
            self.backend.step_noise = self.step_noise(seeds[i:i + b])
            out.append(run_cached(self, prompts[i:i + b], seeds[i:i + b]) if cached else
                       self.backend.run(*self.inputs(prompts[i:i + b], seeds[i:i + b])))
        return np.concatenate(out) if len(out) != 1 else out[0]

    def run_staged(self, prompts: Sequence[str], seeds: Sequence[int], timer: Timer
                   ) -> np.ndarray:
        """One batch stage by stage, each stage (tokenize included) timed by `timer`."""
        self.backend.check_open()
        with timer("tokenize"):
            ids, eps = self.inputs(prompts, seeds)
            self.backend.step_noise = self.step_noise(seeds)
        return self.backend.run_staged(ids, eps, timer)


def open_pipeline(model: LoadedModel, config: PipelineConfig, log: Log = lambda m: None,
                  export: Exporter | None = None) -> Pipeline:
    """Check the combination, export on first use with `export` if needed (see
    `ensure_artifacts`), and open the backend. A size `config` leaves out is the model's
    default (`ModelSpec.default_size`)."""
    config = replace(config, shape=config.shape.sized(model.spec))
    check_config(model, config)
    head = model.head(config.mode.noise)
    if config.backend == "torch":
        return Pipeline(model, _torch_backend(model, config, head), config)
    directory = ensure_artifacts(model, config, log, export)
    run = config.run_config()
    if config.backend == "onnxruntime":
        from .ort_backend import OrtBackend

        backend = OrtBackend(run, directory, model.spec, model.device, fused=config.fused,
                             sessions=model.cache.setdefault("onnxruntime", {}))
    elif config.backend == "openvino":
        from .ov_backend import OpenVinoBackend

        backend = OpenVinoBackend(run, directory, model.spec, fused=config.fused,
                                  compiled=model.cache.setdefault("openvino", {}),
                                  calibration=config.calibration, log=log,
                                  tokenize=lambda p: sampling.tokenize_prompts(model.base,
                                                                               p).numpy())
    else:
        from .trt_backend import TrtBackend

        backend = TrtBackend(run, directory, model.spec, model.device, fused=config.fused)
    return Pipeline(model, backend, config)


def _torch_backend(model: LoadedModel, config: PipelineConfig, head) -> Backend:
    comps = model.torch_components(config.precision)
    source = sampling.noise_source(head, comps.device, comps.dtype)
    if config.compile:
        from .compiled import CompiledTorchBackend

        return CompiledTorchBackend(config.run_config(), comps, source,
                                    model.cache.setdefault("compiled", {}))
    from .torch_backend import TorchBackend

    return TorchBackend(config.run_config(), comps, source)


def ensure_artifacts(model: LoadedModel, config: PipelineConfig, log: Log,
                     export: Exporter | None = None) -> Path:
    """The artifact directory for this run: the given one (checked against the model), or the
    cache directory, where `export` (`pahi_rt.export.first_use.export_on_first_use`, passed in
    by the command layer) writes what the run needs (reusing what is there). Without `export`
    and `config.artifacts`: ArtifactError."""
    from ..artifacts.cache import cache_dir
    from ..artifacts.manifest import check_sources

    config = replace(config, shape=config.shape.sized(model.spec))
    sources = model.sources()
    if config.artifacts is not None:
        check_sources(config.artifacts, sources)
        return Path(config.artifacts)
    if export is None:
        raise ArtifactError(f"--backend {config.backend} needs exported artifacts: pass "
                            "--artifacts DIR (from `pahi-rt export`) or an exporter to fill "
                            "the cache on first use")
    mode = config.mode
    components = component_graphs(mode)
    fused = (mode.name,) if config.fused and fused_graph(mode, model.spec) else ()
    request = ExportRequest(
        components=model.base, head=model.export_head, head_source=model.head_path,
        sources=sources, directory=Path(), graphs=components + fused,
        shape=replace(config.shape, precision=config.export_precision),
        engines=(fused or components) if config.backend == "tensorrt" else ())
    request = replace(request, directory=cache_dir(sources, request))
    log(f"artifacts: no --artifacts, using the cache {request.directory} "
        f"({', '.join(request.graphs)}; what is missing is exported)")
    export(request, log)
    return request.directory
