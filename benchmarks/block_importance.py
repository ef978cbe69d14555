"""Is the measured block ranking of the digits teacher stable? Robust training, twice, then `distill prune`.

For seeds 0 and 1: robust-train a copy of the shipped digits teacher (configs/digits/robust.yaml: output KD +
denoising with each removable unit skipped at random, 15% per unit per step), export its EMA network, and measure
every unit's importance (FID vs the teacher reference of 300 samples at 20 DDIM steps without the unit; MACs and
per-unit latency it saves). The same measurement runs on the teacher as shipped (never trained without its units)
with two proxy noise seeds, which shows how much of a ranking is proxy noise. Spearman rank correlations: between
the two robust seeds (the issue's bar: >= 0.7), between the shipped teacher's two proxy seeds, and robust vs
shipped.

Per-unit latency (each unit's median time inside a batch-1 forward, SnapFusion's latency table) is measured last,
on the shipped teacher (the robust networks share its architecture); ``--latency-only`` re-measures just that.

Run:  OMP_NUM_THREADS=2 python benchmarks/block_importance.py   (about 15 minutes on 2 cores; nothing else running)
Writes ``benchmarks/results/block_importance.json``; docs/architecture_search.md's tables come from it
(``python benchmarks/update_docs.py``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from digits_runs import export, fit

from distill.provenance import provenance
from distill.search.importance import DigitsFidProxy, measure_importance, unit_latency
from students.units import removable_units
from teachers import DiffusionTeacher

ROOT = Path(__file__).resolve().parent
CONFIG = "configs/digits/robust.yaml"


def spearman(a: dict[str, float], b: dict[str, float]) -> float:
    """Spearman's rank correlation of two scorings of the same units (average ranks for ties)."""
    names = sorted(a)

    def ranks(values: list[float]) -> torch.Tensor:
        x = torch.tensor(values, dtype=torch.float64)
        order = x.argsort()
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=torch.float64)
        for value in x.unique():  # ties share their mean rank
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks([a[n] for n in names]), ranks([b[n] for n in names])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def deltas(report: dict) -> dict[str, float]:
    return {u["name"]: u["delta"] for u in report["units"]}


def measure(folder: str, *, seed: int, num_samples: int, steps: int) -> dict:
    model = DiffusionTeacher.from_pretrained(folder)
    proxy = DigitsFidProxy(num_samples=num_samples, steps=steps, seed=seed)
    return measure_importance(model, proxy).to_dict()


def latency_table(repeats: int) -> dict:
    """Each unit's median time inside a batch-1 forward of the digits teacher (the robust networks have the same
    architecture), measured alone: run it with nothing else on the cores."""
    network = DiffusionTeacher.from_pretrained("builtin:digits").unet.eval()
    timing = unit_latency(network, removable_units(network), repeats=repeats, warmup=10)
    return {**timing, "repeats": repeats, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    parser.add_argument(
        "--max-steps", type=int, default=None, help="robust training steps (default: the config's)"
    )
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "block_importance.json")
    parser.add_argument("--latency-repeats", type=int, default=200)
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="re-measure the latency table of an existing --output only",
    )
    args = parser.parse_args()
    if args.latency_only:
        result = json.loads(args.output.read_text())
        result["latency"] = latency_table(args.latency_repeats)
        result["meta_latency"] = provenance(configs=[])
        args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.output}")
        return
    work = Path(tempfile.mkdtemp(prefix="block_importance."))
    robust, minutes = {}, {}
    for seed in args.seeds:
        out = work / f"seed{seed}"
        out.mkdir()
        overrides = [f"--seed_everything={seed}", "--trainer.enable_progress_bar=false"]
        if args.max_steps:
            overrides += [
                f"--trainer.max_steps={args.max_steps}",
                f"--trainer.val_check_interval={args.max_steps}",
            ]
        minutes[seed] = fit(config=CONFIG, overrides=overrides, out=out)
        run_dir = out / "fit" / "version_0"
        folder = export(run_dir, run_dir / "checkpoints" / "last.ckpt", out / "network", out / "export.log")
        robust[seed] = measure(str(folder), seed=0, num_samples=args.num_samples, steps=args.steps)
        print(f"seed {seed}: {minutes[seed]:.1f} min, ranking {robust[seed]['ranking']}", flush=True)
    shipped = {
        proxy_seed: measure("builtin:digits", seed=proxy_seed, num_samples=args.num_samples, steps=args.steps)
        for proxy_seed in (0, 1)
    }
    a, b = args.seeds
    result = {
        "robust": {str(seed): report for seed, report in robust.items()},
        "robust_fit_minutes": {str(seed): m for seed, m in minutes.items()},
        "shipped": {str(seed): report for seed, report in shipped.items()},
        "spearman": {
            "robust_seed_vs_seed": spearman(deltas(robust[a]), deltas(robust[b])),
            "shipped_proxy_seed_vs_seed": spearman(deltas(shipped[0]), deltas(shipped[1])),
            "robust_vs_shipped": spearman(deltas(robust[a]), deltas(shipped[0])),
        },
        "proxy": {"num_samples": args.num_samples, "steps": args.steps},
        "latency": latency_table(args.latency_repeats),
        "meta": provenance(configs=[CONFIG]),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result["spearman"], indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
