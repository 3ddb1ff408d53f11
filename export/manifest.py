"""The artifact directory's manifest, content hashes, atomic writes and the directory lock.

manifest.json = {"format": 1, "artifacts": [{"path", "kind": "onnx"|"engine", "sha256",
"key", ...}]}. `key` is the content hash of everything an artifact was built from (weights,
configs, code version, options, TensorRT flavour/version/targets); `sha256` is the file itself,
so a truncated or edited file is caught before it is used.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

from ..errors import ArtifactError
from ..io import atomic_write_bytes

MANIFEST, LOCK = "manifest.json", ".lock"
FORMAT = 1
_DIGESTS: dict[tuple, str] = {}  # (device, inode, size, mtime_ns) -> sha256, this process only


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read once per process and file version: artifacts are replaced by
    rename (a new inode) and any edit changes size or mtime, so the key follows the content.
    A full-size fp32 UNet is 3.5 GB; re-hashing it at every check cost seconds."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def sha256_json(obj) -> str:
    """Hash of a JSON-able object with sorted keys (stable across runs)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def directory_lock(directory: str | Path) -> Iterator[None]:
    """Exclusive fcntl lock on DIR/.lock: concurrent exports into one DIR take turns."""
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


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Delete the temp files/folders an interrupted export leaves (`.trace.*`, `.NAME.*`):
    call only under the directory lock, when no export can be writing them."""
    import shutil

    removed = []
    for p in Path(directory).iterdir():
        if _TEMPORARY.match(p.name):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p.name)
    return removed


# what export's tempfile calls create: .trace.NAME.onnx.XXXXXXXX (trace folders),
# .NAME.onnx.XXXXXXXX (save folders) and .NAME.XXXXXXXX.tmp (atomic file writes)
_TEMPORARY = re.compile(r"^\.(trace\..+\.onnx\.\w{8}|[^.].*\.onnx\.\w{8}|[^.].*\.\w{8}\.tmp)$")


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
    for entry in manifest["artifacts"]:
        if entry.get("graph") == graph and entry.get("kind") == kind:
            return entry
    return None


def put_artifact(manifest: dict, entry: dict) -> None:
    """Insert or replace the entry for (graph, kind)."""
    manifest["artifacts"] = [e for e in manifest["artifacts"]
                             if (e.get("graph"), e.get("kind")) != (entry["graph"], entry["kind"])]
    manifest["artifacts"].append(entry)
    manifest["artifacts"].sort(key=lambda e: (e["kind"], e["graph"]))


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
