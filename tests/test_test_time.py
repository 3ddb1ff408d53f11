"""Test-time compute on `tiny` with the synthetic scorers: best-of-N and ReNO refinement
(library and `generate`), determinism, PNG metadata, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from helpers import random_head
from pahi_rt import sampling
from pahi_rt.cli import app
from pahi_rt.test_time import search as tt
from pahi_rt.scorers.scorer_set import ScorerSet
from test_cli import assert_one_line_error

runner = CliRunner()
SMALL = ["--model", "tiny", "--height", "64", "--width", "64", "--device", "cpu"]
COLOUR = "synthetic_scorers:colour_by_word"
PROMPTS = ["a red kite", "a blue cup", "a green hat"]


@pytest.fixture(scope="module")
def tiny():
    from pahi_rt.components import load_components

    comps = load_components("tiny")
    return comps, sampling.Schedule.from_spec(comps.spec.scheduler, 1), ScorerSet.load([COLOUR])


def test_candidate_seeds():
    assert tt.candidate_seed(7, 0) == 7  # best-of-1 is the plain image
    seeds = [tt.candidate_seed(7, k) for k in range(1, 50)]
    assert len(set(seeds)) == 49 and all(0 <= s < 2**64 for s in seeds)
    assert seeds == [tt.candidate_seed(7, k) for k in range(1, 50)]
    assert tt.candidate_seed(8, 1) != tt.candidate_seed(7, 1) and 8 not in seeds


def test_norm_regulariser_is_lowest_at_the_typical_norm():
    d = 256
    radii = torch.tensor([8.0, (d - 1) ** 0.5, 24.0])
    eps = torch.ones(3, d) / d**0.5 * radii[:, None]
    nll = tt.norm_nll(eps.view(3, 4, 8, 8))
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_best_of_n_never_below_best_of_1(tiny):
    comps, schedule, scorers = tiny
    render = tt.torch_render(comps, sampling.gaussian, schedule, (4, 8, 8))
    seeds = [0, 1, 2]
    one = tt.best_of(render, scorers, PROMPTS, seeds, 1)
    assert np.array_equal(one.pixels, render(PROMPTS, seeds)) and one.candidate == [0, 0, 0]
    four = tt.best_of(render, scorers, PROMPTS, seeds, 4)
    assert [s[0] for s in four.scores] == pytest.approx([s[0] for s in one.scores], abs=1e-4)
    assert all(max(s) >= s[0] for s in four.scores)
    assert max(max(s) - s[0] for s in four.scores) > 0  # some candidate did better
    again = tt.best_of(render, scorers, PROMPTS, seeds, 4)
    assert np.array_equal(again.pixels, four.pixels) and again.scores == four.scores


@pytest.mark.parametrize("kind", ["gaussian", "pahi"])
def test_refine_never_below_start_and_is_deterministic(tiny, kind):
    comps, schedule, scorers = tiny
    source = sampling.gaussian if kind == "gaussian" else random_head("pahi")
    eps = sampling.draw_eps([0, 1, 2], (4, 8, 8))
    cfg = tt.RefineConfig(4)
    done = tt.refine(comps, source, scorers, PROMPTS, eps, cfg, schedule)
    assert len(done.scores) == 5 and len(done.seconds) == 4
    assert all(b >= s for b, s in zip(done.best_scores, done.start_scores))
    assert sum(done.best_scores) > sum(done.start_scores)
    # the kept pixels are the ones the best score was computed on
    rescored = scorers.total(tt.pixels_to_images(done.pixels), PROMPTS)
    assert rescored.tolist() == pytest.approx(done.best_scores, abs=1e-4)
    # the start is the plain image of that noise source
    plain = tt.torch_render(comps, source, schedule, (4, 8, 8))(PROMPTS, [0, 1, 2])
    start = scorers.total(tt.pixels_to_images(plain), PROMPTS)
    assert start.tolist() == pytest.approx(done.start_scores, abs=1e-4)
    again = tt.refine(comps, source, scorers, PROMPTS, eps, cfg, schedule)
    assert torch.equal(again.pixels, done.pixels) and again.scores == done.scores


def run(*args):
    return runner.invoke(app, list(args))


def test_generate_best_of_metadata(tmp_path, tiny):
    """The kept image's PNG info reproduces it: its seed (pahi-rt field and A1111 Seed, as a
    real reader sees it) is the winning candidate's; the console names the winner."""
    _, _, scorers = tiny
    out = tmp_path / "b.png"
    r = run("generate", "a red kite", *SMALL, "--seed", "5", "--best-of", "4", "--scorer", COLOUR,
            "--out", str(out))
    assert r.exit_code == 0, r.output
    meta = json.loads(Image.open(out).text["pahi-rt"])
    scores = json.loads(meta["candidate_scores"])
    k = int(meta["candidate"])
    assert meta["best_of"] == "4" and len(scores) == 4 and scores[k] == max(scores)
    won = tt.candidate_seed(5, k)
    assert int(meta["candidate_seed"]) == won and meta["seed"] == str(won)
    assert meta.get("requested_seed", "5") == "5"
    assert f"candidate {k} of 4 won (seed {won}" in r.output
    import sd_parsers

    info = sd_parsers.ParserManager().parse(out)
    assert info.samplers[0].parameters["seed"] == str(won)
    written = np.asarray(Image.open(out).convert("RGB"))[None]
    assert scorers.total(tt.pixels_to_images(written), ["a red kite"]).item() == \
        pytest.approx(scores[k], abs=1e-4)
    plain = tmp_path / "p.png"  # the recorded seed, without --best-of: the same pixels
    assert run("generate", "a red kite", *SMALL, "--seed", str(won), "--out",
               str(plain)).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(plain)), written[0])


def test_generate_refine_batch_of_prompts(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS + ["a yellow shoe", "a red bird"]))
    out = tmp_path / "out"
    r = run("generate", "--prompts", str(prompts), *SMALL, "--refine", "3", "--scorer", COLOUR,
            "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "s per step" in r.output
    metas = [json.loads(Image.open(out / f"{i:05d}.png").text["pahi-rt"]) for i in range(5)]
    assert [m["prompt"] for m in metas] == PROMPTS + ["a yellow shoe", "a red bird"]
    for m in metas:
        assert float(m["refined_score"]) >= float(m["start_score"]) and m["refine"] == "3"
        assert 0 <= int(m["best_iteration"]) <= 3 and float(m["refine_seconds_per_step"]) > 0
        assert m["reproducible"].startswith("no: refined")
    text = Image.open(out / "00000.png").text["parameters"]
    assert "Refined: 3 steps (not reproducible from Seed)" in text
    r = run("feedback", "add", str(out / "00000.png"), "--good", "--to", str(tmp_path / "f.jsonl"))
    assert r.exit_code == 2 and "made with --refine" in r.output, r.output


@pytest.mark.parametrize("args,message", [
    (("--best-of", "4"), "--best-of needs at least one --scorer"),
    (("--refine", "3"), "--refine needs at least one --scorer"),
    (("--best-of", "0", "--scorer", COLOUR), "--best-of must be between 1 and 256"),
    (("--best-of", "100000", "--scorer", COLOUR), "--best-of must be between 1 and 256"),
    (("--refine", "-1", "--scorer", COLOUR), "--refine must be between 1 and 1000"),
    (("--refine", "0", "--scorer", COLOUR), "--refine must be between 1 and 1000"),
    (("--refine", "5000", "--scorer", COLOUR), "--refine must be between 1 and 1000"),
    (("--refine", "2", "--best-of", "2", "--scorer", COLOUR), "not both"),
    (("--refine", "2", "--refine-lr", "0", "--scorer", COLOUR),
     "--refine-lr must be a finite number in (0, 10000], got 0.0"),
    (("--refine", "2", "--scorer", COLOUR, "--backend", "onnxruntime"), "use --backend torch"),
    (("--refine", "2", "--scorer", "synthetic_scorers:not_differentiable"),
     "is not differentiable; --refine needs gradients"),
    (("--refine", "2", "--scorer", "synthetic_scorers:undeclared_not_differentiable"),
     "is not differentiable"),
    (("--best-of", "2", "--scorer", "nope"), "unknown scorer"),
])
def test_generate_test_time_bad_input(tmp_path, args, message):
    r = run("generate", "a red kite", *SMALL, *args, "--out", str(tmp_path / "x.png"))
    assert_one_line_error(r, message)
    assert not (tmp_path / "x.png").exists()


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    from pahi_rt.heads.checkpoint import save_head

    return save_head(random_head("pahi"), tmp_path_factory.mktemp("head") / "h")


@pytest.mark.parametrize("extra,label", [(("--best-of", "2"), "best-of 2"),
                                         (("--refine", "2"), "refine 2")])
def test_eval_spends_test_time_on_every_method(tmp_path, head_dir, extra, label):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS))
    r = run("eval", "--head", str(head_dir), "--model", "tiny", "--device", "cpu", "--scorer",
            COLOUR, "--prompts", str(prompts), "--seeds", "1", "--no-two-step", *extra,
            "--json", str(tmp_path / "e.json"))
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["test_time"] == label and label in r.output
    if label.startswith("refine"):
        curve = result["refine_curve"]["pahi 1-step"]
        assert len(curve) == 3 and curve == sorted(curve)
    plain = tmp_path / "plain.json"
    assert run("eval", "--head", str(head_dir), "--model", "tiny", "--device", "cpu", "--scorer",
               COLOUR, "--prompts", str(prompts), "--seeds", "1", "--no-two-step", "--json",
               str(plain)).exit_code == 0
    before = json.loads(plain.read_text())["score"]
    for method in ("gaussian 1-step", "pahi 1-step"):
        assert result["score"][method][COLOUR]["mean"] >= before[method][COLOUR]["mean"] - 1e-4


def test_bench_rows_with_test_time(tmp_path):
    out = tmp_path / "b.json"
    r = run("bench", "--model", "tiny", "--height", "64", "--width", "64", "--device", "cpu",
            "--backends", "torch", "--modes", "gaussian-1step", "--warmup", "0", "--iters", "1",
            "--best-of", "2", "--scorer", COLOUR, "--json", str(out))
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert [row["backend"] for row in rows] == ["torch + best-of 2"] and rows[0]["score"] < 0
    r = run("bench", "--model", "tiny", "--backends", "torch", "--refine", "2")
    assert_one_line_error(r, "--refine needs at least one --scorer")


def test_best_of_through_onnxruntime_matches_torch(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path / "cache"))
    scores = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.png"
        r = run("generate", "a blue cup", *SMALL, "--seed", "2", "--best-of", "3", "--scorer",
                COLOUR, "--backend", backend, "--out", str(out))
        assert r.exit_code == 0, r.output
        scores[backend] = json.loads(json.loads(Image.open(out).text["pahi-rt"])
                                     ["candidate_scores"])
    assert scores["onnxruntime"] == pytest.approx(scores["torch"], abs=0.02)
