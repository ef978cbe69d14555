"""Compare every ratio of two ``make bench`` runs (two ``benchmarks/results``-shaped folders).

Run:  python benchmarks/compare.py OLD_DIR NEW_DIR [--tolerance 0.10] [--json rerun.json] [--strict]

A ratio is anything the README quotes as "x vs y" measured side by side: the library-overhead time and memory
ratios, the sampling speed-ups, the training-speed-feature and teacher-reuse speed-ups, the teacher/student scaling ratios; the
seeded FIDs of the quality table are compared too (they should not move at all). The change is
``new / old - 1``; ``--strict`` exits 1 when any exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tables

from distill.provenance import provenance


def _rows(folder: Path, name: str) -> list[dict]:
    path = folder / f"{name}.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return data["rows"] if isinstance(data, dict) else data


def ratios(folder: str | Path) -> dict[str, float]:
    """``{quantity: value}`` of every compared ratio found in ``folder`` (missing result files are skipped)."""
    folder = Path(folder)
    out: dict[str, float] = {}
    for r in _rows(folder, "overhead"):
        out[f"overhead {r['method']}: time ratio"] = r["time_ratio"]
        out[f"overhead {r['method']}: memory ratio"] = r["memory_ratio"]
    for r in _rows(folder, "speed_features"):
        if r["variant"] != "fp32":
            out[f"speed features {r['variant']}: vs fp32"] = r["speedup_vs_fp32"]
    for r in _rows(folder, "sampling"):
        if r["speedup_vs_teacher"] != 1.0:
            out[f"sampling {r['model']}, {r['steps']} steps: speed-up"] = r["speedup_vs_teacher"]
    for r in _rows(folder, "quality_cost"):
        out[f"quality {r['model']}, {r['steps']} steps: FID vs real"] = r["fid_real"]
    reuse = folder / "teacher_reuse.json"
    if reuse.is_file():
        data = json.loads(reuse.read_text())
        out["teacher reuse, precomputed text-to-image data: speed-up"] = data["t2i"]["speedup"]
        out["teacher reuse, validation grid: speed-up"] = data["validation"]["speedup"]
    scaling: dict[tuple[int, int], dict[str, dict]] = {}
    for r in _rows(folder, "scaling"):
        scaling.setdefault((r["size"], r["batch"]), {})[r["network"]] = r
    for (size, batch), pair in sorted(scaling.items()):
        if {"teacher", "student"} <= pair.keys():
            t, s = pair["teacher"], pair["student"]
            out[f"scaling {size} px, batch {batch}: time ratio"] = t.get(
                "time_ratio", t["step_ms"] / s["step_ms"]
            )
            out[f"scaling {size} px, batch {batch}: memory ratio"] = t["activation_mib"] / s["activation_mib"]
    return out


def compare(old: dict[str, float], new: dict[str, float]) -> list[tuple[str, float, float, float]]:
    """``(quantity, old, new, relative change)`` for the quantities both runs have."""
    return [(k, old[k], new[k], new[k] / old[k] - 1.0) for k in old if k in new and old[k] != 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument(
        "--json", type=Path, help="also write the comparison here (docs/benchmarks.md renders it)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any change exceeds the tolerance")
    args = parser.parse_args(argv)
    rows = compare(ratios(args.old), ratios(args.new))
    if not rows:
        print(f"nothing to compare: no common results in {args.old} and {args.new}", file=sys.stderr)
        return 1 if args.strict else 0
    print(tables.rerun(rows, tolerance=args.tolerance))
    if args.json is not None:
        record = {
            "tolerance": args.tolerance,
            "rows": [{"quantity": k, "previous": a, "this": b, "change": c} for k, a, b, c in rows],
            "meta": provenance(),
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if args.strict and any(abs(r[3]) > args.tolerance for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
