"""``make bench``: rerun every benchmark behind the README's tables, time each, compare with the previous run and
render the tables into docs/.

Run:  python benchmarks/run_all.py [--only overhead scaling ...] [--threads 2]

1. the previous results (``benchmarks/results/*.json``) are kept in ``benchmarks/results/previous/``;
2. each script runs in its own process with ``OMP_NUM_THREADS`` set, its wall time recorded
   (``benchmarks/results/bench_times.json``);
3. every ratio is compared with the previous run (``benchmarks/compare.py`` -> ``benchmarks/results/rerun.json``);
4. ``benchmarks/update_docs.py`` renders every table of README.md and docs/ from the JSON results.

A failing script stops the run before anything is compared or copied, so README never mixes runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from distill.provenance import provenance

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

# (name, arguments): the settings the README's tables were measured with
SCRIPTS: list[tuple[str, list[str]]] = [
    ("overhead", ["benchmarks/overhead.py", "--steps", "30", "--warmup", "3"]),
    ("sampling_quality", ["benchmarks/sampling_quality.py", "--repeats", "5"]),
    (
        "scaling",
        ["benchmarks/scaling.py", "--batches", "16", "64", "--sizes", "16", "32", "64", "--repeats", "5"],
    ),
    ("speed_features", ["benchmarks/speed_features.py", "--steps", "8", "--warmup", "3"]),
    ("teacher_reuse", ["benchmarks/teacher_reuse.py", "--steps", "6", "--repeats", "3"]),
]


def keep_previous(results: Path = RESULTS) -> Path:
    """Copy the current ``*.json`` results into ``results/previous`` (replacing what was there)."""
    previous = results / "previous"
    current = sorted(results.glob("*.json"))
    if current:
        if previous.exists():
            shutil.rmtree(previous)
        previous.mkdir(parents=True)
        for path in current:
            shutil.copy2(path, previous / path.name)
    return previous


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[name for name, _ in SCRIPTS], help="a subset")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every script")
    args = parser.parse_args(argv)
    repo = ROOT.parent
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    previous = keep_previous()
    times: dict[str, float] = {}
    for name, command in SCRIPTS:
        if args.only and name not in args.only:
            continue
        print(f"== {name}: {' '.join(command)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *command], cwd=repo, env=env)
        if done.returncode != 0:
            print(f"{name} failed (exit {done.returncode}); README left unchanged", file=sys.stderr)
            return done.returncode
        times[name] = time.perf_counter() - start
        print(f"== {name}: {times[name] / 60:.1f} min", flush=True)
    if not args.only:  # a partial run's total would not be make bench's wall time
        (RESULTS / "bench_times.json").write_text(
            json.dumps({"threads": args.threads, "seconds": times, "meta": provenance()}, indent=2) + "\n"
        )
    compare = [
        sys.executable,
        "benchmarks/compare.py",
        str(previous.relative_to(repo)),
        str(RESULTS.relative_to(repo)),
    ]
    subprocess.run([*compare, "--json", str(RESULTS / "rerun.json")], cwd=repo, check=True)
    subprocess.run([sys.executable, "benchmarks/update_docs.py"], cwd=repo, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
