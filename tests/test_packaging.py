"""Packaging: only `pahi_rt.*` is installed; export/ and bench/ ship inside it."""
from __future__ import annotations

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
