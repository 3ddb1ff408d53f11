"""Optional packages are checked before any work: one-line error naming the extra, exit 2."""
from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from pahi_rt.cli import app
from pahi_rt.errors import MissingDependencyError
from pahi_rt.extras import check_extras, needs

runner = CliRunner()
SMALL = ["--model", "tiny", "--height", "64", "--width", "64"]


def hide(monkeypatch, *modules):
    """Make modules unimportable, as in an environment without them."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if a verb starts loading a model: the check must come first."""
    def boom(*a, **k):
        raise AssertionError("work started before the dependency check")

    import pahi_rt.components
    import pahi_rt.runtime.pipeline

    monkeypatch.setattr(pahi_rt.components, "load_components", boom)
    monkeypatch.setattr(pahi_rt.runtime.pipeline, "load_model", boom)


def assert_names_extra(result, extra, *modules):
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1, result.output
    assert f"pip install 'pahi-rt[{extra}]'" in lines[0], lines[0]
    assert all(m in lines[0] for m in modules), lines[0]
    assert "Traceback" not in result.output and "AssertionError" not in result.output


def test_bench_plot_without_matplotlib_fails_first(monkeypatch, no_work, tmp_path):
    hide(monkeypatch, "matplotlib")
    r = runner.invoke(app, ["bench", *SMALL, "--backends", "torch", "--plot",
                            str(tmp_path / "p.png")])
    assert_names_extra(r, "bench", "--plot", "matplotlib")


def test_bench_without_plot_needs_no_matplotlib():
    assert needs("bench", plot=None, scorer=[]) == []


def test_train_without_accelerate_fails_first(monkeypatch, no_work, tmp_path):
    hide(monkeypatch, "accelerate")
    r = runner.invoke(app, ["train", *SMALL, "--prompts", "p.txt", "--out", str(tmp_path)])
    assert_names_extra(r, "train", "accelerate")


def test_export_without_onnxslim_fails_first(monkeypatch, no_work, tmp_path):
    hide(monkeypatch, "onnxslim")
    r = runner.invoke(app, ["export", *SMALL, "--out", str(tmp_path)])
    assert_names_extra(r, "onnx", "onnxslim")


@pytest.mark.parametrize("artifacts,missing", [(False, ("onnx", "onnxruntime")),
                                               (True, ("onnxruntime",))])
def test_generate_onnxruntime_backend(monkeypatch, no_work, tmp_path, artifacts, missing):
    hide(monkeypatch, "onnx", "onnxruntime")
    extra = ["--artifacts", str(tmp_path)] if artifacts else []
    r = runner.invoke(app, ["generate", "x", *SMALL, "--backend", "onnxruntime", *extra,
                            "--out", str(tmp_path / "o")])
    assert_names_extra(r, "onnx", "--backend onnxruntime", *missing)
    if artifacts:  # with --artifacts nothing is exported, so onnx itself is not needed
        assert "needs onnx," not in r.output and "needs onnx " not in r.output


def test_generate_torch_needs_nothing(monkeypatch):
    hide(monkeypatch, "onnx", "onnxruntime", "onnxslim", "matplotlib", "accelerate")
    check_extras("generate", backend="torch", artifacts=None)


def test_imagereward_scorer_checked_first(monkeypatch, no_work, tmp_path):
    hide(monkeypatch, "ImageReward")
    r = runner.invoke(app, ["eval", "--head", str(tmp_path), "--model", "tiny", "--prompts",
                            "p.txt", "--scorer", "imagereward@x=0.5"])
    assert_names_extra(r, "imagereward", "ImageReward")


def test_alternatives_and_grouped_message(monkeypatch):
    hide(monkeypatch, "tensorrt", "onnx", "onnxslim")
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", sys.modules["sys"])  # "installed"
    check_extras("generate", backend="tensorrt", artifacts="a")  # either flavour will do
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(MissingDependencyError) as e:
        check_extras("generate", backend="tensorrt", artifacts=None)
    assert str(e.value).count("--backend tensorrt needs") == 1
    assert "tensorrt or tensorrt_rtx" in str(e.value)
    assert "pahi-rt[onnx,tensorrt-rtx]" in str(e.value)


def test_unknown_verb_is_a_bug():
    with pytest.raises(ValueError):
        needs("paint")


def test_serve_without_ray_fails_first(monkeypatch, no_work):
    hide(monkeypatch, "ray", "fastapi")
    r = runner.invoke(app, ["serve", *SMALL])
    assert_names_extra(r, "serve", "pahi-rt serve", "ray", "fastapi")


def test_generate_ray_without_ray_fails_first(monkeypatch, no_work, tmp_path):
    hide(monkeypatch, "ray")
    (tmp_path / "p.txt").write_text("a cat\n")
    r = runner.invoke(app, ["generate", "--prompts", str(tmp_path / "p.txt"), *SMALL, "--ray",
                            "--out", str(tmp_path / "o")])
    assert_names_extra(r, "serve", "--ray", "ray")
    assert needs("generate", backend="torch") == []  # without --ray: no Ray
