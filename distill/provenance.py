"""Where a result came from: the command, the commit (and whether the tree had uncommitted changes), the sha256 of
the configs it ran and the date. ``make demo``, ``distill flops --output`` and every benchmark script whose numbers
README or docs/ show store this as ``meta`` in their JSON; the docs generator prints it under each table. Outside
a git checkout (an installed package) the commit is empty."""

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
    """sha256 over the named config files' contents, in the order given (relative names are looked up in the
    working directory, then the repository root)."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        full = next((p for p in (path, ROOT / path) if p.is_file()), path)
        digest.update(full.read_bytes() + b"\0")
    return digest.hexdigest()


def config_arguments(argv: list[str]) -> list[str]:
    """The config files named on a command line (``-c X``, ``--config X``, ``--config=X``)."""
    found = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--config="):
            found.append(arg.split("=", 1)[1])
    return found


def provenance(
    *, configs: list[str | Path] = (), argv: list[str] | None = None, module: str | None = None
) -> dict:
    """``meta`` for a result JSON: ``command``, ``commit``, ``dirty`` (uncommitted changes to tracked files),
    ``configs`` and their ``config_sha256``, ``date`` (UTC, ISO 8601). ``argv`` defaults to ``sys.argv``; with
    ``module`` the command is written as ``python -m MODULE ARGS``; ``configs`` defaults to the ``-c``/``--config``
    files on the command line."""
    argv = sys.argv if argv is None else argv
    configs = list(configs) or config_arguments(argv)
    if module is not None:  # python -m MODULE ARGS
        command = ["python", "-m", module, *argv[1:]]
    else:
        script = Path(argv[0])
        if script.is_absolute() and ROOT in script.parents:
            script = script.relative_to(ROOT)
        command = ["python", str(script), *argv[1:]]
    return {
        "command": shlex.join(command),
        "commit": _git("rev-parse", "HEAD"),
        # result files the run itself rewrites do not count as uncommitted changes to the code
        "dirty": bool(
            _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
        ),
        "configs": [str(p) for p in configs],
        "config_sha256": config_sha256(list(configs)) if configs else None,
        "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
    }
