"""The README tells the truth: its commands use real verbs and options, its paths exist, its
extras exist, and its training example's prompt files are the ones the script writes."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import typer

from pahi_rt.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_commands() -> list[str]:
    """Every command line in the README's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for b in blocks for line in b.replace("\\\n", " ").splitlines()
            if line.strip() and not line.strip().startswith("#")]


def pahi_rt_calls() -> list[tuple[str, list[str]]]:
    """(verb, options) of each `pahi-rt VERB [SUBVERB] ...` in a bash block ("feedback add");
    a `...` elides options."""
    calls = []
    for line in bash_commands():
        verb = r"pahi-rt (\w+(?: (?:add|pair|export))?)([^&|;]*)"
        for m in re.finditer(verb, line.split("  #")[0]):
            options = re.findall(r"(?<!\S)(--[a-z0-9-]+)", m.group(2))
            calls.append((m.group(1), options))
    return calls


def find_command(cli, verb: str):
    for word in verb.split():
        cli = getattr(cli, "commands", {}).get(word)
        if cli is None:
            return None
    return cli


def test_readme_commands_use_real_verbs_and_options():
    cli = typer.main.get_command(app)
    checked, bad = 0, []
    for verb, options in pahi_rt_calls():
        command = find_command(cli, verb)
        if command is None:
            bad.append(f"pahi-rt {verb}: no such verb")
            continue
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        bad += [f"pahi-rt {verb} {o}: no such option" for o in options if o not in known]
        checked += 1
    assert checked >= 15, "the README's examples were found"
    assert not bad, bad


def test_readme_paths_exist():
    paths = set(re.findall(r"(?<![\w/.])((?:pahi_rt|bench|tests|export|scripts|\.ci)/[\w./-]*\w)",
                           README))
    runtime = {p for p in paths if "<" in p or p.startswith("bench/results/<")}
    missing = [p for p in sorted(paths - runtime)
               if not (ROOT / p).exists() and not p.startswith("tests/synthetic_scorers.py ")]
    assert len(paths) > 10 and not missing, missing


def test_readme_extras_exist():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    named = set(re.findall(r"\.\[([a-z0-9,-]+)\]", README)) | \
        set(re.findall(r"pahi-rt\[([a-z0-9,-]+)\]", README))
    unknown = {e for group in named for e in group.split(",") if e not in extras}
    assert named and not unknown, unknown


def test_setup_needs_no_extra_install_steps():
    setup = README[README.index("## Set up"):README.index("## Models")]
    first = next(line for line in setup.splitlines() if line.startswith("pip install"))
    assert first.startswith("pip install torch==2.13.0 && pip install . && pahi-rt generate")
    assert "--no-deps" not in setup and "open-clip" not in first


def test_training_example_prompt_files(tmp_path):
    from synthetic_scorers import write_prompt_files

    assert "python tests/synthetic_scorers.py runs/prompts" in README
    assert write_prompt_files(tmp_path) == {"train.txt": 48, "val.txt": 8, "test.txt": 16}
    train = set((tmp_path / "train.txt").read_text().split("\n"))
    held = (tmp_path / "val.txt").read_text().split("\n") + \
        (tmp_path / "test.txt").read_text().split("\n")
    assert not {p.split()[-1] for p in train if p} & {p.split()[-1] for p in held if p}
    for flag in ("--prompts runs/prompts/train.txt", "--val-prompts runs/prompts/val.txt",
                 "--prompts runs/prompts/test.txt"):
        assert flag in " ".join(bash_commands())


def test_environment_variables_are_documented():
    """Every environment variable the code reads by name is explained in the README."""
    names = set()
    for folder in ("pahi_rt", "export", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"environ(?:\.get)?[(\[]\"([A-Z][A-Z0-9_]+)\"",
                                    path.read_text()))
    assert "PAHI_RT_CACHE" in names
    undocumented = {n for n in names if f"`{n}" not in README and f"{n}=" not in README}
    assert not undocumented, undocumented
