"""`pahi-rt train` then `pahi-rt eval` end to end on `tiny`, with a module:factory scorer."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from synthetic_scorers import colour_prompts
from pahi_rt.cli import app
from test_cli import assert_one_line_error

runner = CliRunner()
SMALL = ["--model", "tiny", "--height", "64", "--width", "64", "--device", "cpu"]


@pytest.fixture()
def prompt_files(tmp_path):
    train, held_out = colour_prompts()
    (tmp_path / "train.txt").write_text("\n".join(train))
    (tmp_path / "val.txt").write_text("\n".join(held_out[:8]))
    (tmp_path / "test.txt").write_text("\n".join(held_out[8:]))
    return tmp_path


def test_train_then_eval(prompt_files):
    d = prompt_files
    out = d / "run"
    r = runner.invoke(app, ["train", "--mode", "pahi", *SMALL, "--scorer",
                            "synthetic_scorers:colour_by_word", "--prompts", str(d / "train.txt"),
                            "--val-prompts", str(d / "val.txt"), "--steps", "30",
                            "--batch-size", "8", "--val-every", "10", "--pretrain-steps", "20",
                            "--hidden", "32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "best step" in r.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["mode"] == "pahi" and meta["latent_shape"] == [4, 8, 8]
    assert meta["base_model"] == "tiny" and meta["training"]["steps"] == 30
    assert meta["training"]["scorer"] == "synthetic_scorers:colour_by_word=1"
    assert [h["step"] for h in meta["training"]["history"]] == [0, 10, 20, 30]
    assert (out / "train_state" / "optimizer.safetensors").is_file()

    r = runner.invoke(app, ["eval", "--head", str(out), "--model", "tiny", "--device", "cpu",
                            "--scorer", "synthetic_scorers:colour_by_word",
                            "--scorer", "synthetic_scorers:fixed_colour",
                            "--prompts", str(d / "test.txt"), "--seeds", "2",
                            "--json", str(d / "eval.json"), "--markdown", str(d / "eval.md")])
    assert r.exit_code == 0, r.output
    result = json.loads((d / "eval.json").read_text())
    win = result["win_rate"]["synthetic_scorers:colour_by_word"]
    assert len(win["runs"]) == 2 and win["mean"] > 0.6, result
    assert set(result["score"]) == {"gaussian 1-step", "gaussian 2-step", "pahi 1-step"}
    md = (d / "eval.md").read_text()
    assert "| synthetic_scorers:colour_by_word |" in md and "win rate (%)" in md
    # generate reads the same head
    r = runner.invoke(app, ["generate", "a red kite", *SMALL[:-2], "--noise", "pahi", "--head",
                            str(out), "--out", str(d / "png")])
    assert r.exit_code == 0, r.output

    # --resume continues the saved run; without it the dir is refused
    r = runner.invoke(app, ["train", "--mode", "pahi", *SMALL, "--scorer",
                            "synthetic_scorers:colour_by_word", "--prompts", str(d / "train.txt"),
                            "--val-prompts", str(d / "val.txt"), "--steps", "30",
                            "--batch-size", "8", "--hidden", "32", "--out", str(out)])
    assert_one_line_error(r, "pass --resume")


@pytest.mark.parametrize("args,message", [
    (["--mode", "gan"], "--mode must be hi or pahi"),
    (["--scorer", "nosuch"], "unknown scorer"),
    (["--scorer", "synthetic_scorers:nope"], "has no 'nope'"),
    (["--prompts", "missing.txt"], "no such file"),
    (["--height", "60"], "--height must be a multiple of 8"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--resume"], "no training state"),
    (["--scorer", "pickscore"], "not in the local HF cache"),  # offline: fails fast, one line
])
def test_train_bad_input(prompt_files, args, message):
    d = prompt_files
    base = {"--mode": "hi", "--scorer": "synthetic_scorers:fixed_colour",
            "--prompts": str(d / "train.txt"), "--height": "64"}
    flags = dict(zip(args[::2], args[1::2])) if args != ["--resume"] else {}
    merged = {**base, **flags}
    argv = ["train", "--model", "tiny", "--width", "64", "--device", "cpu", "--steps", "1",
            "--out", str(d / "o")] + [x for kv in merged.items() for x in kv]
    if args == ["--resume"]:
        argv.append("--resume")
    assert_one_line_error(runner.invoke(app, argv), message)


def test_eval_bad_head(tmp_path):
    (tmp_path / "p.txt").write_text("a\n")
    r = runner.invoke(app, ["eval", "--head", str(tmp_path / "none"), "--model", "tiny",
                            "--scorer", "synthetic_scorers:fixed_colour",
                            "--prompts", str(tmp_path / "p.txt")])
    assert_one_line_error(r, "not a head checkpoint")
