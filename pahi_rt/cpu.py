"""What the host CPU can do, from /proc/cpuinfo (standard library only).

The sub-fp32 paths pay only where the CPU has the units for them: bf16 needs AMX-BF16 or
AVX512-BF16 (otherwise bf16 is emulated and slower than fp32), int8 needs VNNI (AVX512-VNNI,
AVX-VNNI) or AMX-INT8. `--precision auto` and the bench read this.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

# /proc/cpuinfo flag names that matter for inference precision, in the order they are reported
KNOWN = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
         "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
BF16_UNITS = ("amx_bf16", "avx512_bf16")
INT8_UNITS = ("amx_int8", "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and which of `KNOWN` flags it has."""

    model: str
    flags: tuple[str, ...]

    @property
    def bf16(self) -> bool:
        """True when bf16 math runs on hardware units (AMX or AVX512-BF16)."""
        return any(f in self.flags for f in BF16_UNITS)

    @property
    def int8(self) -> bool:
        """True when int8 dot products run on hardware units (VNNI or AMX-INT8)."""
        return any(f in self.flags for f in INT8_UNITS)

    def describe(self) -> str:
        """e.g. 'AMD EPYC (family 25 model 17): avx2 fma avx512f ... avx512_bf16'."""
        return f"{self.model}: {' '.join(self.flags) or 'no AVX2'}"


def parse_cpuinfo(text: str) -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (the first processor's model name and flags)."""
    first: dict[str, str] = {}  # the first processor's fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    model = first.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in first and "model" in first:  # a VM often hides the exact model name
        model += f" (family {first['cpu family']} model {first['model']})"
    flags = set(first.get("flags", "").split())
    return CpuInfo(model,
                   tuple(f for f in KNOWN if f in (flags or ())))


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CpuInfo (an empty flag list where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CpuInfo(platform.processor() or "unknown CPU", ())


def auto_precision(backend: str, device: str, info: CpuInfo | None = None) -> tuple[str, str]:
    """(precision, why) for `--precision auto`: fp16 on a GPU; on the CPU bf16 for the torch and
    openvino backends where the CPU has bf16 units, else fp32. int8 is never picked here: its
    pixels differ from fp32 by more than the fp16 tolerance (see README), so it is opt-in."""
    if device != "cpu":
        return "fp16", f"{device} device"
    info = info or cpu_info()
    units = [f for f in BF16_UNITS if f in info.flags]
    if backend in ("torch", "openvino") and units:
        return "bf16", f"the CPU has {'/'.join(units)}"
    if backend in ("torch", "openvino"):
        return "fp32", "the CPU has no bf16 units (AMX-BF16/AVX512-BF16)"
    return "fp32", f"--backend {backend} runs fp32 on the CPU"
