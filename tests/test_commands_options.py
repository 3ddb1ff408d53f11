"""Verbs parse into option values (issue 21 item 6): config values are built with keywords
everywhere, helpers of the verbs take a value rather than a dozen parameters, and the modules
holding the option values import no torch (argument errors stay fast)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("PipelineConfig", "ServeSettings", "BenchConfig", "GenerateOptions", "TrainOptions",
           "ServeOptions")
MAX_HELPER_PARAMETERS = 8  # a verb's own signature is its flags; its helpers take values


def python_files():
    for folder in ("pahi_rt", "bench", "export", "scripts", "tests"):
        yield from (ROOT / folder).rglob("*.py")


def positional_config_calls(tree: ast.AST) -> list[int]:
    """Lines calling one of CONFIGS with a positional argument (its fields in order)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in CONFIGS:
                lines.append(node.lineno)
    return lines


def is_verb(fn: ast.FunctionDef) -> bool:
    """A Typer verb: some parameter defaults to typer.Option/Argument (its flag declaration)."""
    defaults = fn.args.defaults + [d for d in fn.args.kw_defaults if d is not None]
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
               and getattr(d.func.value, "id", None) == "typer" for d in defaults)


def long_helpers(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_verb(node):
            a = node.args
            n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
            if n > MAX_HELPER_PARAMETERS:
                out.append(f"{node.name}: {n} parameters")
    return out


def test_configs_are_built_with_keywords():
    bad = [f"{path.relative_to(ROOT)}:{line}" for path in python_files()
           for line in positional_config_calls(ast.parse(path.read_text()))]
    assert not bad, bad


def test_verb_helpers_take_option_values():
    bad = [f"{path.name} {h}" for path in (ROOT / "pahi_rt" / "commands").glob("*.py")
           for h in long_helpers(ast.parse(path.read_text()))]
    assert not bad, bad


def test_checkers_see_violations():
    tree = ast.parse("PipelineConfig('torch', mode)\nc.PipelineConfig(backend='torch')\n"
                     "def f(a, b, c, d, e, f, g, h, i): pass\n"
                     "def verb(a, b, c, d, e, f, g, h, i=typer.Option(1)): pass\n")
    assert positional_config_calls(tree) == [1]
    assert long_helpers(tree) == ["f: 9 parameters"]


def test_option_values_import_no_torch():
    code = ("import sys\nimport pahi_rt.commands.options, pahi_rt.serving.launch, "
            "pahi_rt.scorers.spec\nprint([m for m in ('torch', 'diffusers', 'ray') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"
