"""Packaging: only `pahi_rt.*` is installed; export/ and bench/ ship inside it."""
from __future__ import annotations

import ast
import copy
import functools
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_only_namespaced_packages():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "pahi_rt" or p.startswith("pahi_rt.") for p in cfg["packages"])
    assert cfg["package-dir"]["pahi_rt.export"] == "export"
    assert cfg["package-dir"]["pahi_rt.bench"] == "bench"
    for folder in ("pahi_rt", "export", "bench"):
        subpackages = {p.parent for p in (ROOT / folder).rglob("__init__.py")}
        for sub in subpackages:
            rel = sub.relative_to(ROOT / folder).parts
            name = ".".join(["pahi_rt"] + ([] if folder == "pahi_rt" else [folder]) + list(rel))
            assert name in cfg["packages"], f"{name} is not listed in pyproject packages"


def test_console_script_and_verbs():
    import pahi_rt.export  # noqa: F401  (mapped from export/)
    import pahi_rt.bench  # noqa: F401  (mapped from bench/)
    from typer.testing import CliRunner

    from pahi_rt.cli import app

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pahi-rt"] == "pahi_rt.cli:main"
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "generate" in result.output


# --- the test extra is complete: `pip install -e ".[test]" && pytest` needs nothing else ------

# Extras whose tests only check the missing-package error (or skip when it is installed).
NOT_NEEDED_BY_TESTS = {"data", "imagereward", "gpu"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(req: str) -> tuple[str, list[str]]:
    """'pahi-rt[onnx,train]>=1' -> ('pahi-rt', ['onnx', 'train'])."""
    m = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", req)
    return _norm(m.group(1)), [x.strip() for x in (m.group(2) or "").split(",") if x.strip()]


def load_project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def provided(project: dict, extra: str | None) -> set[str]:
    """Distributions that `pip install pahi-rt[extra]` installs directly (self-references
    resolved); None: the core dependencies."""
    reqs = project["dependencies"] if extra is None else \
        project["optional-dependencies"][extra]
    names = set()
    for req in reqs:
        name, extras = _requirement(req)
        if name == _norm(project["name"]):
            for e in extras:
                names |= provided(project, e)
        else:
            names.add(name)
    return names


# Import name -> distribution where they differ, for packages this environment may lack.
NOT_INSTALLED_NAMES = {"ImageReward": ["image-reward"], "tensorrt_rtx": ["tensorrt-rtx-cu13"],
                       "PIL": ["pillow"]}
ALSO_PROVIDED_BY = {"onnxruntime": ["onnxruntime-gpu"]}  # CUDA build, same import name


@functools.lru_cache(maxsize=None)
def distributions(module: str) -> frozenset[str]:
    """Distributions providing a top-level module (installed ones, else the names above, plus
    known alternative builds)."""
    from importlib.metadata import packages_distributions

    found = packages_distributions().get(module) or NOT_INSTALLED_NAMES.get(module, [module])
    return frozenset(_norm(d) for d in [*found, *ALSO_PROVIDED_BY.get(module, [])])


def imports_of(path: Path) -> set[str]:
    """Top-level third-party modules a test file imports unconditionally (an import inside
    `try: ... except ...Error` is optional)."""
    tree = ast.parse(path.read_text())
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                h.type is None or "Error" in ast.unparse(h.type) for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    local = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"pahi_rt"}
    found = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module.split(".")[0])
    return found - local - set(sys.stdlib_module_names)


def library_needs() -> list[tuple[tuple[str, ...], str]]:
    """(modules, extra) the verbs need, from pahi_rt.extras and every `require(m, extra)`."""
    from pahi_rt.extras import needs

    found = [(n.modules, n.extra) for n in
             needs("train") + needs("export") + needs("bench", plot="p.png") +
             needs("generate", backend="onnxruntime") + needs("generate", backend="tensorrt")]
    for folder in ("pahi_rt", "export", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" \
                        and all(isinstance(a, ast.Constant) for a in node.args[:2]):
                    found.append(((node.args[0].value,), node.args[1].value))
    return found


def gaps_in_test_extra(project: dict) -> set[str]:
    have = provided(project, None) | provided(project, "test")
    gaps = {f"{m} (imported by tests/{path.name})" for path in (ROOT / "tests").glob("*.py")
            for m in imports_of(path) if not distributions(m) & have}
    gaps |= {f"{'/'.join(mods)} (needed by a verb, extra {extra})"
             for mods, extra in library_needs() if extra not in NOT_NEEDED_BY_TESTS
             and not any(distributions(m) & have for m in mods)}
    return gaps


def test_test_extra_is_complete():
    gaps = gaps_in_test_extra(load_project())
    assert not gaps, f"the tests need these, but the test extra does not install them: {gaps}"


def test_each_extra_provides_what_its_errors_promise():
    """`pip install 'pahi-rt[X]'` in a missing-package message really installs the package."""
    project = load_project()
    extras = project["optional-dependencies"]
    wrong = {f"{'/'.join(mods)} [{extra}]" for mods, extra in library_needs()
             if extra not in extras or not any(distributions(m) & provided(project, extra)
                                               for m in mods)}
    assert not wrong, wrong


def test_completeness_check_sees_gaps(tmp_path):
    """The check itself works: the test extra of issue #9 (no accelerate) is caught, and a
    guarded import is optional while a plain one is not."""
    project = load_project()
    old = copy.deepcopy(project)
    old["optional-dependencies"]["test"] = ["pytest>=8", "pahi-rt[onnx,bench,tensorrt-rtx]"]
    assert any(g.startswith("accelerate") for g in gaps_in_test_extra(old))
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nimport numpy.linalg\nfrom accelerate import Accelerator\n"
                     "try:\n    import ImageReward\nexcept ImportError:\n    pass\n")
    assert imports_of(probe) == {"numpy", "accelerate"}
