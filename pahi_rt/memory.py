"""Will it fit? Host-memory estimates for loading, exporting and running a model, checked against
what the machine has before any of it starts (a step killed by the kernel says nothing).

Estimates come from parameter counts (a preset is built on the `meta` device in a second; a
directory's or single file's safetensors headers are read without the data) and factors
measured on the project's 2-core machine (bench/results/cpu-2core/export.md, bench/NOTES.md):

    process   torch + diffusers + transformers imported, tokenizer           BASE
    load      the fp32 model, kept for exports                               4 B / parameter
    torch     + a copy in the run precision when it is not fp32 (CPU)        2 B / parameter
              + activations: ACT x UNet weight bytes x batch x (H x W / ACT_SIZE)
              (full VAE, `--decoder vae`: at least VAE_ACT x batch x H x W for its decode)
    export    + a quarter of the largest graph's weights (trace, streamed)    EXPORT x bytes
    session   + weights of the graphs an onnxruntime session opens (fused and components)
              + activations as for torch

Available = min(cgroup memory limit - usage, MemAvailable); PAHI_RT_MEMORY_AVAILABLE (bytes, or
with a K/M/G suffix) replaces it (tests; machines whose limits are not visible).
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .specs import PRESETS

GiB = 2**30
BASE = int(0.8 * GiB)  # measured: an imported CLI process before the model (RSS)
ACT = 0.35  # activations of one UNet call in fp32, per byte of UNet weights (measured) ...
ACT_SIZE = PRESETS["synthetic"].spec().default_size  # ... at this (height, width): synthetic's
# export peak above the loaded model, per byte of the largest graph's weights: measured ~0.13
# for synthetic (5.74 GiB peak, export.md) and ~0 for synthetic-xl (13.39 GiB, sdxl.md): weights
# are streamed to NAME.onnx.data, not copied; 1.0 refused synthetic-xl's export on 24 GiB
EXPORT = 0.25
# activations of a full-VAE (SD's AutoencoderKL) decode in fp32, per output pixel: measured
# 1.72 GiB process peak vs TAESD's 0.76 at 512x512, less the weights, ~2600 B/pixel
# (bench/results/cpu-2core/full_vae.md; 128/256-channel 512x512 feature maps alive at once)
VAE_ACT = 3000
TAESD_PARAMS = 1_300_000  # TAESD's decoder: 1.2M
ENV = "PAHI_RT_MEMORY_AVAILABLE"


@dataclass(frozen=True)
class Params:
    """Parameter counts of a model's parts."""

    text_encoder: int  # both text encoders for SDXL
    unet: int
    decoder: int
    full_vae: int = 0  # full VAEs decoding at once (0: TAESD); activations VAE_ACT each

    @property
    def total(self) -> int:
        return self.text_encoder + self.unet + self.decoder


def available_bytes() -> int:
    """Host memory this process may still use (see the module docstring)."""
    if os.environ.get(ENV):
        return parse_size(os.environ[ENV])
    candidates = [_meminfo_available()]
    limit = _cgroup_free()
    if limit is not None:
        candidates.append(limit)
    return min(c for c in candidates if c is not None)


def parse_size(text: str, name: str = ENV) -> int:
    """Bytes from "12884901888", "12G", "1.5GiB", "512M" (K/M/G/T, powers of 1024). InputError
    naming the variable for anything else: not a number, not finite, zero or negative, or
    beyond 2^60 (an exabyte: a typo)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    raw = text
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        number = float(text[:-1]) if text[-1:] in units else float(text)
    except (ValueError, IndexError):
        number = math.nan
    value = number * units.get(text[-1:], 1)
    if not (math.isfinite(value) and 0 < value <= 2**60):
        raise InputError(f"{name}={raw!r}: give a positive number of bytes or a size like 12G")
    return int(value)


def _meminfo_available() -> int | None:
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_free() -> int | None:
    """cgroup v2 (memory.max - memory.current) or v1 (limit - usage); None when unlimited."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:
            return None
        return int(limit) - usage
    return None


# presets whose weights are downloaded but whose architecture a random preset builds: their
# counts are known before any download ("synthetic" is SD-Turbo's architecture, specs.py)
SAME_ARCHITECTURE = {"sd-turbo": "synthetic", "sdxl-turbo": "synthetic-xl"}


@functools.lru_cache(maxsize=8)
def model_params(model: str, decoder: str | None = None) -> Params | None:
    """Parameter counts without loading anything: a random preset (built on `meta`), a
    diffusers directory, a single-file checkpoint or a cached HF id / hub preset (safetensors
    headers), else a hub preset's known architecture; None when they cannot be known without
    downloading (an uncached id). `decoder` "vae" or an AutoencoderKL dir: the full VAE's
    decoder is counted (and its activations, `full_vae`), else TAESD's."""
    from .specs import OWN_VAE, PRESETS

    preset = PRESETS.get(model)
    if preset is not None and preset.unet is not None:
        params = _preset_params(preset)
        vae = _meta_vae_params(preset.vae) if decoder == OWN_VAE and preset.vae else None
        return _with_vae(params, vae) if vae else _with_vae(params, _kl_dir_params(decoder))
    path = Path(model) if preset is None else None
    if path is not None and path.is_file():
        return _single_file_params(path, decoder)
    if path is None or not path.is_dir():
        path = _cached_snapshot(preset.hub_id if preset is not None else model)
    counts = {part: _safetensors_params(path / part) if path else None
              for part in ("text_encoder", "unet")}
    if None not in counts.values():
        second = (_safetensors_params(path / "text_encoder_2") or 0
                  if (path / "text_encoder_2").is_dir() else 0)  # SDXL
        vae = _kl_dir_params(str(path / "vae") if decoder == OWN_VAE else decoder)
        return _with_vae(Params(counts["text_encoder"] + second, counts["unet"], TAESD_PARAMS),
                         vae)
    same = SAME_ARCHITECTURE.get(model)
    return model_params(same, decoder) if same else None


def _with_vae(params: Params, vae_decoder: int | None) -> Params:
    if not vae_decoder:
        return params
    return Params(params.text_encoder, params.unet, vae_decoder, full_vae=1)


def _meta_vae_params(config) -> int:
    import torch
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**dict(config))
    return sum(p.numel() for m in (vae.decoder, vae.post_quant_conv) for p in m.parameters())


def _kl_dir_params(decoder: str | None) -> int | None:
    """Decoder parameters of an AutoencoderKL directory (its safetensors headers), else None."""
    import json

    path = Path(decoder) if decoder else None
    if path is None or not (path / "config.json").is_file():
        return None
    try:
        if json.loads((path / "config.json").read_text()).get("_class_name") != "AutoencoderKL":
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return _safetensors_params(path, ("decoder.", "post_quant_conv."))


def _single_file_params(path: Path, decoder: str | None) -> Params | None:
    """Counts from an original-layout file's header (single_file.py); None when unreadable."""
    from .errors import PahiError
    from .single_file import read_header
    from .specs import OWN_VAE

    try:
        header = read_header(path)
    except PahiError:
        return None  # the loader says what is wrong with it, in one line
    prefixes = {"unet": ("model.diffusion_model.",), "text": ("cond_stage_model.", "conditioner."),
                "vae": ("first_stage_model.decoder.", "first_stage_model.post_quant_conv.")}
    counts = {part: sum(math.prod(v["shape"]) for k, v in header.items() if k.startswith(pre))
              for part, pre in prefixes.items()}
    vae = counts["vae"] if decoder == OWN_VAE else _kl_dir_params(decoder)
    return _with_vae(Params(counts["text"], counts["unet"], TAESD_PARAMS), vae)


def _cached_snapshot(repo_id: str) -> Path | None:
    """The HF cache's snapshot of `repo_id`, never downloading; None when not cached."""
    try:
        from huggingface_hub import snapshot_download

        from .hub import ALLOW

        return Path(snapshot_download(repo_id, allow_patterns=ALLOW, local_files_only=True))
    except Exception:  # not cached, not an id, no huggingface_hub: unknown
        return None


def _preset_params(preset) -> Params:
    import torch
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel(**preset.unet)
        texts = [CLIPTextModel(CLIPTextConfig(**preset.text_encoder))]
        if preset.text_encoder_2 is not None:
            texts.append(CLIPTextModelWithProjection(CLIPTextConfig(**preset.text_encoder_2)))
        dec = AutoencoderTiny(**dict(preset.decoder))

    def count(*modules):
        return sum(p.numel() for m in modules for p in m.parameters())
    return Params(count(*texts), count(unet), count(dec.decoder))


def _safetensors_params(folder: Path, prefixes: tuple[str, ...] = ("",)) -> int | None:
    import json
    import struct

    # variants (x.fp16.safetensors) are other copies of the same weights: not counted
    files = sorted(f for f in folder.glob("*.safetensors") if "." not in f.stem)
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, info in header.items():
            if name != "__metadata__" and name.startswith(prefixes):
                n = 1
                for d in info["shape"]:
                    n *= d
                total += n
    return total


def need_bytes(params: Params, *, height: int, width: int, batch: int = 1,
               precision: str = "fp32", backend: str = "torch", device: str = "cpu",
               export: bool = False, run: bool = True, loaded: bool = False,
               sessions: int = 2) -> int:
    """Estimated peak host memory of loading + (exporting, then) running at this shape. The
    export's transient peak is over before a session opens, so the two do not add up.
    `loaded`: the process already holds the fp32 model (bench rows), which the available
    figure has already paid for."""
    need = 0 if loaded else BASE + 4 * params.total
    act = int(ACT * 4 * params.unet * batch * height * width / (ACT_SIZE[0] * ACT_SIZE[1]))
    if params.full_vae:  # the decode's feature maps dwarf the UNet's at full resolution
        act = max(act, VAE_ACT * params.full_vae * batch * height * width)
    on_cpu = device == "cpu"
    exporting = int(EXPORT * 4 * max(params.unet, params.text_encoder)) if export else 0
    running = 0
    if run and backend == "torch":
        running = (2 * params.total if precision != "fp32" and on_cpu else 0) + (act if on_cpu
                                                                                else 0)
    elif run:
        weights = {"fp16": 2, "bf16": 2, "int8": 1.5}.get(precision, 4) * params.total
        # `sessions` 2: a fused graph and the component graphs beside it (bench per-stage
        # timing, or a mode with and one without a fused graph); 1: one of them
        running = sessions * weights + (act if on_cpu else 0)
    return need + max(exporting, running)


def check(params: Params | None, what: str, alternatives: dict[str, dict], **shape) -> None:
    """Raise InputError naming what would fit when `what` (at `shape`) would not."""
    if params is None:
        return
    have, need = available_bytes(), need_bytes(params, **shape)
    if need <= have:
        return
    fits = [hint for hint, change in alternatives.items()
            if need_bytes(params, **{**shape, **change}) <= have]
    raise InputError(f"{what} needs about {need / GiB:.1f} GiB of memory, {have / GiB:.1f} GiB "
                     "are available" + (f"; would fit: {' or '.join(fits)}" if fits else
                                        "; nothing smaller fits either"))


def smaller_shapes(height: int, width: int, batch: int) -> dict[str, dict]:
    """Alternatives to suggest: half the batch, then half/quarter the image size."""
    out = {}
    if batch > 1:
        out[f"--batch {batch // 2}"] = {"batch": batch // 2}
    for f in (2, 4, 8):
        h, w = max(64, height // f // 8 * 8), max(64, width // f // 8 * 8)
        if (h, w) != (height, width):
            out.setdefault(f"--height {h} --width {w}", {"height": h, "width": w})
    return out
