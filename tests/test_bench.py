"""The bench harness on the tiny model: rows, stages, JSON schema, markdown, plot. Not speed."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pahi_rt.cli import app
from pahi_rt.specs import STAGES

runner = CliRunner()


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("PAHI_RT_CACHE", str(out / "cache"))  # the onnxruntime rows export into it
    r = runner.invoke(app, [
        "bench", "--model", "tiny", "--height", "64", "--width", "64", "--warmup", "1",
        "--iters", "2", "--backends", "torch,onnxruntime,tensorrt,diffusers",
        "--modes", "pahi-1step,gaussian-1step,gaussian-2step",
        "--json", str(out / "r.json"), "--markdown", str(out / "r.md"),
        "--plot", str(out / "r.png"), "--scorer", "synthetic_scorers:fixed_colour"])
    mp.undo()
    assert r.exit_code == 0, r.output
    assert list((out / "cache").iterdir()), "the export cache was used"
    return out, json.loads((out / "r.json").read_text()), r.output


def test_rows_and_schema(bench_result):
    _, result, _ = bench_result
    assert {"rows", "machine", "command", "work"} <= set(result)
    assert "pahi-rt bench" in result["command"] and result["machine"]["device"]
    got = {(r["backend"], r["mode"]) for r in result["rows"]}
    expected = {(b, m) for b in ("torch", "onnxruntime")
                for m in ("pahi-1step", "gaussian-1step", "gaussian-2step")}
    expected |= {("diffusers", "gaussian-1step"), ("diffusers", "gaussian-2step")}
    if torch.cuda.is_available():
        expected |= {("tensorrt", m) for m in ("pahi-1step", "gaussian-1step", "gaussian-2step")}
    assert got == expected
    for r in result["rows"]:
        for key in ("mode", "backend", "precision", "batch", "p50_ms", "p90_ms", "p99_ms",
                    "images_per_s", "stages", "peak_memory_mb", "e2e_floor_ms"):
            assert key in r, key
        assert r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"]
    skipped = {(s["backend"], s["mode"]) for s in result["skipped"]}
    assert ("diffusers", "pahi-1step") in skipped
    if not torch.cuda.is_available():
        assert ("tensorrt", "pahi-1step") in skipped


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_stages_cover_the_path(bench_result, backend):
    _, result, _ = bench_result
    rows = {(r["backend"], r["mode"]): r for r in result["rows"]}
    two = rows[(backend, "gaussian-2step")]["stages"]
    assert set(two) == set(STAGES)
    one = rows[(backend, "pahi-1step")]
    assert set(one["stages"]) == set(STAGES) - {"unet_step_2"}
    assert all(v > 0 for v in one["floor_ratio"].values())


def test_work_counts_real_flops(bench_result):
    _, result, _ = bench_result
    work = result["work"]["1"]
    assert work["unet_step"]["flops"] > 0 and work["decode"]["flops"] > 0
    assert work["text_encoder"]["bytes"] > 0


def test_markdown_and_plot_written(bench_result):
    out, _, output = bench_result
    md = (out / "r.md").read_text()
    assert "| Method | Backend | Precision |" in md and "| PAHI | torch | fp32 |" in md
    assert "unet_step_1" in md and md.strip() in output
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_lists_are_one_line_errors():
    r = runner.invoke(app, ["bench", "--model", "tiny", "--backends", "torch,nope"])
    assert r.exit_code == 2 and "unknown nope" in r.output
    r = runner.invoke(app, ["bench", "--model", "tiny", "--modes", "three-step"])
    assert r.exit_code == 2 and "unknown three-step" in r.output


def test_score_column(bench_result):
    out, result, _ = bench_result
    assert result["scorer"] == "synthetic_scorers:fixed_colour=1"
    assert all(isinstance(r["score"], float) for r in result["rows"])
    assert "Score: mean of" in (out / "r.md").read_text()


def test_no_fused_times_component_graphs(tmp_path, monkeypatch):
    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path / "cache"))
    r = runner.invoke(app, [
        "bench", "--model", "tiny", "--height", "64", "--width", "64", "--warmup", "0",
        "--iters", "1", "--backends", "onnxruntime", "--modes", "gaussian-1step", "--no-fused",
        "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    manifest = json.loads(next((tmp_path / "cache").glob("*/manifest.json")).read_text())
    graphs = {a["graph"] for a in manifest["artifacts"]}
    assert "gaussian-1step" not in graphs and {"text_encoder", "unet", "decoder"} <= graphs
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["backend"] == "onnxruntime-staged" and row["stages"]["unet_step_1"] > 0


def test_table_comes_before_the_plot(tmp_path, monkeypatch):
    """A failing plot must not lose the measurements: table printed, JSON/markdown written."""
    import pahi_rt.bench.report as report
    from pahi_rt.errors import PahiError

    def broken_plot(result, path):
        raise PahiError("plot failed")

    monkeypatch.setattr(report, "plot", broken_plot)
    r = runner.invoke(app, [
        "bench", "--model", "tiny", "--height", "64", "--width", "64", "--warmup", "0",
        "--iters", "1", "--backends", "torch", "--modes", "gaussian-1step",
        "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"),
        "--plot", str(tmp_path / "r.png")])
    assert r.exit_code == 2 and "error: plot failed" in r.output, r.output
    assert "| one step | torch |" in r.output
    assert (tmp_path / "r.md").is_file() and (tmp_path / "r.json").is_file()


def test_interleaved_group_spread_cpu_and_memory(bench_result):
    """Rows that fit together form one group timed round-robin; every row has a spread, a peak
    memory (standard library only) and the result names the CPU and its features."""
    _, result, output = bench_result
    assert result["interleave"] is True and all(r["group"] >= 1 for r in result["rows"])
    for r in result["rows"]:
        assert r["min_ms"] <= r["p50_ms"] <= r["max_ms"] and r["p10_ms"] <= r["p50_ms"]
        assert r["peak_memory_mb"] and r["peak_memory_mb"] > 10
    m = result["machine"]
    assert m["cpu"] and isinstance(m["cpu_features"], list) and "bf16_units" in m
    assert "spread ms" in output and "features:" in output


def test_round_robin_order(monkeypatch):
    """After the warm-ups, timed calls alternate between the rows of a group."""
    from pahi_rt.bench import run as bench_run
    from pahi_rt.bench.harness import MemoryProbe, RowRun

    calls = []

    def row(name):
        run = RowRun(lambda p, s: calls.append(name), None, ["x"], 1, True, None,
                     MemoryProbe(False))
        return bench_run.OpenRow({"backend": name, "mode": "m", "batch": 1, "_mode": None}, run,
                                 lambda: [], 0.0, "fp32")
    group = [row("a"), row("b")]
    monkeypatch.setattr(bench_run, "make_row", lambda *a, **k: {})
    cfg = bench_run.BenchConfig(backends=("a", "b"), modes=("gaussian-1step",), iters=3)
    out = bench_run._time_group(group, cfg, 1, type("P", (), {"device": "cpu"})(), {1: {}}, None,
                                lambda m: None, lambda: None)
    assert calls == ["a", "b"] * 3 and [r["group"] for r in out] == [1, 1]


def test_peak_memory_without_psutil(monkeypatch):
    import sys

    from pahi_rt.bench.harness import MemoryProbe

    monkeypatch.setitem(sys.modules, "psutil", None)
    probe = MemoryProbe(False)
    with probe.watch():
        block = bytearray(64 * 2**20)  # touch 64 MiB
        block[::4096] = b"x" * len(block[::4096])
    assert probe.peak_mb is not None and probe.peak_mb >= 64


def test_stderr_has_no_bare_progress_or_blank_lines(tmp_path):
    r = CliRunner().invoke(app, [
        "bench", "--model", "tiny", "--height", "64", "--width", "64", "--warmup", "0",
        "--iters", "1", "--backends", "torch", "--modes", "gaussian-1step",
        "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert lines and all(line.strip() and line.strip() != "bench" for line in lines), lines


def test_plot_stages_of_fused_and_gaussian_rows():
    from pahi_rt.bench.report import plot_stages

    stages = {"text_encoder": 1.0, "head": 0.1, "unet_step_1": 5.0}
    assert plot_stages({"fused": True, "mode": "pahi-1step", "stages": stages}) == {}
    assert "head" not in plot_stages({"fused": False, "mode": "gaussian-1step",
                                      "stages": stages})
    assert plot_stages({"fused": False, "mode": "pahi-1step", "stages": stages}) == stages


def test_no_fused_stages_times_the_fused_call_only(tmp_path, monkeypatch):
    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path / "cache"))
    r = runner.invoke(app, [
        "bench", "--model", "tiny", "--height", "64", "--width", "64", "--warmup", "0",
        "--iters", "1", "--backends", "onnxruntime", "--modes", "gaussian-1step",
        "--no-fused-stages", "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["fused"] is True and row["stages"] == {} and row["p50_ms"] > 0


def test_artifacts_do_not_skip_the_torch_rows(tmp_path, tiny_artifacts):
    """--artifacts applies to the artifact rows; the torch rows run beside them."""
    r = runner.invoke(app, [
        "bench", "--model", "tiny", "--height", "64", "--width", "64", "--batch", "2",
        "--warmup", "0", "--iters", "1", "--backends", "torch,onnxruntime",
        "--modes", "gaussian-1step", "--artifacts", str(tiny_artifacts.directory),
        "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert {row["backend"] for row in result["rows"]} == {"torch", "onnxruntime"}, result


def test_decoder_recorded_and_full_vae_rows(bench_result, tmp_path):
    """The result names its decoder; `--decoder vae` benches the full VAE in our rows and in
    the stock diffusers row (its `vae`)."""
    assert bench_result[1]["decoder"] == "tiny (random TAESD)"
    r = runner.invoke(app, [
        "bench", "--model", "tiny", "--decoder", "vae", "--height", "64", "--width", "64",
        "--warmup", "1", "--iters", "1", "--backends", "torch,diffusers", "--modes",
        "gaussian-1step", "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["decoder"] == "vae" and "decoder `vae`" in (tmp_path / "r.md").read_text()
    assert {row["backend"] for row in result["rows"]} == {"torch", "diffusers"}


@pytest.mark.parametrize("steps", [1, 2])
def test_diffusers_row_on_xl_is_the_stock_xl_pipeline(tiny_xl_components, steps):
    """On an SDXL model the reference row runs StableDiffusionXLPipeline (Euler-ancestral, one
    generator per image) and renders pahi-rt's image for the same seeds."""
    import diffusers
    import numpy as np

    from pahi_rt import sampling
    from pahi_rt.bench.diffusers_row import diffusers_runner, stock_pipeline

    comps = tiny_xl_components
    pipe = stock_pipeline(comps)
    assert isinstance(pipe, diffusers.StableDiffusionXLPipeline)
    assert isinstance(pipe.scheduler, diffusers.EulerAncestralDiscreteScheduler)
    prompts, seeds = ["a red cube", "a blue ball"], [3, 4]
    got = diffusers_runner(comps, steps, 64, 64)(prompts, seeds)
    ref = sampling.generate(comps, prompts, seeds, steps=steps, height=64, width=64).numpy()
    assert ref.std() > 20
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
