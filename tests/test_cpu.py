"""CPU features from /proc/cpuinfo text, and what `--precision auto` picks from them."""
from __future__ import annotations

from pahi_rt.cpu import CpuInfo, auto_precision, parse_cpuinfo

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu avx2 fma avx512f avx512bw avx512vl avx512_bf16 avx512_vnni
processor\t: 1
model name\t: ignored
flags\t\t: fpu
"""


def test_parse_first_processor():
    info = parse_cpuinfo(ZEN4)
    assert info.model == "AMD EPYC (family 25 model 17)"
    assert info.flags == ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                          "avx512_bf16")
    assert info.bf16 and info.int8 and "avx512_bf16" in info.describe()


def test_auto_precision_by_features():
    zen4, avx2 = parse_cpuinfo(ZEN4), CpuInfo("old EPYC", ("avx2", "fma"))
    amx = CpuInfo("Xeon", ("avx512f", "amx_tile", "amx_bf16", "amx_int8"))
    assert auto_precision("openvino", "cpu", zen4)[0] == "bf16"
    assert auto_precision("torch", "cpu", amx) == ("bf16", "the CPU has amx_bf16")
    assert auto_precision("openvino", "cpu", avx2)[0] == "fp32"
    assert auto_precision("onnxruntime", "cpu", zen4)[0] == "fp32"  # no bf16 CPU path there
    assert auto_precision("torch", "cuda", avx2)[0] == "fp16"
    assert not avx2.bf16 and not avx2.int8 and parse_cpuinfo("").flags == ()
