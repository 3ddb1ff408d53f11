"""`.ci/run` runs the README's test line in a virtual environment it creates itself."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "run"


def readme_test_line() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    at = lines.index("<!-- test-command -->")
    assert lines[at + 1] == "```bash", "the marker is followed by a bash block"
    return lines[at + 2]


def test_ci_runs_the_readme_line():
    out = subprocess.run([str(SCRIPT), "--print-command"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == readme_test_line()
    assert re.search(r"pip install (-e )?\"?\.\[test\]\"?", out), out
    assert out.endswith("pytest -q"), "the whole suite; CI fails when pytest fails"


def test_ci_uses_a_fresh_venv_and_fails_with_the_line():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert "set -euo pipefail" in text
    venv, activate, run = (text.index(s) for s in ('python3 -m venv "$venv"',
                                                    '. "$venv/bin/activate"', 'eval "$cmd"'))
    assert "mktemp -d" in text and venv < activate < run, "venv first, then the README line"
    assert "PYTHONNOUSERSITE=1" in text and "exit 1" in text[run:]
