"""The artifact directory's manifest, read and verified, and the directory lock.

manifest.json = {"format": 1, "artifacts": [{"path", "kind": "onnx"|"engine", "sha256",
"key", ...}]}. `key` is the content hash of everything an artifact was built from (weights,
configs, code version, options, TensorRT flavour/version/targets); `sha256` is the file itself,
so a truncated or edited file is caught before it is used. `pahi_rt.export.manifest` adds and
replaces entries; everything here only reads.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path
from typing import Iterator

from ..errors import ArtifactError
from ..io import sha256_file

MANIFEST, LOCK = "manifest.json", ".lock"
FORMAT = 1


@contextlib.contextmanager
def directory_lock(directory: str | Path) -> Iterator[None]:
    """Exclusive fcntl lock on DIR/.lock: concurrent writers into one DIR take turns."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / LOCK, "a+")
    except OSError as e:
        raise ArtifactError(f"{directory}: cannot write artifacts there ({e.strerror or e}); "
                            "choose another --out (or PAHI_RT_CACHE)") from None
    with lock as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_manifest(directory: str | Path) -> dict:
    """The manifest, or an empty one; a manifest that does not parse is treated as empty."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"format": FORMAT, "artifacts": []}
    if (not isinstance(data, dict) or data.get("format") != FORMAT
            or not isinstance(data.get("artifacts"), list)):
        return {"format": FORMAT, "artifacts": []}
    # entries that are not what export writes are dropped (their artifacts get rebuilt)
    data["artifacts"] = [e for e in data["artifacts"] if _well_formed(e)]
    return data


def _well_formed(entry) -> bool:
    return (isinstance(entry, dict) and all(isinstance(entry.get(k), str)
                                            for k in ("path", "kind", "graph", "sha256"))
            and all(isinstance(f, list) and len(f) == 2 for f in entry.get("depends", [])))


def inside(directory: str | Path, rel: str) -> Path:
    """directory/rel, refused (ArtifactError) when rel leaves the directory (../x, /abs)."""
    base = Path(directory).resolve()
    path = (base / rel).resolve()
    if path != base and base not in path.parents:
        raise ArtifactError(f"{directory}/{MANIFEST}: path '{rel}' leaves the artifact "
                            "directory; refused")
    return path


def find_artifact(manifest: dict, graph: str, kind: str) -> dict | None:
    """The manifest entry of `graph`'s artifact of `kind` ("onnx" | "engine"), or None."""
    for entry in manifest["artifacts"]:
        if entry.get("graph") == graph and entry.get("kind") == kind:
            return entry
    return None


def artifact_files(entry: dict) -> list[tuple[str, str]]:
    """(relative path, sha256) of every file an entry consists of: the graph, its external
    data, and for a composed graph the component data files it reads its weights from."""
    files = [(entry["path"], entry["sha256"])]
    if entry.get("external_data"):
        files.append((entry["external_data"], entry["external_data_sha256"]))
    return files + [tuple(f) for f in entry.get("depends", [])]


def is_intact(directory: str | Path, entry: dict | None) -> bool:
    """True when every file of the entry exists and has the recorded sha256."""
    if not entry:
        return False
    for rel, digest in artifact_files(entry):
        path = inside(directory, rel)
        if not path.is_file() or sha256_file(path) != digest:
            return False
    return True


def verified_artifact(directory: str | Path, graph: str, kind: str, key: str | None = None
                      ) -> tuple[Path, dict]:
    """Path and entry of a usable artifact, or ArtifactError saying what is wrong and what to do."""
    directory = Path(directory)
    entry = find_artifact(read_manifest(directory), graph, kind)
    fix = "re-run `pahi-rt export` into this directory"
    if entry is None:
        raise ArtifactError(f"{directory}: no {kind} for '{graph}' in {MANIFEST}; {fix}")
    if key is not None and entry.get("key") != key:
        raise ArtifactError(f"{directory / entry['path']} is stale: it was built from other "
                            f"weights, code or options than requested; {fix}")
    if not is_intact(directory, entry):
        raise ArtifactError(f"{directory / entry['path']} is missing or corrupt (sha256 does not "
                            f"match {MANIFEST}); {fix}")
    return inside(directory, entry["path"]), entry


def check_sources(directory: str | Path, sources: dict) -> dict:
    """The manifest of `directory`, refused (ArtifactError) when it was exported from other
    weights, configs or code than `sources` (from `keys.source_hashes`) describe."""
    manifest = read_manifest(directory)
    how = f"export into it with `pahi-rt export --out {directory}` (same model and options)"
    if not Path(directory).is_dir():
        raise ArtifactError(f"--artifacts {directory}: no such directory; {how}")
    if not manifest["artifacts"]:
        raise ArtifactError(f"--artifacts {directory}: no usable {MANIFEST} (missing, "
                            f"unreadable or empty); {how}")
    recorded = manifest.get("sources") or {}
    changed = sorted(k for k in sources if recorded.get(k) != sources[k])
    if changed:
        raise ArtifactError(f"{directory} was exported from other {', '.join(changed)} than "
                               "this model/head; re-run `pahi-rt export` into it")
    return manifest
