"""The README runs: its shell blocks, in order, as one bash script in a temp dir, on this machine.

Conventions (for everyone who edits the README):
- Every ```bash block runs, top to bottom, in one shell (`set -euo pipefail`), from a temp
  directory laid out like the repository root (`tests/`, `scripts/`, `bench/` linked, `../shared`
  beside it), with `HF_HUB_OFFLINE=1` and a private `PAHI_RT_CACHE`. `pip install ... &&`
  prefixes are dropped (the tests run inside the installed package).
- A block that cannot run here (GPU, hub weights, a Ray cluster, a server that runs until
  Ctrl-C, elided options, minutes of work) carries a marker on the line(s) just before it:
      <!-- not-run: the reason -->
  `<!-- test-command -->` (the CI's pytest line, `.ci/run`) also counts as not run here.
- A single line of a runnable block that cannot run here is skipped BY NAME: an entry in
  SKIP_LINES below (a prefix of the command, and the reason). Stale entries fail the test, so
  the list cannot rot; a new block that does not run fails until it is marked.
Keep what runs fast: tiny model, `--height 64 --width 64` where the README allows it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SHARED

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MARKER = re.compile(r"<!--\s*(not-run:\s*(.*?)|test-command)\s*-->")
SKIP_LINES = {  # command prefix -> why it does not run here
    "pahi-rt generate --prompts ../shared/data/prompts/pickapic_test500.txt":
        "500 images at 512x512: minutes here (the prompt-file lines after it run)",
    'pahi-rt generate "a red fox in the snow" --model synthetic':
        "full-size model: ~6 GiB and ~10 s per image here",
    'pahi-rt generate "a red fox in the snow" --model tiny --height 64 --width 64 --noise pahi':
        "needs runs/pahi, written by the paper-scale training (GPU, SD-Turbo weights)",
    'pahi-rt generate "a red fox in the snow" --model tiny --height 64 --width 64 --compile':
        "inductor compile: 2-6 minutes on this CPU",
    'pahi-rt generate "a red fox in the snow" --model tiny --out fox.png --overwrite --precision '
    'fp16': "fp16 on this CPU: ~45 s (a GPU example); tests/test_sampling.py runs fp16 on the CPU",
    "pahi-rt train --mode pahi --model tiny": "about a minute; scripts/train_tiny.sh runs it",
    "pahi-rt eval --head runs/tiny-pahi": "needs the head of the skipped training line",
    "pahi-rt train --mode hi --objective kto --feedback sim.jsonl":
        "a feedback training run re-makes 96 images and trains 200 steps (~35 s of CPU, minutes "
        "under load); tests/test_feedback_reward.py and test_cli_feedback.py train on tiny",
    "pahi-rt train --mode pahi --objective dpo --feedback sim-pairs.jsonl":
        "needs runs/tiny-pahi from the skipped scorer-training line",
    "pahi-rt eval --head runs/fb-hi": "needs the head of the skipped feedback training line",
    "pahi-rt bench --json bench.json": "full-size benchmark: many minutes",
    "pahi-rt bench --model tiny": "~30 s here; tests/test_bench.py runs the harness on tiny",
    'pahi-rt generate "a red fox" --model tiny --height 64 --width 64 --backend onnxruntime '
    '--artifacts': "needs artifacts/ from the export block (not run)",
    'pahi-rt generate "a red fox" --model tiny --height 64 --width 64 --backend onnxruntime':
        "exports into the cache first (~30 s); tests/test_cli.py runs it",
    'pahi-rt generate "a red fox" --model tiny --height 64 --width 64 --backend tensorrt':
        "needs a CUDA GPU",
    'pahi-rt generate "a red fox" --model tiny --height 64 --width 64 --backend openvino '
    '--artifacts': "needs artifacts/ from the export block (not run)",
    'pahi-rt generate "a red fox" --model tiny --height 64 --width 64 --backend openvino '
    '--precision auto': "exports into the cache first (~30 s); tests/test_runtime_ov.py runs the "
                        "backend and tests/test_cpu.py what auto picks",
}


def blocks() -> list[tuple[int, str | None, list[str]]]:
    """(README line, skip reason or None, command lines) per ```bash block, continuation lines
    joined and comment lines dropped."""
    out = []
    for m in re.finditer(r"```bash\n(.*?)```", README, flags=re.S):
        before = README[:m.start()].rstrip().splitlines()
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        reason = None if marker is None else (marker.group(2) or "the CI's test command")
        lines = [x.strip() for x in m.group(1).replace("\\\n", " ").splitlines()]
        out.append((README[:m.start()].count("\n") + 1, reason,
                    [x for x in lines if x and not x.startswith("#")]))
    return out


def skip_reason(line: str) -> str | None:
    return next((why for prefix, why in SKIP_LINES.items() if line.startswith(prefix)), None)


def script() -> tuple[str, list[str]]:
    """The bash script of every line that runs here, and the lines skipped (with reasons)."""
    body, skipped = ["set -euo pipefail"], []
    for at, reason, lines in blocks():
        for line in lines:
            line = re.sub(r"^(pip install [^&]*&&\s*)+", "", line)
            why = reason or skip_reason(line) or ("installs packages (the tests run in the "
                                                  "installed package)"
                                                  if line.startswith("pip install") else None)
            if why:
                skipped.append(f"README line {at}: {line[:60]}: {why}")
                continue
            body += [f"echo {_quote(f'### README block at line {at}: {line}')} >&2", line]
    return "\n".join(body) + "\n", skipped


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_every_block_runs_or_says_why():
    all_lines = [x for _, reason, lines in blocks() if reason is None for x in lines]
    assert len(blocks()) > 10 and all_lines
    stale = [p for p in SKIP_LINES if not any(x.startswith(p) for x in all_lines)]
    assert not stale, f"SKIP_LINES entries that match no runnable README line: {stale}"
    elided = [x for x in all_lines if " ... " in f"{x} " and not skip_reason(x)]
    assert not elided, f"elided commands in runnable blocks (mark the block): {elided}"


@pytest.mark.skipif(not (SHARED / "prompts").is_dir(), reason="needs ../shared/data")
def test_readme_blocks_run_in_order(tmp_path):
    text, skipped = script()
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("tests", "scripts", "bench"):
        (repo / name).symlink_to(ROOT / name)
    (tmp_path / "shared").symlink_to(SHARED.parent)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PAHI_RT_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "PAHI_RT_DIGEST_CACHE": str(tmp_path / "digests.json")}
    env.pop("PYTHONPATH", None)
    (tmp_path / "readme.sh").write_text(text)
    p = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=600)
    steps = [x for x in p.stderr.splitlines() if x.startswith("### ")]
    assert p.returncode == 0, (f"the README stopped at: {steps[-1] if steps else '?'}\n"
                               f"{p.stderr[-3000:]}")
    assert len(steps) >= 10 and len(skipped) >= 10, (steps, skipped)
    assert sorted(q.name for q in (repo / "outputs").iterdir())[:2] == ["00000.png", "00001.png"]
