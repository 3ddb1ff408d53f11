"""Cache keys follow the code and the tools, in an editable install too; weights are hashed once
per loaded model."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from site import getsitepackages as site_dirs
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pahi_rt.errors import ArtifactError
from pahi_rt.artifacts import keys

ROOT = Path(__file__).resolve().parents[1]
PRINT_KEY = "import pahi_rt.artifacts.keys as k; print(k.code_version())"


@pytest.fixture(scope="module")
def editable_copy(tmp_path_factory):
    """A copy of the project installed editable into a fresh venv (dependencies from ours)."""
    root = tmp_path_factory.mktemp("editable")
    copy = root / "copy"
    copy.mkdir()
    for name in ("pahi_rt", "export", "bench", "pyproject.toml", "README.md"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, copy / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    # every site directory this interpreter reads (a venv made with --system-site-packages
    # finds its packages in the base interpreter's site too)
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], *site_dirs()])
    Path(site.stdout.strip(), "_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["setuptools>=68"], check=True, capture_output=True)
    subprocess.run(pip + ["--no-deps", "--no-build-isolation", "-e", str(copy)], check=True,
                   capture_output=True)
    return copy, python


def _key(python) -> str:  # -P: not the current directory (this checkout) first on sys.path
    out = subprocess.run([python, "-P", "-c", PRINT_KEY], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def test_editable_install_key_follows_every_graph_source(editable_copy):
    copy, python = editable_copy
    located = subprocess.run([python, "-P", "-c", "import pahi_rt.sampling as s, "
                              "pahi_rt.export.build as b; print(s.__file__, b.__file__)"],
                             check=True, capture_output=True, text=True).stdout
    assert located.split() == [str(copy / "pahi_rt" / "sampling.py"),
                               str(copy / "export" / "build.py")]  # the copy is what runs
    keys = [_key(python)]
    for rel in ("pahi_rt/sampling.py", "pahi_rt/specs.py", "export/compose.py",
                "pahi_rt/heads/head.py"):
        with open(copy / rel, "a") as f:
            f.write("\n# a change\n")
        keys.append(_key(python))
    assert len(set(keys)) == len(keys), keys


def test_missing_source_fails_loudly(monkeypatch):
    monkeypatch.setattr(keys, "GRAPH_CODE", keys.GRAPH_CODE + ("pahi_rt.no_such_module",))
    with pytest.raises(ArtifactError, match="no_such_module"):
        keys.code_version()


def test_tool_versions_are_in_the_key():
    versions = keys.tool_versions()
    assert set(versions) == set(keys.GRAPH_TOOLS) and versions["onnx"] != "-"


def test_weights_hashed_once_per_command(tmp_path, monkeypatch):
    """generate --backend onnxruntime on the cache path hashes each module once (it was three
    times: cache dir, export, source check)."""
    from pahi_rt.cli import app

    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path / "cache"))
    args = ["generate", "a cat", "--model", "tiny", "--height", "64", "--width", "64",
            "--backend", "onnxruntime"]
    assert CliRunner().invoke(app, args + ["--out", str(tmp_path / "a")]).exit_code == 0
    calls = []
    real = keys.weights_hash
    monkeypatch.setattr(keys, "weights_hash", lambda m: calls.append(m) or real(m))
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert len(calls) == 3, len(calls)  # text encoder, UNet, decoder
