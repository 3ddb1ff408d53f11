"""The one import seam for `tensorrt` and TensorRT for RTX, and whether an engine runs here.

Classic `tensorrt` is preferred when both are importable; `tensorrt_rtx` builds ahead of time
for chosen GPUs. The exporter builds engines through `trt_module` (`pahi_rt.export.engine`); the
runtime deserialises them after `check_engine` (`pahi_rt.runtime.trt_backend`).
"""
from __future__ import annotations

from ..errors import EngineError, MissingDependencyError

RTX, CLASSIC = "tensorrt-rtx", "tensorrt"


def trt_module():
    """(module, flavour): `tensorrt` when importable, else `tensorrt_rtx`."""
    for name, flavour in (("tensorrt", CLASSIC), ("tensorrt_rtx", RTX)):
        try:
            return __import__(name), flavour
        except ImportError:
            continue
    raise MissingDependencyError("neither 'tensorrt' nor 'tensorrt_rtx' is installed; install "
                                 "TensorRT for RTX with: pip install 'pahi-rt[tensorrt-rtx]'")


def trt_logger(trt, lines: list[str]):
    """A TensorRT logger that appends "[SEVERITY] message" to `lines`."""
    class Capture(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            lines.append(f"[{str(severity).split('.')[-1]}] {msg}")
    return Capture()


def engine_validity(data: bytes) -> tuple[str, str]:
    """("VALID" | "SUBOPTIMAL" | "INVALID" | "UNKNOWN", diagnostics) for this machine.

    TensorRT for RTX answers with `Runtime.get_engine_validity` (GPU and version checks);
    classic TensorRT has no such query, so the manifest's recorded version is all we know."""
    trt, flavour = trt_module()
    runtime = trt.Runtime(trt_logger(trt, []))
    if not hasattr(runtime, "get_engine_validity"):
        return "UNKNOWN", f"{flavour} {trt.__version__} has no engine-validity query"
    validity, bits = runtime.get_engine_validity(data)
    reasons = [name for name, flag in trt.EngineInvalidityDiagnostics.__members__.items()
               if int(bits) & int(flag)]
    return str(validity).split(".")[-1], ", ".join(reasons) or "no diagnostics (no GPU visible?)"


def check_engine(data: bytes, entry: dict) -> None:
    """Refuse (EngineError) an engine built by another TensorRT flavour/version or for another
    GPU; `entry` is its manifest entry."""
    trt, flavour = trt_module()
    if (entry.get("flavour"), entry.get("trt_version")) != (flavour, trt.__version__):
        raise EngineError(f"{entry['path']} was built with {entry.get('flavour')} "
                          f"{entry.get('trt_version')}, this is {flavour} {trt.__version__}; "
                          "re-run `pahi-rt export` to rebuild it")
    validity, diagnostics = engine_validity(data)
    if validity == "INVALID":
        raise EngineError(f"{entry['path']} cannot run here (targets {entry.get('targets')}): "
                          f"{diagnostics}; re-run `pahi-rt export --target ...` for this GPU")
