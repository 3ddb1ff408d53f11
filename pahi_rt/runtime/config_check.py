"""Which backend/precision/device/mode combinations a pipeline can open (`check_config`), apart
from the opener (`pipeline.open_pipeline`) so each stays small."""
from __future__ import annotations

import torch

from .. import sampling
from ..errors import BackendError, InputError
from ..specs import BACKENDS, PRECISIONS, SD2


def check_config(model, config) -> None:
    """Refuse what no backend can do, in one place (one-line errors): `model` is a
    pipeline.LoadedModel (its spec and device), `config` a pipeline.PipelineConfig."""
    name, precision = config.backend, config.precision
    if name not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got '{name}'")
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if config.batch < 1:
        raise InputError(f"--batch must be at least 1, got {config.batch}")
    model.spec.latent_shape(config.height, config.width)  # validates the size
    sampling.Schedule.from_spec(model.spec.scheduler, config.mode.steps)  # validates --steps
    allowed = {"torch": ("fp32", "fp16", "bf16"),
               "openvino": ("fp32", "bf16", "int8")}.get(name, ("fp32", "fp16"))
    if precision not in allowed:
        raise BackendError(f"--backend {name} runs {', '.join(allowed)}, not {precision}")
    if name == "openvino" and model.device.type != "cpu":
        raise BackendError("--backend openvino runs on the CPU (use --device cpu)")
    if name == "tensorrt" and model.device.type != "cuda":
        gpu = torch.cuda.is_available()
        raise BackendError("--backend tensorrt needs a CUDA GPU" + (
            " (use --device cuda)" if gpu else ", and torch sees none here; on the CPU use "
            "--backend onnxruntime or torch"))
    if config.compile and model.spec.architecture != SD2:
        raise InputError(f"--compile runs SD 2.x models only (not {model.spec.architecture})")
    if config.compile and model.spec.scheduler.ancestral and config.mode.steps > 1:
        raise InputError("--compile runs Euler; Euler-ancestral at 2+ steps runs without it")
    if config.compile and name != "torch":
        raise InputError("--compile applies to --backend torch only")
    if name == "openvino" and model.spec.architecture != SD2:
        raise BackendError(f"--backend {name} does not run {model.spec.architecture} models yet "
                           "(use --backend onnxruntime or torch)")
    if name == "torch" and config.artifacts is not None:
        raise InputError("--artifacts is only used with --backend onnxruntime|tensorrt|openvino")
