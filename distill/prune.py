"""``distill prune``: what each removable unit of a network is worth, measured; and the student for a budget.

distill prune --model exports/robust --out importance.json            # a robust-trained network (configs/digits/robust.yaml)
distill prune --model builtin:digits --proxy distance --latency         # any sampler folder
distill prune --model exports/robust --importance importance.json --teacher builtin:digits \
    --budget-macs 0.25 --out-config student.yaml                        # search: the student at 0.25x the MACs

Every removable unit (resnet, attention, mid block: :mod:`students.units`) is skipped in turn and the sampler
scored by a quality proxy (lower is better): ``fid`` (digits: FID vs the teacher reference of ``--num-samples``
samples), ``distance`` (any teacher: sample distance to the full network's own samples); ``auto`` picks ``fid`` for
digits-shaped networks. Each unit's cost is the MACs its removal saves and, with ``--latency``, its own time inside
a batch-1 forward on this machine. Prints the ranking (least harmful first) and writes it as JSON with ``--out``.
Measure a network robust-trained with ``unit_dropping`` (``configs/digits/robust.yaml``): on a network never
trained without its units, most removals look catastrophic and the ranking answers another question.

With ``--budget-macs`` the command then searches (:mod:`distill.search.search`): for each shape (a width multiplier
for every stage, separable convolutions or not) units are removed in order of measured quality lost per MAC saved
until the budget holds; each distinct candidate is scored (``short-kd``: a short KD run from ``--teacher``, then the
FID proxy; ``predicted``: the removed units' summed measured changes) and the best is written as a student config
(``students.pruned.pruned_unet``) that any method's ``student`` takes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROXIES = ("auto", "fid", "distance")
SCORERS = ("auto", "short-kd", "predicted")


def is_digits_teacher(model) -> bool:
    """Whether the shipped digits evaluator and data fit this sampler (class-conditional 1x16x16, 10 classes)."""
    from distill.onnx_export import is_digits_shaped

    return model.cond_kind == "class" and is_digits_shaped(model.unet.config)


def build_proxy(kind: str, model, *, num_samples: int | None, steps: int | None, seed: int, prompts):
    from distill.search.importance import DigitsFidProxy, SampleDistanceProxy

    digits = is_digits_teacher(model)
    if kind == "auto":
        kind = "fid" if digits else "distance"
    if kind == "fid":
        if not digits:
            raise ValueError(
                "--proxy fid scores digits samples (16x16, one channel, 10 classes) against the shipped digits "
                "reference; use --proxy distance for this teacher"
            )
        return DigitsFidProxy(num_samples=num_samples or 300, steps=steps or 20, seed=seed)
    return SampleDistanceProxy(num_samples=num_samples or 16, steps=steps or 10, seed=seed, prompts=prompts)


def format_report(report) -> str:
    lines = [
        f"proxy: {report.proxy}; full network {report.base_score:.4f}, {report.total_macs / 1e6:.2f}M MACs per forward",
        "",
        "| unit | kind | proxy change | MACs saved | latency (ms) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    by_name = {u.name: u for u in report.units}
    for name in report.ranking():
        u = by_name[name]
        latency = f"{u.latency_ms:.3f}" if u.latency_ms is not None else "-"
        share = 100 * u.macs_saved / report.total_macs
        lines.append(
            f"| `{u.name}` | {u.kind} | {u.delta:+.4f} | {u.macs_saved / 1e6:.2f}M ({share:.1f}%) | {latency} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from distill.sample import positive_int
    from students.units import KINDS

    parser = argparse.ArgumentParser(
        prog="distill prune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="a sampler folder (unet/ + scheduler/) or builtin:NAME"
    )
    parser.add_argument("--proxy", choices=PROXIES, default="auto")
    parser.add_argument("--num-samples", type=positive_int, default=None, help="fid: 300, distance: 16")
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="sampling steps (fid: 20, distance: 10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the noise seed of the proxy's samples")
    parser.add_argument(
        "--prompts", nargs="+", default=None, help="distance proxy of a text teacher: the prompts"
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="unit kinds measured")
    parser.add_argument("--latency", action="store_true", help="also time each unit inside a batch-1 forward")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    search = parser.add_argument_group("search (with --budget-macs or --budget-latency)")
    budgets = search.add_mutually_exclusive_group()
    budgets.add_argument(
        "--budget-macs",
        type=float,
        default=None,
        help="the student's MACs per forward as a fraction of the teacher's",
    )
    budgets.add_argument(
        "--budget-latency",
        type=float,
        default=None,
        help="the student's batch-1 latency on this machine as a fraction of the teacher's (measured; idle cores)",
    )
    search.add_argument(
        "--teacher", default=None, help="what the student derives from and learns from (default: --model)"
    )
    search.add_argument(
        "--importance", type=Path, default=None, help="a report written by --out (skips measuring again)"
    )
    search.add_argument(
        "--scorer",
        choices=SCORERS,
        default="auto",
        help="short-kd: train each candidate briefly, then the FID proxy (digits); predicted: the removed units' "
        "summed measured changes (any teacher; cannot tell widths apart); auto: short-kd on digits",
    )
    search.add_argument(
        "--search-steps", type=positive_int, default=200, help="short-kd: KD steps per candidate"
    )
    search.add_argument(
        "--finalists",
        type=int,
        default=3,
        help="short-kd: the best candidates scored again by longer runs at several seeds, the student chosen "
        "among them (0: choose by the first score)",
    )
    search.add_argument(
        "--refine-steps",
        type=positive_int,
        default=None,
        help="short-kd: KD steps per finalist run (default: 3x --search-steps)",
    )
    search.add_argument(
        "--refine-repeats", type=positive_int, default=2, help="short-kd: runs (seeds) per finalist"
    )
    search.add_argument(
        "--widths", type=float, nargs="+", default=None, help="stage width multipliers searched"
    )
    search.add_argument(
        "--out-config", type=Path, default=None, help="write the chosen student as a YAML config"
    )
    search.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="draw the quality/cost frontier to this image file (needs matplotlib: the bench extra)",
    )
    parser.add_argument(
        "--tensorboard",
        type=Path,
        default=None,
        help="log the importance table and (with --budget-macs) the quality/MAC frontier to this TensorBoard folder",
    )
    args = parser.parse_args(argv)
    if args.plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            parser.error(
                "--plot draws with matplotlib, which is not installed: pip install 'distill-diffusion[bench]'"
            )
    for option in ("out", "out_config", "plot"):
        path = getattr(args, option)
        if path is not None and path.is_dir():
            parser.error(f"--{option.replace('_', '-')} {path} is a folder; pass a file name")
    if args.finalists < 0:
        parser.error(f"--finalists is a count >= 0, got {args.finalists}")
    for option, value in (("budget-macs", args.budget_macs), ("budget-latency", args.budget_latency)):
        if value is not None and not 0 < value <= 1:
            parser.error(f"--{option} is a fraction of the teacher's in (0, 1], got {value}")
    searching = args.budget_macs is not None or args.budget_latency is not None
    if not searching and (args.out_config is not None or args.teacher is not None or args.plot is not None):
        parser.error(
            "--out-config, --plot and --teacher belong to the search: pass --budget-macs or --budget-latency"
        )

    from distill.search.importance import ImportanceReport, measure_importance
    from students.units import removable_units
    from teachers import DiffusionTeacher

    try:
        model = DiffusionTeacher.from_pretrained(args.model)
        if args.importance is not None:
            report = ImportanceReport.from_dict(json.loads(args.importance.read_text()))
        else:
            proxy = build_proxy(
                args.proxy,
                model,
                num_samples=args.num_samples,
                steps=args.steps,
                seed=args.seed,
                prompts=args.prompts,
            )
            units = [u.name for u in removable_units(model.unet, kinds=args.kinds)]
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.importance is None:
        latency = args.latency or args.budget_latency is not None
        report = measure_importance(model, proxy, units=units, latency=latency)
    print(format_report(report))
    from distill.provenance import provenance

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {**report.to_dict(), "model": str(args.model), "meta": provenance(module="distill.cli")}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    if not searching:
        if args.tensorboard is not None:
            log_tensorboard(args.tensorboard, report, None)
        return
    try:
        result, teacher_source = run_search(args, model, report)
    except ValueError as error:
        parser.error(str(error))
    print(format_search(result))
    if args.tensorboard is not None:
        log_tensorboard(args.tensorboard, report, result)
    if args.plot is not None:
        figure = frontier_figure(result)
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {args.plot}")
    if args.out_config is not None:
        write_student_config(
            args.out_config, result, teacher=teacher_source, command=provenance(module="distill.cli")
        )
        print(f"wrote {args.out_config}")


def run_search(args, model, report):
    from distill.search.search import DEFAULT_WIDTHS, search
    from distill.search.trained import ShortKD
    from teachers import DiffusionTeacher

    teacher_source = args.teacher or args.model
    teacher = model if args.teacher is None else DiffusionTeacher.from_pretrained(args.teacher)
    scorer = build_scorer(args.scorer, teacher, report, steps=args.search_steps, seed=args.seed)
    refine = None
    if isinstance(scorer, ShortKD) and args.finalists > 0:
        refine = ShortKD(
            scorer.teacher,
            scorer.datamodule_factory,
            scorer.proxy,
            steps=args.refine_steps or 3 * args.search_steps,
            lr=scorer.lr,
            seed=scorer.seed,
            repeats=args.refine_repeats,
        )
    budgets = {
        "budget_macs": None if args.budget_macs is None else args.budget_macs * float(report.total_macs)
    }
    if args.budget_latency is not None:
        from distill.search.space import Candidate, candidate_latency

        budgets["budget_latency_ms"] = args.budget_latency * candidate_latency(teacher.unet, Candidate())
    result = search(
        teacher.unet,
        report,
        **budgets,
        scorer=scorer,
        widths=tuple(args.widths or DEFAULT_WIDTHS),
        refine=refine,
        finalists=max(args.finalists, 1),
        log=print,
    )
    return result, teacher_source


def build_scorer(kind: str, teacher, report, *, steps: int, seed: int):
    """``short-kd`` (digits: a short KD run per candidate, then FID vs the teacher reference) or ``predicted``
    (the removed units' summed measured quality changes; wider shapes first on ties)."""
    digits = is_digits_teacher(teacher)
    if kind == "auto":
        kind = "short-kd" if digits else "predicted"
    if kind == "short-kd":
        if not digits:
            raise ValueError(
                "--scorer short-kd trains on the digits data and scores by the digits FID proxy; use --scorer "
                "predicted for this teacher"
            )
        from distill.data import DigitsDataModule
        from distill.search.importance import DigitsFidProxy
        from distill.search.trained import ShortKD

        return ShortKD(
            teacher,
            lambda: DigitsDataModule(batch_size=64),
            DigitsFidProxy(seed=seed),
            steps=steps,
            seed=seed,
        )
    deltas = {u.name: max(u.delta, 0.0) for u in report.units}

    def predicted(candidate) -> float:
        return sum(deltas.get(name, 0.0) for name in candidate.removed_units) + 1e-9 * (1 - candidate.width)

    predicted.name = "the removed units' summed measured changes (predicted)"
    return predicted


def budget_text(result) -> str:
    if result.budget_latency_ms is not None:
        return f"{result.budget_latency_ms:.2f} ms per batch-1 forward"
    return f"{result.budget_macs / result.teacher_macs:.3f}x of the teacher's MACs"


def format_search(result) -> str:
    lines = [
        f"search under {budget_text(result)}; score: {result.scorer}"
        + (f"; finalists: {result.refine_scorer}" if result.refine_scorer else ""),
        "",
        "| width | separable | units removed | MACs (x teacher) | latency (ms) | predicted change | score | "
        "finalist score |",
        "| ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in sorted(result.entries, key=lambda e: e.score):
        c = e.candidate
        latency = f"{e.latency_ms:.2f}" if e.latency_ms is not None else "-"
        refined = f"{e.refined_score:.4f}" if e.refined_score is not None else "-"
        lines.append(
            f"| {c.width} | {'yes' if c.separable else 'no'} | {len(c.removed_units)} | "
            f"{e.macs / result.teacher_macs:.3f} | {latency} | {e.predicted_delta:+.4f} | {e.score:.4f} | "
            f"{refined} |"
        )
    best = result.best.candidate
    lines += [
        "",
        f"chosen: width {best.width}, separable {best.separable}, removed {list(best.removed_units)}",
    ]
    return "\n".join(lines)


def log_tensorboard(folder: Path, report, result) -> None:
    """The importance table as text and each unit's quality change and MACs saved as scalars (x: the unit's rank);
    with a search, every candidate's score against its MACs (x: MACs in thousands, so TensorBoard draws the
    frontier as a curve: ``search/score`` all candidates, ``search/frontier`` the Pareto front)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    try:
        writer.add_text("prune/importance", format_report(report))
        by_name = {u.name: u for u in report.units}
        for rank, name in enumerate(report.ranking()):
            writer.add_scalar("prune/quality_change_by_rank", by_name[name].delta, rank)
            writer.add_scalar("prune/macs_saved_by_rank", by_name[name].macs_saved, rank)
        if result is not None:
            writer.add_text("search/candidates", format_search(result))
            for entry in sorted(result.entries, key=lambda e: e.macs):
                writer.add_scalar("search/score", entry.score, int(entry.macs // 1000))
            for entry in result.frontier():
                writer.add_scalar("search/frontier", entry.score, int(entry.macs // 1000))
            if result.budget_latency_ms is not None:  # x: latency in microseconds
                for entry in sorted(result.entries, key=lambda e: e.latency_ms):
                    writer.add_scalar("search/score_by_latency", entry.score, int(entry.latency_ms * 1000))
            import importlib.util

            if importlib.util.find_spec("matplotlib") is not None:  # the plot too, where it can be drawn
                writer.add_figure("search/frontier_plot", frontier_figure(result), global_step=0)
    finally:
        writer.close()


def frontier_figure(result):
    """Every candidate's score against its MACs (and, under a latency budget, its latency): the Pareto front as a
    line, the budget as a dashed line, the chosen student circled, finalists' refined scores as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_x = [("MACs per forward (x teacher)", lambda e: e.macs / result.teacher_macs)]
    if result.budget_latency_ms is not None:
        axes_x.append(("batch-1 latency (ms)", lambda e: e.latency_ms))
    figure, axes = plt.subplots(1, len(axes_x), figsize=(5.5 * len(axes_x), 4), squeeze=False)
    best, front = result.best, result.frontier()
    for ax, (label, x) in zip(axes[0], axes_x, strict=True):
        ax.scatter(
            [x(e) for e in result.entries],
            [e.score for e in result.entries],
            color="tab:blue",
            label="candidate",
        )
        ax.plot(
            [x(e) for e in front], [e.score for e in front], color="tab:blue", alpha=0.5, label="frontier"
        )
        refined = [e for e in result.entries if e.refined_score is not None]
        if refined:
            ax.scatter(
                [x(e) for e in refined],
                [e.refined_score for e in refined],
                marker="x",
                color="tab:orange",
                label="finalist (refined score)",
            )
        ax.scatter([x(best)], [best.score], s=160, facecolors="none", edgecolors="tab:red", label="chosen")
        if label.startswith("MACs") and result.budget_macs is not None:
            ax.axvline(result.budget_macs / result.teacher_macs, color="gray", linestyle="--", label="budget")
        if label.startswith("batch-1") and result.budget_latency_ms is not None:
            ax.axvline(result.budget_latency_ms, color="gray", linestyle="--", label="budget")
        ax.set_xlabel(label)
        ax.set_ylabel("score (lower is better)")
        if all(e.score > 0 for e in result.entries):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    axes[0][0].set_title(f"search under {budget_text(result)}", fontsize=9)
    figure.tight_layout()
    return figure


def write_student_config(path: Path, result, *, teacher: str, command: dict) -> None:
    """The chosen student as a ``class_path``/``init_args`` YAML that a method's ``student`` takes
    (``--model.init_args.student=PATH``)."""
    import yaml

    best = result.best
    init_args = {"teacher": str(teacher), **best.candidate.student_kwargs(teacher)}
    header = [
        f"# distill prune: the searched student at {best.macs / result.teacher_macs:.3f}x of the teacher's MACs "
        f"(budget {budget_text(result)})",
        f"# score {best.score:.4f} ({result.scorer})"
        + (f", finalist score {best.refined_score:.4f}" if best.refined_score is not None else "")
        + f"; commit {command.get('commit', '')[:10]}",
        "# use: distill fit -c configs/digits/kd.yaml --model.init_args.student=THIS_FILE",
    ]
    body = yaml.safe_dump(
        {"class_path": "students.pruned.pruned_unet", "init_args": init_args}, sort_keys=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + body)


if __name__ == "__main__":
    main()
