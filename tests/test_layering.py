"""Data flows one way (STYLE.md rule 2): a lower layer never imports a higher one, modules never
import each other in a cycle (imports inside functions included), and files stay small."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lower number = lower layer. A module may import its own layer or lower ones.
LAYERS = {
    "errors": 0, "hostmem": 0, "extras": 1, "threads": 0, "cpu": 0,
    "specs": 1, "model_configs": 1, "scheduler_spec": 1, "conditioning": 2, "pixels": 1,
    "hub": 1, "tokenizer": 1, "random_init": 1, "io": 1, "image_files": 1, "digests": 1,
    "single_file": 1, "single_file_convert": 1, "prompts": 1, "progress": 2, "prompt_sets": 2,
    "decoders": 2,
    "taesd": 2, "components": 2, "memory": 2, "model_key": 2, "sampling": 3, "render": 3,
    "heads": 4, "scorers": 5, "feedback": 5, "training": 6, "test_time": 6, "evaluation": 7,
    "artifacts": 5,  # what reading an export needs (manifest, keys, cache, TensorRT seam)
    "export": 8, "runtime": 9, "bench": 10, "serving": 10, "commands": 11, "cli": 12,
}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 60


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
    """Every module `path` imports, anywhere in the file; `from pahi_rt import X` (and
    `from . import X`) yields the submodule pahi_rt.X, whose layer is what matters."""
    pkg = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            yield target
            yield from (f"{target}.{a.name}" for a in node.names)


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (names that are modules of ours)."""
    files = {module: (path, pkg) for path, module, pkg in source_files()}
    return {module: {t for t in imports(path, module, pkg) if t in files and t != module}
            for module, (path, pkg) in files.items()}


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


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the import graph (package __init__ -> own submodule edges excluded)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + "."):  # a package importing its own submodule
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if not state.get(nxt) and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if not state.get(node) and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_checkers_see_violations(tmp_path):
    """The walkers work: an upward import, `from pahi_rt import X` and a cycle are reported."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from ..cli import app\n")
    assert "pahi_rt.cli" in list(imports(f, "pahi_rt.heads.head", False))
    f.write_text("from pahi_rt import runtime\n")
    assert "pahi_rt.runtime" in list(imports(f, "pahi_rt.heads.head", False))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_files_and_functions_stay_small():
    long = []
    for path, module, _ in source_files():
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long.append(f"{module}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # the body: a CLI verb's signature is its option declarations
                n = node.end_lineno - node.body[0].lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {n} lines")
    assert not long, long


def test_heads_import_no_training_scorers_or_feedback():
    """The runtime's heads stand alone: heads/ imports no training, scorer or feedback module."""
    bad = [f"{m} -> {t}" for m, targets in graph().items() if m.startswith("pahi_rt.heads")
           for t in targets
           if t.split(".")[1:2] in (["training"], ["scorers"], ["feedback"], ["test_time"])]
    assert not bad, bad


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_runtime_imports_no_export_module():
    """The runtime reads artifacts through pahi_rt.artifacts; exporting on first use is passed
    in. No runtime module imports the exporter, directly or through another module."""
    edges = graph()
    bad = sorted(f"{m} -> {t}" for m in edges if m.startswith("pahi_rt.runtime")
                 for t in reachable(edges, m) if t.startswith("pahi_rt.export"))
    assert not bad, bad
    # the walker follows imports through other modules
    assert "pahi_rt.export.build" in reachable({"pahi_rt.runtime.pipeline": {"pahi_rt.heads"},
                                                "pahi_rt.heads": {"pahi_rt.export.build"}},
                                               "pahi_rt.runtime.pipeline")


def outside_own_folder(edges: dict[str, set[str]], folder: str) -> list[str]:
    """Imports of `folder`'s modules that leave it for anything but a strictly lower layer."""
    own = LAYERS[folder]
    return sorted(f"{m} -> {t}" for m, targets in edges.items()
                  if m.split(".")[1:2] == [folder] for t in targets
                  if t.split(".")[1:2] != [folder] and not (layer_of(t) or 0) < own)


def test_export_and_bench_reach_out_only_for_lower_layers():
    """export/ and bench/ stay at the top of the repo; beyond their own folder they use only
    pahi_rt's lower layers (bench does not import serving or commands, export not runtime)."""
    edges = graph()
    assert outside_own_folder(edges, "export") == []
    assert outside_own_folder(edges, "bench") == []
    # the checker sees a same-layer or higher import
    assert outside_own_folder({"pahi_rt.bench.run": {"pahi_rt.serving.app"}}, "bench")
    assert outside_own_folder({"pahi_rt.export.build": {"pahi_rt.runtime.pipeline"}}, "export")
