"""The int8 UNet of the OpenVINO backend: NNCF post-training quantization, content-keyed.

Calibration: for each calibration prompt, the UNet inputs of every Euler step of the run's mode
(text embeddings from the backend's own fp32 text encoder, Gaussian eps from seed i, later steps
from the fp32 UNet's own Euler updates), so the activation ranges are those the sampler feeds.
NNCF inserts int8 quantize/dequantize pairs (symmetric, transformer preset: SmoothQuant on the
attention MatMuls) and OpenVINO's CPU plugin runs the int8 convolutions and MatMuls on VNNI or
AMX-INT8 units.

The result is saved as OpenVINO IR in DIR/openvino/ with a sidecar recording its content key
(the fp32 UNet's sha256, the calibration prompts, seeds and timesteps, the NNCF and OpenVINO
versions, this module's source) and the IR files' sha256. A sidecar with another key (stale) or
files that no longer match (corrupt) are refused by `load_int8` and rebuilt by `int8_unet`.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import sampling
from ..artifacts.manifest import directory_lock
from ..errors import ArtifactError, require
from ..io import atomic_write_files, atomic_write_json, sha256_file, sha256_json
from ..specs import NAMES

FOLDER, STEM = "openvino", "unet-int8"
# Used when no calibration prompts are given: varied subjects, styles and lengths.
DEFAULT_CALIBRATION = (
    "a red fox in the snow, photograph", "portrait of an old fisherman, oil painting",
    "a futuristic city skyline at night, neon lights, cyberpunk", "a bowl of ramen, studio photo",
    "watercolor landscape of rolling hills at sunrise", "a cat wearing a space suit, digital art",
    "macro shot of a dew drop on a leaf", "an ancient castle on a cliff above a stormy sea",
)


def _source_hash() -> str:
    return sha256_file(__file__)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def int8_key(unet_sha: str, prompts: Sequence[str], timesteps: Sequence[float],
             latent_shape: Sequence[int]) -> str:
    """Content key of an int8 UNet: what it is quantized from and how."""
    return sha256_json({"unet": unet_sha, "prompts": list(prompts), "seeds": len(prompts),
                        "timesteps": list(timesteps), "latent_shape": list(latent_shape),
                        "nncf": _version("nncf"), "openvino": _version("openvino"),
                        "code": _source_hash()})


def load_int8(directory: str | Path, key: str) -> Path:
    """The IR (.xml) of the int8 UNet in `directory`/openvino keyed `key`; ArtifactError when
    it is missing, stale (built from another UNet, prompts or versions) or corrupt."""
    folder = Path(directory) / FOLDER
    import json

    try:
        record = json.loads((folder / f"{STEM}.json").read_text())
    except (OSError, ValueError):
        raise ArtifactError(f"{folder}: no int8 UNet (quantized on first use)") from None
    if record.get("key") != key:
        raise ArtifactError(f"{folder / STEM}.xml is stale: quantized from another UNet, other "
                            "calibration prompts or other NNCF/OpenVINO versions")
    for suffix in ("xml", "bin"):
        path = folder / f"{STEM}.{suffix}"
        if not path.is_file() or sha256_file(path) != record.get(suffix):
            raise ArtifactError(f"{path} is missing or corrupt (sha256 does not match "
                                f"{STEM}.json)")
    return folder / f"{STEM}.xml"


def int8_unet(backend, unet_path: Path, entry: dict, prompts: Sequence[str] | None,
              log=lambda m: None) -> tuple[Path, str]:
    """(IR path, key) of the int8 UNet for `backend`'s artifacts: the stored one when its key
    matches, else quantized now (under the directory's lock) and stored atomically."""
    prompts = tuple(prompts or DEFAULT_CALIBRATION)
    cfg = backend.config
    timesteps = backend.schedule.timesteps
    latent = backend.spec.latent_shape(cfg.height, cfg.width)
    key = int8_key(entry["sha256"], prompts, timesteps, (cfg.batch, *latent))
    directory = backend.directory
    try:
        return load_int8(directory, key), key
    except ArtifactError as e:
        log(f"openvino int8: {e}; quantizing the UNet ({len(prompts)} calibration prompts x "
            f"{len(timesteps)} step(s))")
    with directory_lock(directory):
        try:  # another process may have built it while we waited for the lock
            return load_int8(directory, key), key
        except ArtifactError:
            pass
        samples = calibration_inputs(backend, unet_path, prompts)
        quantized = quantize(backend.ov, unet_path, samples)
        save(backend.ov, quantized, directory / FOLDER, key)
    return load_int8(directory, key), key


def calibration_inputs(backend, unet_path: Path, prompts: Sequence[str]) -> list[dict]:
    """UNet feeds (numpy) for every prompt and every Euler step of the backend's mode."""
    cfg, s = backend.config, backend.schedule
    latent = backend.spec.latent_shape(cfg.height, cfg.width)
    unet = backend.ov.Core().compile_model(str(unet_path), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "f32"}) \
        if len(s.timesteps) > 1 else None
    samples = []
    for i in range(0, len(prompts), cfg.batch):
        chunk = list(prompts[i:i + cfg.batch])
        chunk += [chunk[-1]] * (cfg.batch - len(chunk))  # static batch: pad
        ids = backend.tokenize(chunk)
        emb = backend.encode_text(ids)[NAMES.text_embeddings].clone()
        x = sampling.draw_eps(range(i, i + cfg.batch), latent) * s.init_sigma
        for step, t in enumerate(s.timesteps):
            feed = {NAMES.sample: sampling.model_input(x, s.sigmas[step]).numpy(),
                    NAMES.timestep: np.full((cfg.batch,), t, np.float32),
                    NAMES.text_embeddings: emb.numpy()}
            samples.append(feed)
            if unet is not None and step + 1 < len(s.timesteps):
                e = torch.from_numpy(unet(feed)[0].copy())
                x = sampling.euler_step(x, e, s.sigmas[step], s.sigmas[step + 1],
                                        s.prediction_type)
    return samples


def quantize(ov, unet_path: Path, samples: list[dict]):
    """NNCF post-training quantization of the ONNX UNet, calibrated on `samples`."""
    nncf = require("nncf", "openvino")
    model = ov.Core().read_model(str(unet_path))
    return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                         model_type=nncf.ModelType.TRANSFORMER,
                         advanced_parameters=nncf.AdvancedQuantizationParameters(
                             disable_bias_correction=True))  # minutes on a 0.9B UNet


def save(ov, model, folder: Path, key: str) -> None:
    """Write the IR next to its sidecar, each replaced atomically (bin, xml, then sidecar)."""
    folder.mkdir(parents=True, exist_ok=True)
    shas: dict[str, str] = {}

    def write(tmp: Path) -> None:
        ov.save_model(model, str(tmp / f"{STEM}.xml"), compress_to_fp16=False)
        shas.update({suffix: sha256_file(tmp / f"{STEM}.{suffix}") for suffix in ("xml", "bin")})
    atomic_write_files(folder, (f"{STEM}.bin", f"{STEM}.xml"), write, prefix=".tmp-")
    atomic_write_json(folder / f"{STEM}.json", {"key": key, **shas})
