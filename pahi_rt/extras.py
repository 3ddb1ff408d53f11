"""Which verb and option needs which optional package, checked before any work starts.

Each verb calls `check_extras(verb, **options)` first, so a missing package fails at once with
the extra that provides it, not after minutes of model building or benchmarking (`bench --plot`
used to fail only when the whole benchmark had run). Modules are found with `find_spec`, not
imported, so the check costs milliseconds.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from .errors import MissingDependencyError


@dataclass(frozen=True)
class Need:
    """One optional package: any of `modules` (import names) will do; `extra` provides it."""
    modules: tuple[str, ...]
    extra: str
    why: str  # the verb or option that needs it, for the message


def _onnx_export(why: str) -> list[Need]:
    return [Need((m,), "onnx", why) for m in ("onnx", "onnxslim", "onnxruntime")]


def _scorers(scorer) -> list[Need]:
    names = [s.split("@")[0].split("=")[0].strip() for s in scorer or ()]
    return [Need(("ImageReward",), "imagereward", "--scorer imagereward")] \
        if "imagereward" in names else []


def _backend(backend: str, artifacts) -> list[Need]:
    if backend not in ("onnxruntime", "tensorrt"):  # torch, or a typo the verb names itself
        return []
    why = f"--backend {backend}"
    found = {"onnxruntime": [Need(("onnxruntime",), "onnx", why)],
             "openvino": [Need(("openvino",), "openvino", why)]}.get(
        backend, [Need(("tensorrt", "tensorrt_rtx"), "tensorrt-rtx", why)])
    # without --artifacts the graphs are exported into the cache first
    return found if artifacts else _onnx_export(why) + found


def needs(verb: str, **options) -> list[Need]:
    """The optional packages `pahi-rt VERB` needs with these option values."""
    if verb == "train":
        return [Need(("accelerate",), "train", "pahi-rt train"),
                Need(("tqdm",), "train", "pahi-rt train")] + _scorers(options.get("scorer"))
    if verb == "eval":
        return _scorers(options.get("scorer"))
    if verb == "export":
        return _onnx_export("pahi-rt export")
    if verb == "generate":
        ray = [Need(("ray",), "serve", "--ray")] if options.get("ray") else []
        scorers = _scorers(options.get("scorer"))  # --best-of / --refine
        return ray + scorers + _backend(options.get("backend", "torch"), options.get("artifacts"))
    if verb == "serve":
        return [Need(("ray",), "serve", "pahi-rt serve"), Need(("fastapi",), "serve",
                                                              "pahi-rt serve")] + \
            _backend(options.get("backend", "torch"), options.get("artifacts"))
    if verb == "bench":
        # missing backends are skipped row by row (and reported); the plot is all or nothing
        plot = [Need(("matplotlib",), "bench", "--plot")] if options.get("plot") else []
        return plot + _scorers(options.get("scorer"))
    raise ValueError(f"unknown verb {verb!r}")


def installed(module: str) -> bool:
    """Importable without importing it (a `None` entry in sys.modules counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_extras(verb: str, **options) -> None:
    """Raise MissingDependencyError naming every missing package and its extra, in one line."""
    missing: dict[str, list[str]] = {}
    extras = set()
    for need in needs(verb, **options):
        if not any(installed(m) for m in need.modules):
            missing.setdefault(need.why, []).append(" or ".join(need.modules))
            extras.add(need.extra)
    if missing:
        what = "; ".join(f"{why} needs {', '.join(mods)}" for why, mods in missing.items())
        raise MissingDependencyError(f"{what} (not installed); install with: "
                                     f"pip install 'pahi-rt[{','.join(sorted(extras))}]'")
