"""Data flows one way: a lower layer never imports a higher one (STYLE.md rule 2)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lower number = lower layer. A module may import its own layer or lower ones.
LAYERS = {
    "errors": 0, "hostmem": 0, "extras": 0, "threads": 0,
    "specs": 1, "hub": 1, "tokenizer": 1, "random_init": 1, "io": 1,
    "taesd": 2, "components": 2, "sampling": 3, "noise": 4, "export": 5, "runtime": 6,
    "bench": 7, "commands": 8, "cli": 8, "progress": 8,
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pahi_rt" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def source_files():
    for folder, package in (("pahi_rt", "pahi_rt"), ("export", "pahi_rt.export"),
                            ("bench", "pahi_rt.bench")):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield path, ".".join([package, *parts]), path.name == "__init__.py"


def imports(path: Path, module: str, is_package: bool):
    pkg = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            yield target
            if not node.module:
                yield from (f"{target}.{a.name}" for a in node.names)


def test_no_upward_imports():
    bad = []
    for path, module, is_pkg in source_files():
        if module == "pahi_rt":
            continue
        own = layer_of(module)
        assert own is not None, f"{module}: add it to LAYERS"
        for target in imports(path, module, is_pkg):
            other = layer_of(target)
            if other is not None and other > own:
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_checker_sees_a_violation(tmp_path):
    """The walker itself works: an upward import is reported."""
    f = tmp_path / "x.py"
    f.write_text("from ..cli import app\n")
    assert "pahi_rt.cli" in list(imports(f, "pahi_rt.noise.head", False))
