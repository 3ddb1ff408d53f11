"""The hardware floor: work per stage against the device's measured peaks.

FLOPs are counted by running each component on the `meta` device under torch's FlopCounterMode
(no real arithmetic, so the full-size model is counted in seconds). Bytes are the fewest a stage
must move: its weights once, its inputs once, its outputs once. Peaks are measured at bench start:
a large matrix product (compute) and a large copy (bandwidth, bytes read + written).
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass

import torch

from pahi_rt.components import Components

ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class Work:
    flops: float
    bytes: float


@dataclass(frozen=True)
class Peaks:
    device: str
    flops_per_s: float
    bytes_per_s: float

    def floor_ms(self, work: Work) -> float:
        return 1e3 * max(work.flops / self.flops_per_s, work.bytes / self.bytes_per_s)

    def to_dict(self) -> dict:
        return asdict(self)


def _count(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def stage_work(comps: Components, head, batch: int, height: int, width: int,
               precision: str) -> dict[str, Work]:
    """FLOPs and minimal bytes per stage for one run at this shape (per batch, not per image)."""
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    from pahi_rt.conditioning import unet_kwargs_by_name

    eb, spec = ELEMENT_BYTES[precision], comps.spec
    c, h, w = spec.latent_shape(height, width)
    d, n = spec.text_dim, spec.max_tokens
    encoders = [m for m in (comps.text_encoder, getattr(comps, "text_encoder_2", None)) if m]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(comps.unet.config)
        texts = [type(m)(m.config) for m in encoders]  # SDXL: both text encoders
        dec = AutoencoderTiny.from_config(comps.decoder.config)
        x = torch.empty(batch, c, h, w)
        emb = torch.empty(batch, n, d)
        conds = unet_kwargs_by_name(spec, {t.name: torch.empty(batch, *t.shape)
                                           for t in spec.conditioning})
        ids = torch.zeros(batch, n, dtype=torch.long)
        t = torch.full((batch,), 999.0)
        flops = {"text_encoder": sum(_count(lambda m=m: m(ids)) for m in texts),
                 "unet_step": _count(lambda: unet(x, t, **conds)),
                 "decode": _count(lambda: dec.decode(x))}
        if head is not None:
            import copy

            meta_head = copy.deepcopy(head).to("meta")
            flops["head"] = _count(lambda: meta_head(x, emb))
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in
              (("unet_step", comps.unet), ("decode", comps.decoder.decoder), ("head", head))
              if m is not None}
    params["text_encoder"] = sum(p.numel() for m in encoders for p in m.parameters())
    lat, embb, img = batch * c * h * w * eb, batch * n * d * eb, batch * 3 * height * width
    io = {"text_encoder": batch * n * 8 + embb, "unet_step": 2 * lat + embb,
          "decode": lat + img, "head": embb + 2 * lat}
    work = {k: Work(flops.get(k, 0.0), params.get(k, 0) * eb + io[k]) for k in params}
    work.setdefault("head", Work(batch * c * h * w, 2 * lat))  # gaussian: eps copied in
    work["copy_out"] = Work(0.0, 2 * img)
    return work


def measure_peaks(device: torch.device, precision: str, seconds: float = 1.5) -> Peaks:
    """Measured matmul FLOP/s (in `precision`) and copy bandwidth of the device."""
    from pahi_rt.components import DTYPES

    dtype = DTYPES[precision]
    if device.type == "cpu" and dtype != torch.float32:
        dtype = torch.float32  # CPU half matmuls are emulated; the fp32 rate is the real ceiling
    flops_per_s = 0.0
    for n in ((4096, 8192) if device.type == "cuda" else (1024, 2048)):  # best size wins
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        product = functools.partial(torch.matmul, a, b)
        flops_per_s = max(flops_per_s, 2 * n**3 / _best_time(product, device, seconds))
    src = torch.randn((1 << 30 if device.type == "cuda" else 1 << 26) // 4, device=device)
    dst = torch.empty_like(src)
    bytes_per_s = 2 * src.numel() * 4 / _best_time(lambda: dst.copy_(src), device, seconds)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return Peaks(name, flops_per_s, bytes_per_s)


def _best_time(fn, device: torch.device, budget: float) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    best, spent = float("inf"), 0.0
    while spent < budget or best == float("inf"):
        t0 = time.perf_counter()
        fn()
        sync()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return best


def cpu_name() -> str:
    import os
    import platform

    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
