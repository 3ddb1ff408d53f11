"""Writing the artifact directory's manifest: entries added or replaced, and the temporaries a
killed export left removed. Reading and verifying it is `pahi_rt.artifacts.manifest`; the file
itself is written with `pahi_rt.io.atomic_write_json` under `artifacts.manifest.directory_lock`.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path


def put_artifact(manifest: dict, entry: dict) -> None:
    """Insert or replace the entry for (graph, kind)."""
    manifest["artifacts"] = [e for e in manifest["artifacts"]
                             if (e.get("graph"), e.get("kind")) != (entry["graph"], entry["kind"])]
    manifest["artifacts"].append(entry)
    manifest["artifacts"].sort(key=lambda e: (e["kind"], e["graph"]))


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Delete the temp files/folders an interrupted export leaves (`.trace.*`, `.NAME.*`):
    call only under the directory lock, when no export can be writing them."""
    removed = []
    for p in Path(directory).iterdir():
        if _TEMPORARY.match(p.name):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p.name)
    return removed


# what export's temp files are named: .trace.NAME.onnx.XXXXXXXX (trace folders),
# .NAME.onnx.XXXXXXXX (`io.atomic_write_files` folders) and .NAME.XXXXXXXX.tmp (`io.atomic_write`)
_TEMPORARY = re.compile(r"^\.(trace\..+\.onnx\.\w{8}|[^.].*\.onnx\.\w{8}|[^.].*\.\w{8}\.tmp)$")
