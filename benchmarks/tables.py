"""Markdown tables from committed result JSON: one pure function per table, ``(result) -> markdown``.

The measuring scripts write only JSON (``benchmarks/results/*.json``, each with ``meta``: command, commit, config
hash, date); ``benchmarks/update_docs.py`` renders these functions into the marked blocks of README.md, docs/ and
the shipped students' cards, and ``tests/test_docs_numbers.py`` re-renders every block and fails on a difference.
Formatting only: nothing here imports torch or the library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


# -- cells -------------------------------------------------------------------------------------------------------
def mean_std(summary: Mapping[str, Any], key: str, *, scale: float = 1.0, digits: int = 3) -> str:
    value = summary[key]
    return f"{value['mean'] * scale:.{digits}f} ± {value['std'] * scale:.{digits}f}"


def macs(value: float) -> str:
    """MACs as the tables write them: 4.43G, 0.71G, 37M."""
    if value >= 1e8:
        return f"{value / 1e9:.2f}G"
    return f"{value / 1e6:.0f}M"


def ratio_spread(value: float, quartiles: Sequence[float] | None, *, digits: int = 3) -> str:
    """A ratio with its interquartile range over the paired repeats: ``1.016x (1.004-1.027)``."""
    if quartiles is None:
        return f"{value:.{digits}f}x"
    lo, hi = quartiles
    return f"{value:.{digits}f}x ({lo:.{digits}f}-{hi:.{digits}f})"


def source_line(path: str, meta: Mapping[str, Any] | None, *, older: bool = False) -> str:
    """The provenance line printed under every generated table (``older``: some entries of the file predate
    recorded provenance; ``meta`` is then the newest entry's)."""
    if not meta:
        return f"<sub>Source: `{path}` (written before results recorded their commit).</sub>"
    commit = (meta.get("commit") or "unknown")[:10]
    dirty = " with uncommitted changes" if meta.get("dirty") else ""
    date = (meta.get("date") or "")[:10]
    partly = "; some of its entries are older and record no commit" if older else ""
    return f"<sub>Source: `{path}`, written by `{meta['command']}` at commit {commit}{dirty} on {date}{partly}.</sub>"


def protocol_cells(summary: Mapping[str, Any]) -> str:
    """FID vs real | FID vs teacher ref | KID vs real (x1e3) | accuracy (%): the protocol's columns."""
    return (
        f"{mean_std(summary, 'fid_real')} | {mean_std(summary, 'fid_ref')} | "
        f"{mean_std(summary, 'kid_real', scale=1e3, digits=2)} | {mean_std(summary, 'accuracy', scale=100, digits=1)}"
    )


def _by_steps(entry: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    return {int(row["steps"]): row["summary"] for row in entry["rows"]}


# -- digits: the shipped teacher and students (benchmarks/results/shipped_students.json) --------------------------
STEP_STUDENTS = (
    ("progressive", "digits_progressive_1step"),
    ("progressive", "digits_progressive_2step"),
    ("progressive", "digits_progressive_4step"),
    ("progressive", "digits_progressive_8step"),
    ("consistency", "digits_consistency"),
    ("DMD2", "digits_dmd2_1step"),
    ("DMD2", "digits_dmd2_2step"),
)


def step_distillation(shipped: Mapping[str, Any]) -> str:
    """The headline: the teacher's DDIM at 50/8/4/2/1 steps and every shipped step-distilled student."""
    teacher = shipped["teacher"]
    teacher_steps = _by_steps(teacher)
    lines = [
        "| model | steps | MACs / sample | FID vs real | FID vs teacher ref | KID vs real (x1e3) | accuracy (%) | "
        "FID vs real: teacher DDIM at the same steps / this |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for steps in sorted(teacher_steps, reverse=True):
        s = teacher_steps[steps]
        lines.append(
            f"| teacher, DDIM | {steps} | {macs(teacher['macs_per_forward'] * steps)} | {protocol_cells(s)} | |"
        )
    for method, name in STEP_STUDENTS:
        if name not in shipped:
            continue
        entry = shipped[name]
        for steps, s in sorted(_by_steps(entry).items()):
            versus = ""
            if steps in teacher_steps:
                versus = f"{teacher_steps[steps]['fid_real']['mean'] / s['fid_real']['mean']:.1f}x"
            lines.append(
                f"| {method} (`{name}`) | {steps} | {macs(entry['macs_per_forward'] * steps)} | "
                f"{protocol_cells(s)} | {versus} |"
            )
    return "\n".join(lines) + "\n"


def _per_seed(entry: Mapping[str, Any], steps: int, key: str = "fid_real") -> dict[int, float]:
    row = next(r for r in entry["rows"] if int(r["steps"]) == steps)
    return {int(s["seed"]): float(s[key]) for s in row["per_seed"]}


DMD2_BAR = (
    ("digits_dmd2_1step", 1, "digits_progressive_1step"),
    ("digits_dmd2_2step", 2, "digits_progressive_2step"),
)


def dmd2_bar(shipped: Mapping[str, Any]) -> str:
    """DMD2's digits students against the bar: FID vs real below the progressive student of the same step count on
    every protocol seed, mean at or below the teacher's 50-step FID (within its spread), accuracy within 1 point of
    the teacher's, at most a tenth of the teacher's MACs per forward."""
    teacher = shipped["teacher"]
    t50 = _by_steps(teacher)[50]
    lines = [
        "| student | steps | FID vs real per seed (0 / 1 / 2) | progressive, same steps, per seed | FID vs real | "
        "teacher, 50 steps | accuracy (%) | MACs / forward vs teacher's | bar met |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, steps, rival in DMD2_BAR:
        if name not in shipped or rival not in shipped:
            continue
        entry = shipped[name]
        mine, theirs = _per_seed(entry, steps), _per_seed(shipped[rival], steps)
        s = _by_steps(entry)[steps]
        below_rival = all(mine[k] < theirs[k] for k in theirs)
        at_teacher = s["fid_real"]["mean"] <= t50["fid_real"]["mean"] + t50["fid_real"]["std"]
        accuracy = abs(s["accuracy"]["mean"] - t50["accuracy"]["mean"]) <= 0.01
        ratio = entry["macs_per_forward"] / teacher["macs_per_forward"]
        cheap = round(ratio, 2) <= 0.10  # "0.10x", to the two decimals the bar is stated in
        met = below_rival and at_teacher and accuracy and cheap
        misses = [
            label
            for ok, label in (
                (below_rival, "not below progressive on every seed"),
                (at_teacher, "above the teacher's 50-step FID"),
                (accuracy, "accuracy off by more than 1 point"),
                (cheap, "more than 0.10x the MACs"),
            )
            if not ok
        ]
        lines.append(
            f"| `{name}` | {steps} | {' / '.join(f'{mine[k]:.3f}' for k in sorted(mine))} | "
            f"{' / '.join(f'{theirs[k]:.3f}' for k in sorted(theirs))} | {mean_std(s, 'fid_real')} | "
            f"{mean_std(t50, 'fid_real')} | {mean_std(s, 'accuracy', scale=100, digits=1)} | {macs(entry['macs_per_forward'])} / "
            f"{macs(teacher['macs_per_forward'])} = {ratio:.3f}x | "
            f"{'yes' if met else 'no: ' + ', '.join(misses)} |"
        )
    return "\n".join(lines) + "\n"


def seed_pattern(shipped: Mapping[str, Any]) -> str:
    """FID vs real per protocol seed of the teacher's DDIM and every shipped step-distilled student, and which seed is
    the lowest: students that follow the teacher's noise-to-image map inherit its per-seed pattern."""
    lines = [
        "| model | steps | FID vs real per seed (0 / 1 / 2) | lowest on seed |",
        "| --- | ---: | --- | ---: |",
    ]
    models = [("teacher, DDIM", "teacher"), *((f"{m} (`{n}`)", n) for m, n in STEP_STUDENTS)]
    for label, name in models:
        if name not in shipped:
            continue
        for steps in sorted(_by_steps(shipped[name]), reverse=name == "teacher"):
            seeds = _per_seed(shipped[name], steps)
            lowest = min(seeds, key=seeds.get)
            lines.append(
                f"| {label} | {steps} | {' / '.join(f'{seeds[k]:.3f}' for k in sorted(seeds))} | {lowest} |"
            )
    return "\n".join(lines) + "\n"


# entries from before the times, the start, the critic's settings, the seed and the lr schedule were recorded ran the
# config's of then: LCM's 50-step grid, the one-step student, critic GAN weight 0.3 on inputs noised up to half the
# training times, seed 0, a constant lr
def _sweep_times(entry: Mapping[str, Any]) -> list[int]:
    return entry.get("timesteps", [999, 499])


def _sweep_start(entry: Mapping[str, Any]) -> str:
    return entry.get("start", "builtin:digits_dmd2_1step").removeprefix("builtin:")


def _sweep_fake(entry: Mapping[str, Any]) -> str:
    """Where the fake score starts: a shipped network's name, or ``teacher`` (a copy of the teacher)."""
    return entry.get("fake_score", "builtin:digits_efficient_kd_long").removeprefix("builtin:")


def _sweep_fake_cell(entry: Mapping[str, Any]) -> str:
    fake = _sweep_fake(entry)
    return "the teacher (a copy)" if fake == "teacher" else f"`{fake}`"


def _lr_text(value: float) -> str:
    """An lr as the tables write it: 5e-5, 2.5e-5, 1e-4."""
    mantissa, exponent = f"{value:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _sweep_lr(entry: Mapping[str, Any]) -> float:
    """The generator's lr: recorded, else the override in the entry's command, else the config's 5e-5."""
    if "generator_lr" in entry:
        return float(entry["generator_lr"])
    found = re.search(r"--model\.init_args\.optimizer\.init_args\.lr=(\S+)", entry.get("trained_by", ""))
    return float(found.group(1)) if found else 5e-5


def _sweep_lr_cell(entry: Mapping[str, Any]) -> str:
    cosine = entry.get("generator_lr_schedule", "constant") != "constant"
    return _lr_text(_sweep_lr(entry)) + (", cosine to 0" if cosine else "")


def _sweep_regression_cell(entry: Mapping[str, Any]) -> str:
    """DMD's regression weight, with the images per batch given a teacher pair where not all (0: none)."""
    weight, rows = entry.get("regression_weight", 0.0), entry.get("regression_batch_size")
    return f"{weight:g}" + (f" ({rows} per batch)" if weight and rows is not None else "")


def _sweep_ratio_cell(entry: Mapping[str, Any]) -> str:
    """Critic updates per generator update, with the run's batches where not the config's 9,000."""
    ratio, batches = entry.get("update_ratio", 5), entry.get("batches", 9000)
    return f"{ratio}" + (f" ({batches:,} batches)" if batches != 9000 else "")


def _sweep_setting(entry: Mapping[str, Any], *, seed: bool = True) -> tuple:
    return (
        _sweep_start(entry),
        _sweep_fake(entry),
        entry.get("update_ratio", 5),
        entry.get("batches", 9000),
        entry.get("regression_weight", 0.0),
        entry.get("regression_batch_size") or 0,
        tuple(_sweep_times(entry)),
        -_sweep_lr(entry),
        entry.get("generator_lr_schedule", "constant"),
        entry["gan_generator_weight"],
        entry.get("gan_critic_weight", 0.3),
        -entry.get("gan_time_max", 0.5),
        entry.get("dm_time_min", 0.02),
        *((entry.get("seed", 0),) if seed else ()),
    )


def dmd2_2step_sweep(sweep: Mapping[str, Any]) -> str:
    """The two-step DMD2 student in each setting (GAN weights and noise range, the distribution-matching gradient's
    noise range, generator lr, sampling times, the generator's and the fake score's starting points, training seed;
    the shipped one first), per protocol seed, against the progressive two-step student it has to beat on every
    seed."""
    rival = _per_seed(sweep["progressive"], 2)
    lines = [
        "| generator GAN weight | critic GAN weight | critic updates per generator update | GAN noise up to | "
        "DM gradient noise from | regression weight | generator lr | sampling times | generator starts from | fake score starts from | "
        "training seed | FID vs real per seed (0 / 1 / 2) | below progressive on seeds | FID vs real | FID vs teacher "
        "ref | accuracy (%) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    variants = sorted(sweep["variants"].items(), key=lambda item: _sweep_setting(item[1]))
    # a variant that is the shipped student's own run (its settings, its protocol numbers) stands for it, first
    ship = sweep["shipped"]
    same = [
        item
        for item in variants
        if _sweep_setting(item[1]) == _sweep_setting(ship) and _per_seed(item[1], 2) == _per_seed(ship, 2)
    ][:1]
    entries = (
        [*same, *(item for item in variants if item not in same)] if same else [("shipped", ship), *variants]
    )
    for label, entry in entries:
        mine, s = _per_seed(entry, 2), _by_steps(entry)[2]
        wins = [str(k) for k in sorted(rival) if mine[k] < rival[k]]
        shipped = label == "shipped" or (label, entry) in same
        weight = f"{entry['gan_generator_weight']:g}" + (" (shipped)" if shipped else "")
        lines.append(
            f"| {weight} | {entry.get('gan_critic_weight', 0.3):g} | {_sweep_ratio_cell(entry)} | "
            f"{entry.get('gan_time_max', 0.5):g} | {entry.get('dm_time_min', 0.02):g} | "
            f"{_sweep_regression_cell(entry)} | {_sweep_lr_cell(entry)} | "
            f"{', '.join(map(str, _sweep_times(entry)))} | `{_sweep_start(entry)}` | {_sweep_fake_cell(entry)} | "
            f"{entry.get('seed', 0)} | "
            f"{' / '.join(f'{mine[k]:.3f}' for k in sorted(mine))} | {', '.join(wins) or 'none'} | "
            f"{mean_std(s, 'fid_real')} | {mean_std(s, 'fid_ref')} | {mean_std(s, 'accuracy', scale=100, digits=1)} |"
        )
    lines.append(
        f"| progressive two-step | | | | | | | | | | | {' / '.join(f'{rival[k]:.3f}' for k in sorted(rival))} | | "
        f"{mean_std(_by_steps(sweep['progressive'])[2], 'fid_real')} | | |"
    )
    return "\n".join(lines) + "\n"


def dmd2_2step_average(sweep: Mapping[str, Any]) -> str:
    """The sweep's runs whose folders were at hand, exported two ways: the last checkpoint's EMA student and the mean
    of the last four checkpoints' EMA weights (``distill export --average``); then, for each setting run at more
    than one training seed, the mean and range of the runs' FID over those seeds, both ways."""
    rival = _per_seed(sweep["progressive"], 2)
    runs = sorted(
        ((name, e) for name, e in sweep["variants"].items() if "averaged" in e),
        key=lambda item: _sweep_setting(item[1]),
    )
    lines = [
        "| generator GAN weight | critic GAN weight | critic updates per generator update | GAN noise up to | "
        "DM gradient noise from | regression weight | generator lr | sampling times | generator starts from | fake score starts from | "
        "training seed | last checkpoint: FID vs real per seed (0 / 1 / 2) | mean | mean of the last 4 checkpoints: "
        "FID vs real per seed | mean | below progressive on seeds (mean of 4) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | ---: | --- | ---: | --- |",
    ]

    def head(entry: Mapping[str, Any], seeds: str) -> str:
        return (
            f"| {entry['gan_generator_weight']:g} | {entry.get('gan_critic_weight', 0.3):g} | "
            f"{_sweep_ratio_cell(entry)} | {entry.get('gan_time_max', 0.5):g} | {entry.get('dm_time_min', 0.02):g} | "
            f"{_sweep_regression_cell(entry)} | "
            f"{_sweep_lr_cell(entry)} | "
            f"{', '.join(map(str, _sweep_times(entry)))} | `{_sweep_start(entry)}` | {_sweep_fake_cell(entry)} | "
            f"{seeds} | "
        )

    def means(entry: Mapping[str, Any]) -> tuple[float, float]:
        return (
            _by_steps(entry)[2]["fid_real"]["mean"],
            _by_steps(entry["averaged"])[2]["fid_real"]["mean"],
        )

    for _, entry in runs:
        last, mean = _per_seed(entry, 2), _per_seed(entry["averaged"], 2)
        wins = [str(k) for k in sorted(rival) if mean[k] < rival[k]]
        lines.append(
            head(entry, str(entry.get("seed", 0)))
            + f"{' / '.join(f'{last[k]:.3f}' for k in sorted(last))} | {means(entry)[0]:.3f} | "
            f"{' / '.join(f'{mean[k]:.3f}' for k in sorted(mean))} | {means(entry)[1]:.3f} | "
            f"{', '.join(wins) or 'none'} |"
        )
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for _, entry in runs:
        groups.setdefault(_sweep_setting(entry, seed=False), []).append(entry)
    for group in groups.values():
        if len(group) < 2:
            continue
        seeds = ", ".join(str(e.get("seed", 0)) for e in group)
        cells = []
        for way in (0, 1):
            values = [means(e)[way] for e in group]
            average = sum(values) / len(values)
            cells.append(f"{average:.3f} ({min(values):.3f} to {max(values):.3f})")
        lines.append(head(group[0], f"{seeds}: mean over seeds (range)") + f"| {cells[0]} | | {cells[1]} | |")
    lines.append(
        f"| progressive two-step | | | | | | | | | | | {' / '.join(f'{rival[k]:.3f}' for k in sorted(rival))} | "
        f"{_by_steps(sweep['progressive'])[2]['fid_real']['mean']:.3f} | | | |"
    )
    return "\n".join(lines) + "\n"


def dmd2_2step_merged(sweep: Mapping[str, Any]) -> str:
    """Several training seeds' runs of one setting averaged into one student (the uniform mean of their weights, a
    model soup), both from their last checkpoints and from the last four of each, beside the same runs alone."""
    rival = _per_seed(sweep["progressive"], 2)
    lines = [
        "| runs (sweep variants) | training seeds | weights averaged | FID vs real per seed (0 / 1 / 2) | below "
        "progressive on seeds | FID vs real | the runs alone: FID vs real, mean (range) | FID vs teacher ref | the "
        "runs alone: FID vs teacher ref, mean | accuracy (%) |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for merged in sweep.get("merged", {}).values():
        runs = [sweep["variants"][name] for name in merged["variants"]]
        for way, label in (("last", "last checkpoint of each"), ("last4", "last 4 checkpoints of each")):
            mine, s = _per_seed(merged[way], 2), _by_steps(merged[way])[2]
            alone = [_by_steps(run if way == "last" else run["averaged"])[2] for run in runs]
            real = [a["fid_real"]["mean"] for a in alone]
            ref = sum(a["fid_ref"]["mean"] for a in alone) / len(alone)
            wins = [str(k) for k in sorted(rival) if mine[k] < rival[k]]
            lines.append(
                f"| {', '.join(f'`{n}`' for n in merged['variants'])} | "
                f"{', '.join(map(str, merged['seeds']))} | {label} ({merged[way]['checkpoints']}) | "
                f"{' / '.join(f'{mine[k]:.3f}' for k in sorted(mine))} | {', '.join(wins) or 'none'} | "
                f"{mean_std(s, 'fid_real')} | {sum(real) / len(real):.3f} ({min(real):.3f} to {max(real):.3f}) | "
                f"{mean_std(s, 'fid_ref')} | {ref:.3f} | {mean_std(s, 'accuracy', scale=100, digits=1)} |"
            )
    lines.append(
        f"| progressive two-step | | | {' / '.join(f'{rival[k]:.3f}' for k in sorted(rival))} | | "
        f"{mean_std(_by_steps(sweep['progressive'])[2], 'fid_real')} | | | | |"
    )
    return "\n".join(lines) + "\n"


def teacher_steps(shipped: Mapping[str, Any]) -> str:
    """The shipped teacher under the protocol at each DDIM step count, and the protocol's noise floor."""
    teacher = shipped["teacher"]
    lines = [
        "| steps | FID vs real | FID vs teacher ref | KID vs real (x1e3) | accuracy (%) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for steps, s in sorted(_by_steps(teacher).items(), reverse=True):
        lines.append(f"| {steps} | {protocol_cells(s)} |")
    floor = teacher.get("noise_floor")
    if floor:
        lines.append(
            f"| noise floor (teacher vs itself, other seeds) | {mean_std(floor, 'fid_real')} | "
            f"{mean_std(floor, 'fid_ref')} | | |"
        )
    return "\n".join(lines) + "\n"


def kd_students(shipped: Mapping[str, Any]) -> str:
    """The shipped KD-distilled efficient UNets beside the teacher, at 50 DDIM steps."""
    teacher = shipped["teacher"]
    lines = [
        "| model (50 DDIM steps) | MACs / forward | FID vs real | FID vs teacher ref | accuracy (%) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    rows = [("teacher", teacher)]
    rows += [
        (f"`{name}`", shipped[name])
        for name in ("digits_efficient_kd", "digits_efficient_kd_long")
        if name in shipped
    ]
    for label, entry in rows:
        s = _by_steps(entry)[50]
        lines.append(
            f"| {label} | {macs(entry['macs_per_forward'])} | {mean_std(s, 'fid_real')} | {mean_std(s, 'fid_ref')} | "
            f"{mean_std(s, 'accuracy', scale=100, digits=1)} |"
        )
    return "\n".join(lines) + "\n"


def student_card(
    shipped: Mapping[str, Any], name: str, *, teacher_key: str = "teacher", sampler: str = "DDIM"
) -> str:
    """A shipped student's measured table (its card in students/weights/NAME/README.md)."""
    entry, teacher = shipped[name], _by_steps(shipped[teacher_key])
    lines = [
        "| steps | MACs / sample | FID vs real | FID vs teacher ref | KID vs real (x1e3) | accuracy (%) | "
        f"teacher {sampler}, same steps: FID vs real |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for steps, s in sorted(_by_steps(entry).items()):
        ref = mean_std(teacher[steps], "fid_real") if steps in teacher else ""
        lines.append(f"| {steps} | {macs(entry['macs_per_forward'] * steps)} | {protocol_cells(s)} | {ref} |")
    return "\n".join(lines) + "\n"


# -- the flow-matching digits teacher and its students (benchmarks/results/digits_flow.json) -----------------------
FLOW_TEACHER = "digits_flow_teacher"
FLOW_STUDENTS = (("KD", "digits_flow_kd"), ("consistency", "digits_flow_consistency"))


def digits_flow(results: Mapping[str, Any]) -> str:
    """The flow teacher's Euler sampler at each step count, its KD and consistency students, the noise floor, and
    each row's FID vs real as a multiple of the teacher's at 50 steps."""
    teacher = results[FLOW_TEACHER]
    teacher_steps = _by_steps(teacher)
    best = teacher_steps[50]["fid_real"]["mean"] if 50 in teacher_steps else None
    lines = [
        "| model | steps | MACs / sample | FID vs real | FID vs teacher ref | KID vs real (x1e3) | accuracy (%) | "
        "FID vs real / teacher's at 50 steps |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def row(label: str, entry: Mapping[str, Any], steps: int, s: Mapping[str, Any]) -> str:
        versus = f"{s['fid_real']['mean'] / best:.2f}x" if best else ""
        return f"| {label} | {steps} | {macs(entry['macs_per_forward'] * steps)} | {protocol_cells(s)} | {versus} |"

    for steps in sorted(teacher_steps, reverse=True):
        lines.append(row("flow teacher, Euler", teacher, steps, teacher_steps[steps]))
    for method, name in FLOW_STUDENTS:
        if name in results:
            for steps, s in sorted(_by_steps(results[name]).items()):
                lines.append(row(f"{method} (`{name}`)", results[name], steps, s))
    floor = teacher.get("noise_floor")
    if floor:
        lines.append(
            f"| noise floor (teacher vs itself, other seeds) | | | {mean_std(floor, 'fid_real')} | "
            f"{mean_std(floor, 'fid_ref')} | | | |"
        )
    return "\n".join(lines) + "\n"


# -- MACs (distill flops --output, benchmarks/flops_sd15.py) -------------------------------------------------------
def count(value: float) -> str:
    """Counts as ``distill flops`` prints them: 2.36M, 88.7M, 197K, 401.64G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def flops_pair(report: Mapping[str, Any]) -> str:
    """Teacher vs student from ``distill flops --output``: parameters, MACs per forward by category, per sample."""
    teacher, student = report["networks"]["teacher"], report["networks"]["student"]

    def categories(n: Mapping[str, Any]) -> str:
        cat = n["macs"]["by_category"]
        return f"{count(cat['conv'])} / {count(cat['linear'] + cat['matmul'])} / {count(cat['attention'])}"

    lines = [
        "| | teacher | student | student / teacher |",
        "| --- | ---: | ---: | ---: |",
        f"| parameters | {count(teacher['parameters'])} | {count(student['parameters'])} | "
        f"{student['parameters'] / teacher['parameters']:.2f} |",
        f"| MACs / forward | {count(teacher['macs_per_forward'])} | {count(student['macs_per_forward'])} | "
        f"{student['macs_per_forward'] / teacher['macs_per_forward']:.2f} |",
        f"| conv / linear and matmul / attention | {categories(teacher)} | {categories(student)} | |",
        f"| MACs / sample ({teacher['steps']} steps, {teacher['forwards_per_sample'] // teacher['steps']} forward(s) "
        f"per step) | {count(teacher['macs_per_sample'])} | {count(student['macs_per_sample'])} | "
        f"{student['macs_per_sample'] / teacher['macs_per_sample']:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def flops_sd15(result: Mapping[str, Any]) -> str:
    """The SD-1.5 UNet at 512 px by category, beside BK-SDM's published count, and the BK-SDM students."""
    s = result["summary"]
    cat = s["by_category"]
    lines = [
        "| | MACs / forward | parameters |",
        "| --- | ---: | ---: |",
        f"| SD-1.5 UNet: conv | {cat['conv'] / 1e9:.2f}G | |",
        f"| SD-1.5 UNet: linear and matmul | {(cat['linear'] + cat['matmul']) / 1e9:.2f}G | |",
        f"| SD-1.5 UNet: fused attention (Q K^T and A V) | {cat['attention'] / 1e9:.2f}G | |",
        f"| SD-1.5 UNet without attention (BK-SDM reports {s['bk_sdm_reported_sd14'] / 1e9:.0f}G, counted with thop, "
        f"which skips attention) | **{s['macs_per_forward_without_attention'] / 1e9:.2f}G** | |",
        f"| SD-1.5 UNet | **{s['macs_per_forward'] / 1e9:.2f}G** | {s['parameters'] / 1e6:.1f}M |",
    ]
    for name, student in s.get("students", {}).items():
        lines.append(
            f"| `{name}` (BK-SDM) | {student['macs_per_forward'] / 1e9:.2f}G | {student['parameters'] / 1e6:.1f}M |"
        )
    if "flop_counter_agrees" in s:
        agrees = "agrees" if s["flop_counter_agrees"] else "does not agree"
        lines.append("")
        lines.append(f"`torch.utils.flop_counter` {agrees} per category.")
    return "\n".join(lines) + "\n"


def flops_transformers(result: Mapping[str, Any]) -> str:
    """SD3-medium and FLUX.1-dev at 1024 px and their transformer students: parameters and MACs per forward, counted
    from the public configs without weights (benchmarks/flops_transformers.py)."""
    names = {"sd3_medium": "SD3-medium", "flux_dev": "FLUX.1-dev"}
    lines = [
        "| network | parameters | MACs / forward | conv, linear and matmul / attention | vs teacher (params / MACs) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, entry in result["summary"].items():
        rows = [(f"{names.get(key, key)} (teacher)", entry["teacher"], None)]
        rows += [(f"`{name}`", counted, counted) for name, counted in entry["students"].items()]
        for label, counted, student in rows:
            macs = counted["macs"]
            ratio = (
                f"{student['parameter_ratio']:.2f}x / {student['mac_ratio']:.2f}x"
                if student is not None
                else ""
            )
            lines.append(
                f"| {label} | {counted['parameters'] / 1e9:.2f}B | {counted['total'] / 1e12:.2f}T | "
                f"{(macs['linear+matmul'] + macs['conv']) / 1e12:.2f}T / {macs['attention'] / 1e12:.2f}T | {ratio} |"
            )
    return "\n".join(lines) + "\n"


# -- the demo (benchmarks/results/demo.json) ---------------------------------------------------------------------
def demo(result: Mapping[str, Any]) -> str:
    """``make demo``'s final table: the exported student and the teacher on the same noise and labels."""
    lines = [
        f"| {result['num_samples']} samples each, same noise and labels | MACs / sample | FID vs real digits | "
        "FID vs teacher ref | class accuracy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['label']} | {row['macs_per_sample'] / 1e6:.0f}M | {row['fid_real']:.3f} | {row['fid_ref']:.3f} | "
            f"{100 * row['accuracy']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


# -- benchmarks (make bench) -------------------------------------------------------------------------------------
def overhead(result: Mapping[str, Any]) -> str:
    lines = [
        "| method | LightningModule step (ms) | hand loop step (ms) | time ratio (IQR) | peak RSS Lightning (MiB) | "
        "peak RSS hand (MiB) | memory ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['lightning_ms']:.1f} | {r['hand_ms']:.1f} | "
            f"{ratio_spread(r['time_ratio'], r.get('time_ratio_q1_q3'))} | {r['lightning_mib']:.0f} | "
            f"{r['hand_mib']:.0f} | {r['memory_ratio']:.3f}x |"
        )
    return "\n".join(lines) + "\n"


def speed_features(result: Mapping[str, Any]) -> str:
    lines = [
        "| KD step, batch 64, CPU | step (ms) | vs fp32 (IQR) | first step incl. compilation (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['variant']} | {r['step_ms']:.0f} | "
            f"{ratio_spread(r['speedup_vs_fp32'], r.get('speedup_q1_q3'), digits=2)} | {r['first_step_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def teacher_reuse(result: Mapping[str, Any]) -> str:
    t2i, val, sd = result["t2i"], result["validation"], result["sd_scale"]
    lines = [
        "| what is reused | computed every time (ms) | reused (ms) | speed-up (IQR) |",
        "| --- | ---: | ---: | ---: |",
        f"| VAE latents + text embeddings (tiny SD, 64 px, KD step, batch 16) | {t2i['folder_ms']:.0f} | "
        f"{t2i['shards_ms']:.0f} | {ratio_spread(t2i['speedup'], t2i.get('speedup_q1_q3'), digits=2)} |",
        f"| teacher half of the validation grid (digits KD, one validation) | {val['sampled_ms']:.0f} | "
        f"{val['reused_ms']:.0f} | {ratio_spread(val['speedup'], val.get('speedup_q1_q3'), digits=2)} |",
        "",
        f"At SD scale (MACs per training sample, counted from the configs): VAE encoder at 512 px "
        f"{sd['vae_encoder_macs'] / 1e9:.1f}G + CLIP ViT-L text encoder {sd['text_encoder_macs'] / 1e9:.1f}G against "
        f"{sd['kd_unet_macs'] / 1e9:.0f}G for a KD step's UNets (SD-1.5 forward + BK-Small forward and backward): "
        f"encoding is {100 * sd['encode_share']:.0f}% of the arithmetic, so precomputed shards should make a "
        f"compute-bound step about {sd['predicted_speedup']:.2f}x faster.",
    ]
    return "\n".join(lines) + "\n"


def sampling(result: Mapping[str, Any]) -> str:
    lines = [
        f"| model | steps | forwards / step | ms / image (CPU, batch {result['batch']}) | MACs / image | "
        "speed-up vs teacher (IQR) | MACs ratio vs teacher |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['steps']} | {r['forwards_per_step']} | {r['ms_per_image']:.2f} | "
            f"{r['macs_per_image'] / 1e6:.0f}M | {ratio_spread(r['speedup_vs_teacher'], r.get('speedup_q1_q3'), digits=1)} | "
            f"{r['macs_ratio_vs_teacher']:.0f}x |"
        )
    return "\n".join(lines) + "\n"


def quality_cost(result: Mapping[str, Any]) -> str:
    lines = [
        f"| model | steps | MACs / sample | FID vs real ({result['samples']} samples, seed 0) | FID vs teacher ref | "
        "accuracy (%) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['steps']} | {r['macs_per_sample'] / 1e6:.0f}M | {r['fid_real']:.3f} | "
            f"{r['fid_ref']:.3f} | {100 * r['accuracy']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def scaling(result: Mapping[str, Any]) -> str:
    rows = result["rows"]
    by = {(r["network"], r["size"], r["batch"]): r for r in rows}
    sizes = sorted({r["size"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    lines = [
        "| image size | batch | teacher step (ms) | student step (ms) | time ratio (IQR) | teacher activations (MiB) | "
        "student activations (MiB) | memory ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        for batch in batches:
            t_, s_ = by[("teacher", size, batch)], by[("student", size, batch)]
            lines.append(
                f"| {size} | {batch} | {t_['step_ms']:.0f} | {s_['step_ms']:.0f} | "
                f"{ratio_spread(t_['time_ratio'], t_.get('time_ratio_q1_q3'), digits=1)} | "
                f"{t_['activation_mib']:.0f} | {s_['activation_mib']:.0f} | "
                f"{t_['activation_mib'] / s_['activation_mib']:.1f}x |"
            )
    first = (sizes[0], batches[0])
    lines.append(
        f"\nWeights + gradients + AdamW moments: teacher {by[('teacher', *first)]['state_mib']:.1f}"
        f" MiB, student {by[('student', *first)]['state_mib']:.1f} MiB."
    )
    return "\n".join(lines) + "\n"


def bench_times(result: Mapping[str, Any]) -> str:
    times = result["seconds"]
    lines = ["| benchmark | wall time (min) |", "| --- | ---: |"]
    lines += [f"| `{name}` | {seconds / 60:.1f} |" for name, seconds in times.items()]
    lines.append(f"| **all** | **{sum(times.values()) / 60:.1f}** |")
    return "\n".join(lines) + "\n"


def rerun_record(result: Mapping[str, Any]) -> str:
    """``rerun.json`` (``benchmarks/compare.py --json``) as :func:`rerun`'s table."""
    rows = [(r["quantity"], r["previous"], r["this"], r["change"]) for r in result["rows"]]
    return rerun(rows, tolerance=result["tolerance"])


def rerun(rows: Sequence[tuple[str, float, float, float]], *, tolerance: float = 0.10) -> str:
    """Every ratio of the last ``make bench`` against the run before it (``benchmarks/compare.py``)."""
    worst = max((abs(r[3]) for r in rows), default=0.0)
    outside = [r for r in rows if abs(r[3]) > tolerance]
    lines = [
        f"{len(rows)} quantities compared; largest change {100 * worst:.1f}%; "
        f"{len(outside)} outside +-{100 * tolerance:.0f}%.",
        "",
        "| quantity | previous run | this run | change |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {k} | {a:.3f} | {b:.3f} | {100 * c:+.1f}% |" for k, a, b, c in rows]
    return "\n".join(lines) + "\n"


# -- int8 on digits (benchmarks/results/deploy_digits.json) -------------------------------------------------------
DEPLOY_ROWS = (
    ("fp32 (PyTorch)", "pytorch_fp32"),
    ("int8 post-training (ExecuTorch)", "executorch_int8_ptq"),
    ("int8 quantization-aware distilled (ExecuTorch)", "executorch_int8_qad"),
)
DEPLOY_TRAJECTORY_ROWS = (
    ("post-training (histogram calibration)", "ptq"),
    ("quantization-aware distilled", "qad"),
    ("QAT calibrated by its moving-average observers, untrained", "qat_moving_average_calibration"),
)
DEPLOY_FILES = (
    ("PyTorch safetensors (fp32)", "pytorch fp32", "pytorch fp32"),
    ("ONNX fp32", "onnx fp32", "onnx fp32"),
    ("ONNX QDQ int8", "onnx int8 ptq", "onnx int8"),
    ("ExecuTorch fp32 (.pte, XNNPACK)", "executorch fp32", "executorch fp32"),
    ("ExecuTorch int8 (.pte, XNNPACK)", "executorch int8 ptq", "executorch int8"),
)


def deploy_digits(result: Mapping[str, Any]) -> str:
    """The 4-step consistency student in fp32, post-training int8 and QAD int8 by the protocol, then each file's
    size, MACs in int8 kernels and latency per forward (batch 1) side by side."""
    steps = sorted(result["steps"], reverse=True)
    lines = [
        "| model | "
        + " | ".join(f"FID vs real, {s} step{'s' if s > 1 else ''}" for s in steps)
        + f" | accuracy (%), {steps[0]} steps |",
        "| --- |" + " ---: |" * (len(steps) + 1),
    ]
    for label, key in DEPLOY_ROWS:
        rows = _by_steps(result["quality"][key])
        cells = " | ".join(mean_std(rows[s], "fid_real") for s in steps)
        lines.append(f"| {label} | {cells} | {mean_std(rows[steps[0]], 'accuracy', scale=100, digits=1)} |")
    if "trajectory" in result:
        mse = result["trajectory"]["mse"]
        lines += [
            "",
            "| int8 graph | "
            + " | ".join(f"output MSE vs fp32, {s}-step trajectories" for s in steps)
            + " |",
            "| --- |" + " ---: |" * len(steps),
        ]
        for label, key in DEPLOY_TRAJECTORY_ROWS:
            cells = " | ".join(f"{mse[key][f'steps_{s}']:.5f}" for s in steps)
            lines.append(f"| {label} | {cells} |")
    latency = result["latency_batch1"]
    lines += [
        "",
        "| file | size | MACs in int8 kernels | latency per forward, batch 1 (median, min-max) | int8 / fp32 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, file_key, time_key in DEPLOY_FILES:
        entry = result["files"][file_key]
        share = entry.get("macs", {}).get("int8_share", 0.0)
        t = latency[time_key]
        ratio = ""
        if time_key.endswith("int8"):
            fp32 = latency[time_key.replace("int8", "fp32")]["median_ms"]
            ratio = f"{t['median_ms'] / fp32:.2f}x"
        lines.append(
            f"| {label} | {entry['size_bytes'] / 1e6:.2f} MB | {100 * share:.0f}% | "
            f"{t['median_ms']:.2f} ms ({t['min_ms']:.2f}-{t['max_ms']:.2f}) | {ratio} |"
        )
    files = result["files"]
    if "teacher executorch int8" in files:
        lines += [
            "",
            "| network (parameters) | ONNX fp32 | ONNX QDQ int8 | int8 / fp32 | .pte fp32 | .pte int8 | int8 / fp32 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, prefix in (("consistency student", ""), ("digits teacher", "teacher ")):
            onnx_int8 = files[f"{prefix}onnx int8" if prefix else "onnx int8 ptq"]["size_bytes"]
            pte_int8 = files[f"{prefix}executorch int8" if prefix else "executorch int8 ptq"]["size_bytes"]
            onnx_fp32 = files[f"{prefix}onnx fp32"]["size_bytes"]
            pte_fp32 = files[f"{prefix}executorch fp32"]["size_bytes"]
            params = files[f"{prefix}pytorch fp32"]["parameters"]
            lines.append(
                f"| {label} ({params / 1e6:.2f}M) | {onnx_fp32 / 1e6:.2f} MB | {onnx_int8 / 1e6:.2f} MB | "
                f"{onnx_int8 / onnx_fp32:.2f} | {pte_fp32 / 1e6:.2f} MB | {pte_int8 / 1e6:.2f} MB | "
                f"{pte_int8 / pte_fp32:.2f} |"
            )
    return "\n".join(lines) + "\n"


# -- runtime parity of the shipped students (benchmarks/results/runtime_parity.json) --------------------------------
def _parity_cell(row: Mapping[str, Any]) -> str:
    return f"{row['max_levels']} / {100 * row['pixels_differing']:.2f}% / {row['class_changes']}"


def runtime_parity(result: Mapping[str, Any]) -> str:
    """Per shipped digits student: how far `distill sample --runtime onnx|executorch` lands from the PyTorch
    images (largest pixel difference in 8-bit levels / share of pixels differing / images read as another digit),
    then the quantized programs measured beside them and the 4-bit-weight program's coverage."""
    tol = result["tolerance"]
    students = result["students"]
    lines = [
        "| shipped student | ONNX fp32 | ExecuTorch fp32 | within tolerance |",
        "| --- | ---: | ---: | :---: |",
    ]
    for name in sorted(students):
        rows = students[name]["runtimes"]
        ok = all(r["within_tolerance"] for label, r in rows.items() if label.endswith("fp32"))
        lines.append(
            f"| `{name}` | {_parity_cell(rows['onnx fp32'])} | {_parity_cell(rows['executorch fp32'])} | "
            f"{'yes' if ok else 'NO'} |"
        )
    images = next(iter(students.values()))["runtimes"]["onnx fp32"]["images"]
    lines += [
        "",
        f"Cells: largest pixel difference from the PyTorch PNGs (8-bit levels) / pixels differing / images the digits "
        f"classifier reads as another digit, over {images} images (labels 0-9 x {images // 10}, seed "
        f"{result['seed']}, each folder's default step count). Tolerance: every pixel within {tol['max_levels']} "
        f"level, {tol['class_changes']} digits changed.",
    ]
    quantized = [
        (name, label, row)
        for name in sorted(students)
        for label, row in students[name]["runtimes"].items()
        if not label.endswith("fp32")
    ]
    if quantized:
        lines += ["", "| quantized program (not held to the tolerance) | vs PyTorch fp32 |", "| --- | ---: |"]
        lines += [f"| `{name}` {label} | {_parity_cell(row)} |" for name, label, row in quantized]
    for name in sorted(students):
        int4w = students[name].get("int4w")
        if int4w is None:
            continue
        macs = int4w["macs"]
        lines += [
            "",
            f"`{name}` with `--quantize int4w` (group size {int4w['group_size']}): "
            f"{len(int4w['quantized_layers'])} linear layers hold 4-bit weights "
            f"({len(int4w['float_layers'])} {'stays' if len(int4w['float_layers']) == 1 else 'stay'} fp32: input "
            "width not a multiple of the group), covering "
            f"{100 * macs['int8_share']:.1f}% of the forward's {macs['total'] / 1e6:.2f}M MACs (the convolutions "
            f"carry the rest); program {int4w['size_bytes'] / 1e6:.2f} MB vs {int4w['fp32_size_bytes'] / 1e6:.2f} MB "
            f"fp32; relative RMS difference from torchao's PyTorch model {int4w['parity']['relative_rmse']:.1e}.",
        ]
    return "\n".join(lines) + "\n"


# -- block importance on digits (benchmarks/results/block_importance.json) -----------------------------------------
def block_importance(result: Mapping[str, Any]) -> str:
    """Each removable unit of the digits teacher: what removing it saves and the FID it costs, after robust training
    (two seeds) and as shipped; then the rank correlations."""
    seeds = sorted(result["robust"], key=int)
    robust = {s: {u["name"]: u for u in result["robust"][s]["units"]} for s in seeds}
    shipped = {u["name"]: u for u in result["shipped"]["0"]["units"]}
    first = result["robust"][seeds[0]]
    total = first["total_macs"]
    lines = [
        "| unit | kind | MACs saved | latency (ms) | "
        + " | ".join(f"FID change, robust seed {s}" for s in seeds)
        + " | FID change, shipped teacher |",
        "| --- | --- | ---: | ---: |" + " ---: |" * (len(seeds) + 1),
    ]
    latency = result["latency"]["units"]
    for name in first["ranking"]:
        u = robust[seeds[0]][name]
        cells = " | ".join(f"{robust[s][name]['delta']:+.3f}" for s in seeds)
        lines.append(
            f"| `{name}` | {u['kind']} | {u['macs_saved'] / 1e6:.2f}M ({100 * u['macs_saved'] / total:.1f}%) | "
            f"{latency[name]:.3f} | {cells} | {shipped[name]['delta']:+.3f} |"
        )
    rho = result["spearman"]
    bases = ", ".join(f"seed {s} {result['robust'][s]['base_score']:.3f}" for s in seeds)
    lines += [
        "",
        f"Rows: least harmful first (robust seed {seeds[0]}). FID vs the teacher reference, "
        f"{result['proxy']['num_samples']} samples at {result['proxy']['steps']} DDIM steps; full networks: robust "
        f"{bases}, shipped {result['shipped']['0']['base_score']:.3f}; forward {total / 1e6:.2f}M MACs. Latency: the "
        f"unit's median time inside a batch-1 forward on this machine's CPU ({result['latency']['repeats']} forwards, "
        f"whole forward {result['latency']['total']:.2f} ms; a mid block's time includes its resnet's).",
        "",
        "| Spearman rank correlation of the FID changes | |",
        "| --- | ---: |",
        f"| robust training, seed {seeds[0]} vs seed {seeds[1]} | {rho['robust_seed_vs_seed']:.2f} |",
        f"| shipped teacher, proxy noise seed 0 vs 1 | {rho['shipped_proxy_seed_vs_seed']:.2f} |",
        f"| robust (seed {seeds[0]}) vs shipped | {rho['robust_vs_shipped']:.2f} |",
    ]
    return "\n".join(lines) + "\n"


# -- the search on digits (benchmarks/results/digits_search.json) --------------------------------------------------
def digits_search(result: Mapping[str, Any]) -> str:
    """Per budget: every candidate the search scored (the frontier and the finalists marked), the chosen one and the
    random baseline; then, where trained, the searched, random and hand-designed students by the protocol, and
    whether the searched student beat the random one on every training seed."""
    lines: list[str] = []
    for budget in sorted(result["budgets"], key=float, reverse=True):
        entry = result["budgets"][budget]
        found = entry["search"]
        front = {json_key(e["candidate"]) for e in found["frontier"]}
        best = json_key(found["best"]["candidate"])
        refine = f"; finalists: {found['refine_scorer']}" if found.get("refine_scorer") else ""
        lines += [
            f"Budget {float(budget):.2f}x of the teacher's MACs (score: {found['scorer']}{refine}):",
            "",
            "| width | separable | units removed | MACs (x teacher) | predicted FID change | score | finalist score | |",
            "| ---: | :---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for e in sorted(found["entries"], key=lambda e: e["score"]):
            c = e["candidate"]
            mark = "chosen" if json_key(c) == best else ("frontier" if json_key(c) in front else "")
            refined = f"{e['refined_score']:.3f}" if e.get("refined_score") is not None else "-"
            lines.append(
                f"| {c['width']} | {'yes' if c['separable'] else 'no'} | {len(c['removed_units'])} | "
                f"{e['macs_ratio']:.3f} | {e['predicted_delta']:+.3f} | {e['score']:.3f} | {refined} | {mark} |"
            )
        base = entry["baseline"]
        bc = base["candidate"]
        lines += [
            "",
            f"Chosen: {shape_text(found['best']['candidate'])}. Random baseline (seed {base['seed']}): width "
            f"{bc['width']}, {'separable' if bc['separable'] else 'plain'}, {len(bc['removed_units'])} random "
            f"units removed, {base['macs'] / found['teacher_macs']:.3f}x MACs.",
            "",
        ]
        trained = entry.get("trained")
        if not trained:
            continue
        hand = entry.get("hand_designed", {})
        students = [
            ("searched", trained.get("searched", {}), found["best"]["macs"]),
            ("random", trained.get("random", {}), base["macs"]),
            (f"hand-designed (`{hand.get('name', '')}`)", trained.get("hand-designed", {}), hand.get("macs")),
        ]
        pick = entry.get("first_score_pick")
        if pick:
            cost = next(
                (
                    e["macs"]
                    for e in found["entries"]
                    if json_key(e["candidate"]) == json_key(pick["candidate"])
                ),
                None,
            )
            students.append(("first score's pick", pick["runs"], cost))
        lines += [
            "| student (same KD recipe) | MACs (x teacher) | training seed | FID vs real | FID vs teacher ref | "
            "accuracy (%) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, runs, cost in students:
            ratio = f"{cost / found['teacher_macs']:.3f}" if cost else "-"
            for seed, run in sorted(runs.items()):
                s = run["rows"][0]["summary"]
                lines.append(
                    f"| {label} | {ratio} | {seed} | {mean_std(s, 'fid_real')} | {mean_std(s, 'fid_ref')} | "
                    f"{mean_std(s, 'accuracy', scale=100, digits=1)} |"
                )
        if pick:
            lines += ["", f"First score's pick: {shape_text(pick['candidate'])}."]
        searched, random_ = trained.get("searched", {}), trained.get("random", {})
        common = sorted(set(searched) & set(random_))
        if common:
            fid = {k: run["rows"][0]["summary"]["fid_real"] for k, run in searched.items()}
            rand = {k: run["rows"][0]["summary"]["fid_real"] for k, run in random_.items()}
            wins = [k for k in common if fid[k]["mean"] < rand[k]["mean"]]
            clear = [k for k in wins if rand[k]["mean"] - fid[k]["mean"] > max(fid[k]["std"], rand[k]["std"])]
            mean = sum(fid[k]["mean"] for k in common) / len(common)
            mean_random = sum(rand[k]["mean"] for k in common) / len(common)
            lines += [
                "",
                f"Searched vs random, FID vs real: lower on {len(wins)} of {len(common)} training seeds, by more than "
                f"both runs' evaluation std on {len(clear)} (mean {mean:.3f} vs {mean_random:.3f}).",
            ]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def shape_text(candidate: Mapping[str, Any]) -> str:
    removed = ", ".join(f"`{n}`" for n in candidate["removed_units"]) or "nothing"
    return (
        f"width {candidate['width']}, {'separable' if candidate['separable'] else 'plain'} convolutions, "
        f"removed {removed}"
    )


def json_key(candidate: Mapping[str, Any]) -> tuple:
    return (tuple(candidate["removed_units"]), candidate["width"], candidate["separable"])
