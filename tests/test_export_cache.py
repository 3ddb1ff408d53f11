"""Cache, corruption, staleness and concurrency of the artifact directory."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pahi_rt.errors import ArtifactError
from pahi_rt.artifacts import manifest as mf
from pahi_rt.artifacts.keys import source_hashes
from pahi_rt.artifacts.manifest import check_sources
from pahi_rt.export.artifacts import export_artifacts
from pahi_rt.export.build import ExportOptions
from pahi_rt.io import atomic_write_json
from pahi_rt.runtime.backend import RunConfig
from pahi_rt.specs import MODES, RenderShape
from pahi_rt.runtime.ort_backend import OrtBackend

from helpers import random_head

OPTIONS = ExportOptions(RenderShape(2, 64, 64))


def _copy(report, tmp_path) -> Path:
    out = tmp_path / "artifacts"
    shutil.copytree(report.directory, out)
    return out


def test_second_export_reuses_everything(tiny_artifacts, tiny_components, pahi_head, tmp_path):
    out = _copy(tiny_artifacts, tmp_path)
    engines = tuple(e["graph"] for e in tiny_artifacts.manifest["artifacts"]
                    if e["kind"] == "engine")
    options = ExportOptions(RenderShape(2, 64, 64), engines=engines)
    report = export_artifacts(tiny_components, out, options, pahi_head, "random pahi head")
    assert report.built == []
    assert len(report.reused) == len(tiny_artifacts.manifest["artifacts"])


def test_changed_head_rebuilds_only_what_uses_it(tiny_artifacts, tiny_components, tmp_path):
    out = _copy(tiny_artifacts, tmp_path)
    other = random_head(seed=7)
    only = ("text_encoder", "head", "pahi-1step", "gaussian-1step")
    report = export_artifacts(tiny_components, out,
                              ExportOptions(RenderShape(2, 64, 64), graphs=only), other)
    assert sorted(report.built) == ["head.onnx", "pahi-1step.onnx"]
    assert sorted(report.reused) == ["decoder.onnx", "gaussian-1step.onnx", "text_encoder.onnx",
                                     "unet.onnx"]
    with pytest.raises(ArtifactError, match="head"):
        check_sources(tiny_artifacts.directory, source_hashes(tiny_components, other))
    check_sources(out, source_hashes(tiny_components, other))


def test_file_existence_is_not_trusted(tiny_artifacts, tiny_components, pahi_head, tmp_path):
    """A truncated graph is refused by the runtime and rebuilt by the next export."""
    out = _copy(tiny_artifacts, tmp_path)
    path = out / "gaussian-1step.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    cfg = RunConfig(MODES["gaussian-1step"], RenderShape(2, 64, 64))
    backend = OrtBackend(cfg, out, tiny_components.spec, "cpu")
    with pytest.raises(ArtifactError, match="corrupt"):
        backend.session("gaussian-1step")
    report = export_artifacts(tiny_components, out, ExportOptions(
        RenderShape(2, 64, 64), graphs=("gaussian-1step", "unet")), pahi_head)
    assert report.built == ["gaussian-1step.onnx"]
    assert sorted(report.reused) == ["decoder.onnx", "text_encoder.onnx", "unet.onnx"]
    assert mf.is_intact(out, mf.find_artifact(mf.read_manifest(out), "gaussian-1step", "onnx"))


def test_stale_key_is_refused(tiny_artifacts):
    with pytest.raises(ArtifactError, match="stale"):
        mf.verified_artifact(tiny_artifacts.directory, "unet", "onnx", key="0" * 64)
    with pytest.raises(ArtifactError, match="no onnx"):
        mf.verified_artifact(tiny_artifacts.directory, "nope", "onnx")


def test_corrupt_manifest_means_rebuild(tmp_path):
    (tmp_path / mf.MANIFEST).write_text("{not json")
    assert mf.read_manifest(tmp_path)["artifacts"] == []


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from helpers import random_head
    from pahi_rt.components import load_components
    from pahi_rt.export.artifacts import export_artifacts
    from pahi_rt.export.build import ExportOptions
    from pahi_rt.specs import RenderShape
    report = export_artifacts(load_components("tiny"), sys.argv[1],
                              ExportOptions(RenderShape(1, 64, 64), graphs=("head", "decoder")),
                              random_head())
    print("built", len(report.built), "reused", len(report.reused))
""")


def test_two_concurrent_exports_do_not_corrupt(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-500:] for r in results]
    lines = sorted(r[0].strip().splitlines()[-1] for r in results)
    assert lines == ["built 0 reused 2", "built 2 reused 0"]  # the lock serialised them
    manifest = mf.read_manifest(out)
    assert {e["graph"] for e in manifest["artifacts"]} == {"head", "decoder"}
    assert all(mf.is_intact(out, e) for e in manifest["artifacts"])
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != mf.LOCK]
