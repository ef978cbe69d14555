"""Where a result came from: the command, the commit (and whether the tree had uncommitted changes), the sha256 of
the configs it ran and the date. Every script whose numbers README or docs/ show stores this as ``meta`` in its
JSON, and the docs generator prints it under each table."""

from __future__ import annotations

import datetime
import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def config_sha256(paths: list[str | Path]) -> str:
    """sha256 over the named config files (repository-relative names and contents, in the order given)."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        full = path if path.is_absolute() else ROOT / path
        digest.update(str(path).encode() + b"\0" + full.read_bytes() + b"\0")
    return digest.hexdigest()


def provenance(*, configs: list[str | Path] = (), argv: list[str] | None = None) -> dict:
    """``meta`` for a result JSON: ``command``, ``commit``, ``dirty`` (uncommitted changes to tracked files),
    ``configs`` and their ``config_sha256``, ``date`` (UTC, ISO 8601)."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    if script.is_absolute() and ROOT in script.parents:
        script = script.relative_to(ROOT)
    return {
        "command": shlex.join(["python", str(script), *argv[1:]]),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "configs": [str(p) for p in configs],
        "config_sha256": config_sha256(list(configs)) if configs else None,
        "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
    }
