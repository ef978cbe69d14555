"""Searched students vs random removal on digits: does measuring beat guessing at equal MACs and equal training?

1. search: the robust-trained digits teacher's importance report (benchmarks/results/block_importance.json, robust
   seed 0); `distill prune`'s search at each budget (fraction of the teacher's MACs), every candidate scored by a
   short KD run from the teacher and the FID proxy, the best three scored again by longer runs at two seeds (the
   finalists); the searched student is the finalist with the best refined score.
2. train: at each budget, the searched student and a random baseline from the same space (a seeded random shape,
   then units removed in a seeded random order, MACs within 5% of the searched student's), each trained with configs/digits/kd_efficient.yaml's budget (the hand-designed
   students' recipe: 1,000 steps of KD) at seeds 0/1/2, exported and scored by the protocol
   (configs/digits/teacher_eval.yaml: 2,000 samples x 3 evaluation seeds, 50 DDIM steps).
3. hand-designed: the registry's students at the nearest MACs, by the same recipe and seeds (configs/digits/
   kd_efficient.yaml at 0.10x, configs/digits/kd_bk_tiny.yaml at 0.25x: the same recipe, another student).

Stages are cached in the output JSON: a rerun skips what is there (``--stage search`` runs the first only).
Run:  OMP_NUM_THREADS=2 python benchmarks/digits_search.py   (per budget on 2 idle cores: search about 10 minutes,
      the finalists about 30, each of the nine trained students 4-10)
Writes ``benchmarks/results/digits_search.json``, and from it the plot ``docs/search_frontier.png`` (also in
TensorBoard under ``benchmarks/results/tb/search``; ``--plot-only`` redraws it from the JSON).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import yaml
from digits_runs import train_export_evaluate
from digits_students import network_costs
from figures import save_figure

from distill.data import DigitsDataModule
from distill.provenance import provenance
from distill.search.importance import DigitsFidProxy, ImportanceReport
from distill.search.search import SearchResult, refine_finalists, search
from distill.search.space import Candidate, random_removal
from distill.search.trained import ShortKD
from teachers import DiffusionTeacher

ROOT = Path(__file__).resolve().parent
TEACHER = "builtin:digits"
KD_CONFIG = "configs/digits/kd_efficient.yaml"
MAC_TOLERANCE = 0.05
#: per budget, the hand-designed student trained beside the searched one: (name, its KD config)
HAND = {
    "0.1": ("kd_efficient", "configs/digits/kd_efficient.yaml"),
    "0.25": ("kd_bk_tiny", "configs/digits/kd_bk_tiny.yaml"),
}


def robust_report() -> ImportanceReport:
    data = json.loads((ROOT / "results" / "block_importance.json").read_text())
    return ImportanceReport.from_dict(data["robust"]["0"])


def run_search(budget: float, *, steps: int) -> dict:
    teacher = DiffusionTeacher.from_pretrained(TEACHER)
    report = robust_report()
    scorer = ShortKD(teacher, lambda: DigitsDataModule(batch_size=64), DigitsFidProxy(), steps=steps)
    result = search(teacher.unet, report, budget_macs=budget * report.total_macs, scorer=scorer, log=print)
    return result.to_dict()


def run_refine(record: dict, *, steps: int, repeats: int, finalists: int) -> dict:
    """The finalists of a search record scored again (longer runs, ``repeats`` seeds); finalists already
    refined keep their score."""
    teacher = DiffusionTeacher.from_pretrained(TEACHER)
    refine = ShortKD(
        teacher, lambda: DigitsDataModule(batch_size=64), DigitsFidProxy(), steps=steps, repeats=repeats
    )
    result = refine_finalists(SearchResult.from_dict(record), refine, finalists=finalists, log=print)
    return result.to_dict()


def baseline(searched: dict, *, tries: int = 400) -> dict:
    """A random architecture from the same search space at the searched student's MACs (within MAC_TOLERANCE):
    a seeded random shape (width, separable) from the grid, then units removed in a seeded random order until the
    MACs are in the window; at least one unit removed, and not the searched candidate."""
    import random

    from distill.search.search import DEFAULT_WIDTHS
    from distill.search.space import candidate_macs

    units = [u.name for u in robust_report().units]
    target = searched["macs"]
    shapes = [(w, sep) for w in DEFAULT_WIDTHS for sep in (False, True)]
    reachable = [
        s for s in shapes if candidate_macs(TEACHER, Candidate((), *s)) >= (1 - MAC_TOLERANCE) * target
    ]
    chosen = (
        tuple(searched["candidate"]["removed_units"]),
        searched["candidate"]["width"],
        searched["candidate"]["separable"],
    )
    for seed in range(tries):
        width, separable = random.Random(seed).choice(reachable)
        result = random_removal(
            TEACHER,
            units,
            budget_macs=target * (1 + MAC_TOLERANCE),
            width=width,
            separable=separable,
            seed=seed,
        )
        c = result.candidate
        if c is None or not c.removed_units or (c.removed_units, c.width, c.separable) == chosen:
            continue
        if abs(result.macs - target) <= MAC_TOLERANCE * target:
            return {"candidate": asdict(c), "macs": result.macs, "seed": seed}
    raise SystemExit(
        f"no random architecture within {MAC_TOLERANCE:.0%} of {target:.0f} MACs in {tries} seeds"
    )


def student_yaml(candidate: dict, path: Path) -> Path:
    c = Candidate(tuple(candidate["removed_units"]), candidate["width"], candidate["separable"])
    body = {
        "class_path": "students.pruned.pruned_unet",
        "init_args": {"teacher": TEACHER, **c.student_kwargs(TEACHER)},
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def plot(result: dict, png: Path, tb_dir: Path) -> None:
    """Left: every candidate's search score against its MACs, per budget (finalists' refined scores as crosses,
    the chosen one circled). Right: the trained students' FID vs real against their MACs, the mean over training
    seeds with the seeds' spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    colours = {"0.25": "tab:blue", "0.1": "tab:purple"}
    for budget, entry in sorted(result["budgets"].items(), key=lambda kv: -float(kv[0])):
        found, colour = entry["search"], colours.get(budget, "tab:gray")
        rows = found["entries"]
        left.scatter(
            [e["macs_ratio"] for e in rows],
            [e["score"] for e in rows],
            color=colour,
            alpha=0.7,
            label=f"candidates, budget {float(budget):.2f}x",
        )
        refined = [e for e in rows if e.get("refined_score") is not None]
        if refined:
            left.scatter(
                [e["macs_ratio"] for e in refined],
                [e["refined_score"] for e in refined],
                marker="x",
                color=colour,
                label=f"finalists' refined score, {float(budget):.2f}x",
            )
        best = found["best"]
        left.scatter([best["macs_ratio"]], [best["score"]], s=180, facecolors="none", edgecolors="tab:red")
        left.axvline(float(budget), color=colour, linestyle="--", alpha=0.5)
        teacher_macs = found["teacher_macs"]
        hand = entry.get("hand_designed", {})
        for label, runs, cost, marker, tint in (
            ("searched", entry.get("trained", {}).get("searched"), best["macs"], "o", "tab:red"),
            ("random", entry.get("trained", {}).get("random"), entry["baseline"]["macs"], "s", "tab:gray"),
            (
                hand.get("name", "hand-designed"),
                entry.get("trained", {}).get("hand-designed"),
                hand.get("macs"),
                "^",
                "tab:green",
            ),
        ):
            if not runs or not cost:
                continue
            fids = [run["rows"][0]["summary"]["fid_real"]["mean"] for run in runs.values()]
            mean = sum(fids) / len(fids)
            right.errorbar(
                [cost / teacher_macs],
                [mean],
                yerr=[[mean - min(fids)], [max(fids) - mean]],
                fmt=marker,
                color=tint,
                capsize=4,
                label=f"{label} ({float(budget):.2f}x)",
            )
    left.set_yscale("log")
    left.set_xlabel("MACs per forward (x teacher)")
    left.set_ylabel("search score (FID proxy, lower is better)")
    left.set_title("Search: every candidate (red circle: chosen)", fontsize=9)
    left.legend(fontsize=7)
    right.set_xlabel("MACs per forward (x teacher)")
    right.set_ylabel("FID vs real (protocol; bars: training seeds min-max)")
    right.set_title("Trained with the same KD recipe", fontsize=9)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png, tb_dir, "bench/search_frontier")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.10])
    parser.add_argument("--search-steps", type=int, default=200)
    parser.add_argument("--refine-steps", type=int, default=600)
    parser.add_argument("--refine-repeats", type=int, default=2)
    parser.add_argument("--finalists", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stage", choices=("search", "all"), default="all")
    parser.add_argument(
        "--redo-baseline", action="store_true", help="draw the baselines again (drops their runs)"
    )
    parser.add_argument(
        "--skip-hand", action="store_true", help="train only the searched and random students"
    )
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "digits_search.json")
    parser.add_argument("--png", type=Path, default=ROOT.parent / "docs" / "search_frontier.png")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the JSON")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.output.read_text()), args.png, ROOT / "results" / "tb" / "search")
        print(f"wrote {args.png}")
        return
    result = json.loads(args.output.read_text()) if args.output.is_file() else {"budgets": {}}
    work = Path(tempfile.mkdtemp(prefix="digits_search."))

    def save() -> None:
        configs = [KD_CONFIG, "configs/digits/robust.yaml", *(c for _, c in HAND.values() if c != KD_CONFIG)]
        result["meta"] = provenance(configs=configs)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")

    for budget in args.budgets:
        entry = result["budgets"].setdefault(str(budget), {})
        if "search" not in entry:
            entry["search"] = run_search(budget, steps=args.search_steps)
            save()
        # the student trained before (runs from before the finalists were refined: the first score's best)
        previous = entry.get("searched_candidate") or entry["search"]["best"]["candidate"]
        refined = [e for e in entry["search"]["entries"] if e.get("refined_score") is not None]
        if len(refined) < min(args.finalists, len(entry["search"]["entries"])):
            entry["search"] = run_refine(
                entry["search"],
                steps=args.refine_steps,
                repeats=args.refine_repeats,
                finalists=args.finalists,
            )
            save()
        best = entry["search"]["best"]
        trained = entry.setdefault("trained", {})
        if trained.get("searched") and previous != best["candidate"]:
            # the refined choice differs from the student trained before: keep those runs as what the first
            # score alone picked, and train the new choice
            entry["first_score_pick"] = {"candidate": previous, "runs": trained.pop("searched")}
        entry["searched_candidate"] = best["candidate"]
        window = abs(entry.get("baseline", {}).get("macs", 0) - best["macs"]) <= MAC_TOLERANCE * best["macs"]
        if "baseline" not in entry or args.redo_baseline or not window:
            entry["baseline"] = baseline(best)
            trained.pop("random", None)
        save()
    if args.stage == "search":
        print(f"wrote {args.output}")
        return
    for budget in args.budgets:
        entry = result["budgets"][str(budget)]
        students = [("searched", entry["searched_candidate"]), ("random", entry["baseline"]["candidate"])]
        if str(budget) in HAND and not args.skip_hand:
            students.append(("hand-designed", HAND[str(budget)]))
        for label, student in students:
            runs = entry.setdefault("trained", {}).setdefault(label, {})
            for seed in args.seeds:
                if str(seed) in runs:
                    continue
                out = work / f"{budget}_{label}_{seed}"
                out.mkdir()
                if label == "hand-designed":
                    config, overrides = student[1], []
                    entry["hand_designed"] = {"name": student[0], "config": student[1]}
                else:
                    config = KD_CONFIG
                    overrides = [f"--model.init_args.student={student_yaml(student, out / 'student.yaml')}"]
                runs[str(seed)] = train_export_evaluate(
                    config=config,
                    overrides=[*overrides, f"--seed_everything={seed}"],
                    out=out,
                    name=f"{label} {budget}x seed {seed}",
                    seeds=[0, 1, 2],
                    num_samples=args.num_samples,
                    eval_steps=[50],
                )
                if label == "hand-designed" and "macs" not in entry["hand_designed"]:
                    costs = network_costs(runs[str(seed)]["student"])
                    entry["hand_designed"]["macs"] = costs["macs_per_forward"]
                save()
    plot(result, args.png, ROOT / "results" / "tb" / "search")
    print(f"wrote {args.output} and {args.png}")


if __name__ == "__main__":
    main()
