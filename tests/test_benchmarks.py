"""The benchmark tooling: the overhead benchmark's hand loops compute the library's losses, reruns are compared
ratio by ratio, and the docs' tables are rendered from the results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402
import overhead  # noqa: E402
import run_all  # noqa: E402
import tables  # noqa: E402
import update_docs  # noqa: E402

from distill.rng import GeneratorRandom  # noqa: E402


@pytest.mark.parametrize("method", overhead.METHODS)
def test_hand_loop_computes_the_library_loss(method):
    """The overhead ratio compares like with like: from the same weights, batch and global-RNG draws, the hand
    loop's first loss equals the LightningModule's ``training_losses``."""
    library = overhead.build(method)
    step = overhead.hand_step_fn(overhead.build(method), method)
    images, labels = next(iter(overhead.loader()))
    images, labels = images[:8], labels[:8]
    torch.manual_seed(1)
    expected = library.training_losses((images, labels), rng=GeneratorRandom(None))["loss"].detach()
    torch.manual_seed(1)
    got = step(images, labels)
    assert got.shape == expected.shape == ()
    assert torch.isfinite(expected) and expected > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"rows": rows}))


def _results(folder: Path, *, kd_time: float, teacher_ms: float) -> Path:
    _write(folder, "overhead", [{"method": "kd", "time_ratio": kd_time, "memory_ratio": 1.0}])
    _write(
        folder,
        "scaling",
        [
            {"network": "teacher", "size": 16, "batch": 16, "step_ms": teacher_ms, "activation_mib": 40.0},
            {"network": "student", "size": 16, "batch": 16, "step_ms": 100.0, "activation_mib": 20.0},
        ],
    )
    _write(folder, "speed_features", [{"variant": "fp32", "speedup_vs_fp32": 1.0}])
    return folder


def test_compare_reports_every_ratio_and_flags_changes(tmp_path, capsys):
    old = _results(tmp_path / "old", kd_time=1.00, teacher_ms=200.0)
    new = _results(tmp_path / "new", kd_time=1.02, teacher_ms=250.0)
    values = compare.ratios(old)
    assert values == {
        "overhead kd: time ratio": 1.0,
        "overhead kd: memory ratio": 1.0,
        "scaling 16 px, batch 16: time ratio": 2.0,
        "scaling 16 px, batch 16: memory ratio": 2.0,
    }  # fp32's own 1.0 is not a comparison
    rows = {r[0]: r[3] for r in compare.compare(values, compare.ratios(new))}
    assert rows["overhead kd: time ratio"] == pytest.approx(0.02)
    assert rows["scaling 16 px, batch 16: time ratio"] == pytest.approx(0.25)
    record = tmp_path / "rerun.json"
    assert compare.main([str(old), str(new), "--json", str(record)]) == 0  # reports, does not fail by default
    assert compare.main([str(old), str(new), "--strict"]) == 1  # the 25% change is outside 10%
    assert compare.main([str(old), str(new), "--strict", "--tolerance", "0.3"]) == 0
    result = json.loads(record.read_text())
    assert set(result["meta"]) >= {"command", "commit", "config_sha256", "date"}
    text = tables.rerun_record(result)
    assert "largest change 25.0%; 1 outside +-10%" in text
    assert "| scaling 16 px, batch 16: time ratio | 2.000 | 2.500 | +25.0% |" in text
    assert compare.main([str(tmp_path / "none"), str(new), "--strict"]) == 1  # nothing in common
    capsys.readouterr()


def test_keep_previous_copies_the_last_results(tmp_path):
    results = _results(tmp_path / "results", kd_time=1.0, teacher_ms=200.0)
    previous = run_all.keep_previous(results)
    assert sorted(p.name for p in previous.iterdir()) == [
        "overhead.json",
        "scaling.json",
        "speed_features.json",
    ]
    (results / "overhead.json").write_text("{}")
    run_all.keep_previous(results)  # replaced, not merged
    assert (previous / "overhead.json").read_text() == "{}"
    assert "| **all** | **1.5** |" in tables.bench_times({"seconds": {"a": 60.0, "b": 30.0}})


def test_blocks_are_filled_from_their_renderers():
    text = (
        "intro\n<!-- result:a -->\nold a\n<!-- /result:a -->\nmid\n<!-- result:b -->\nsame\n<!-- /result:b -->\n"
        "<!-- unverified:c -->\nkept\n<!-- /unverified:c -->\n"
    )
    out, changed = update_docs.fill(text, {"a": "| new |\n", "b": "same\n"})
    assert changed == ["a"]
    assert out == text.replace("old a", "| new |")
    with pytest.raises(KeyError, match="result:a"):
        update_docs.fill(text, {"b": "same\n"})  # a block nobody renders is an error, not a stale table


def test_ratios_are_written_with_their_spread():
    row = {"method": "kd", "lightning_ms": 101.0, "hand_ms": 100.0, "time_ratio": 1.01}
    row |= {"time_ratio_q1_q3": [1.0, 1.02], "lightning_mib": 10.0, "hand_mib": 10.0, "memory_ratio": 1.0}
    assert "| 1.010x (1.000-1.020) |" in tables.overhead({"rows": [row]})
    import paired

    median, spread = paired.paired_ratio([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert median == 6.0 and spread == [4.0, 8.0]


def test_reproduce_plan_runs_existing_configs_and_scripts(tmp_path):
    """``make reproduce`` (hours, not run here) names configs and scripts that exist, with options they accept."""
    import subprocess

    import reproduce

    plan = reproduce.stages(tmp_path)
    assert list(plan) == [
        "teacher",
        "classifier",
        "kd_efficient",
        "kd_efficient_long",
        "consistency",
        "progressive",
    ]
    scripts = set()
    for commands in plan.values():
        for command in commands:
            for arg in command:
                if arg.startswith(("configs/", "benchmarks/")):
                    assert (BENCH.parent / arg).is_file(), arg
                    if arg.endswith(".py"):
                        scripts.add((arg, tuple(a for a in command if a.startswith("--"))))
    for script, options in scripts:
        usage = subprocess.run(
            [sys.executable, script, "--help"], cwd=BENCH.parent, capture_output=True, text=True, check=True
        ).stdout
        for option in options:
            assert option in usage, f"{script} does not accept {option}"


def test_the_dmd2_sweep_table_shows_each_runs_generator_lr():  # its seventh column
    """The lr recorded with a variant, else the override in its command, else the config's 5e-5."""
    sweep = json.loads((Path(__file__).parents[1] / "benchmarks/results/dmd2_2step_sweep.json").read_text())
    entry = next(iter(sweep["variants"].values()))
    recorded = {**entry, "gan_generator_weight": 7.0, "generator_lr": 2.5e-5}
    command = {
        **entry,
        "gan_generator_weight": 8.0,
        "trained_by": "distill fit --model.init_args.optimizer.init_args.lr=1.25e-05",
    }
    default = {**entry, "gan_generator_weight": 9.0, "trained_by": "distill fit"}
    table = tables.dmd2_2step_sweep({**sweep, "variants": {"a": recorded, "b": command, "c": default}})
    rows = {
        line.split(" | ")[0]: line.split(" | ")[6] for line in table.splitlines() if line.startswith("| ")
    }
    assert rows["| 7"] == "2.5e-5" and rows["| 8"] == "1.25e-5" and rows["| 9"] == "5e-5"


def test_the_dmd2_sweep_table_marks_the_variant_that_is_the_shipped_run():
    """A variant with the shipped student's settings and protocol numbers is its run: one row, marked, first; a
    variant with the same settings but other numbers (another run) is not."""
    sweep = json.loads((Path(__file__).parents[1] / "benchmarks/results/dmd2_2step_sweep.json").read_text())
    ship = {**sweep["shipped"], "gan_generator_weight": 7.0, "seed": 0}
    same = {**ship, "trained_by": "distill fit"}
    other = json.loads(json.dumps(same))  # the same settings, other numbers: another run
    other["rows"][0]["per_seed"][0]["fid_real"] += 0.01
    reseeded = {**same, "seed": 3}
    table = tables.dmd2_2step_sweep(
        {**sweep, "shipped": ship, "variants": {"b": other, "a": same, "c": reseeded}}
    )
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [(row[0], row[10]) for row in rows[:3]] == [("| 7 (shipped)", "0"), ("| 7", "0"), ("| 7", "3")]
    assert len(rows) == 4  # no separate shipped row
    unmatched = tables.dmd2_2step_sweep({**sweep, "shipped": ship, "variants": {"b": other}})
    assert [line.split(" | ")[0] for line in unmatched.splitlines()[2:4]] == ["| 7 (shipped)", "| 7"]


def test_the_dmd2_average_table_pairs_each_run_with_its_checkpoint_mean_and_groups_training_seeds():
    """One row per run that has an averaged export (last checkpoint beside the mean of four), then per setting run
    at several training seeds the mean and range of the runs' means, both ways; runs without one are left out."""
    sweep = json.loads((Path(__file__).parents[1] / "benchmarks/results/dmd2_2step_sweep.json").read_text())
    base = next(iter(sweep["variants"].values()))

    def run(seed: int, last: float, mean: float, **settings) -> dict:
        entry = json.loads(json.dumps({**base, **settings, "seed": seed}))
        averaged = json.loads(json.dumps({"steps": [4500, 6000, 7500, 9000], "rows": entry["rows"]}))
        for rows, value in ((entry["rows"], last), (averaged["rows"], mean)):
            rows[0]["summary"]["fid_real"]["mean"] = value
            for offset, item in zip((-0.001, 0.0, 0.001), rows[0]["per_seed"], strict=True):
                item["fid_real"] = value + offset
        return {**entry, "averaged": averaged}

    variants = {
        "s0": run(0, 0.070, 0.080, gan_time_max=0.25, generator_lr_schedule="constant"),
        "s1": run(1, 0.100, 0.084, gan_time_max=0.25, generator_lr_schedule="constant"),
        "cos": run(0, 0.090, 0.060, gan_time_max=0.25, generator_lr_schedule="cosine"),
        # another setting (the regression loss) at another seed: a row of its own, never in the seeds' group
        "reg": run(2, 0.095, 0.090, gan_time_max=0.25, regression_weight=0.25, regression_batch_size=16),
        # and the fake score copied from the teacher at seed 1: its own setting too
        "fst": run(1, 0.072, 0.071, gan_time_max=0.25, fake_score="teacher"),
        # and 10 critic updates per generator update (16,500 batches) at seed 0: its own setting, never s0's group
        "r10": run(0, 0.074, 0.073, gan_time_max=0.25, update_ratio=10, batches=16500),
        # and the distribution-matching gradient above a quarter of the times at seed 1: its own setting as well
        "dm": run(1, 0.076, 0.075, gan_time_max=0.25, dm_time_min=0.25),
        "none": {k: v for k, v in base.items() if k != "averaged"},
    }
    table = tables.dmd2_2step_average({**sweep, "variants": variants})
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
    assert len(rows) == 9  # seven runs, one group of two seeds, the progressive student
    assert [(r[2], r[4], r[5], r[6], r[9], r[10], r[12], r[14]) for r in rows[:7]] == [
        ("5", "0.02", "0", "5e-5", "`digits_efficient_kd_long`", "0", "0.070", "0.080"),
        ("5", "0.02", "0", "5e-5", "`digits_efficient_kd_long`", "1", "0.100", "0.084"),
        ("5", "0.25", "0", "5e-5", "`digits_efficient_kd_long`", "1", "0.076", "0.075"),
        ("5", "0.02", "0", "5e-5, cosine to 0", "`digits_efficient_kd_long`", "0", "0.090", "0.060"),
        ("5", "0.02", "0.25 (16 per batch)", "5e-5", "`digits_efficient_kd_long`", "2", "0.095", "0.090"),
        ("10 (16,500 batches)", "0.02", "0", "5e-5", "`digits_efficient_kd_long`", "0", "0.074", "0.073"),
        ("5", "0.02", "0", "5e-5", "the teacher (a copy)", "1", "0.072", "0.071"),
    ]
    assert rows[0][13] == "0.079 / 0.080 / 0.081"
    assert rows[3][15] == "0, 1, 2"  # below the progressive student's 0.075 / 0.065 / 0.084 on every seed
    assert rows[1][15] == "none"
    assert (rows[7][10], rows[7][12], rows[7][14]) == (
        "0, 1: mean over seeds (range)",
        "0.085 (0.070 to 0.100)",
        "0.082 (0.080 to 0.084)",
    )
    assert rows[8][0] == "progressive two-step"


def test_the_dmd2_sweep_refuses_a_run_folder_of_another_variant(tmp_path):
    """--average-only reads a run's saved config: the variant's arguments (the config's where it sets none) must be
    the run's, else the averaged numbers would land on the wrong row."""
    import dmd2_2step_sweep as sweep
    import yaml

    saved = yaml.safe_load((BENCH.parent / sweep.CONFIG).read_text())
    # a run's saved config prints every argument, the defaults the config leaves out included
    saved["model"]["init_args"].update(
        lr_scheduler=None,
        timesteps=None,
        original_steps=50,
        regression_weight=0.0,
        regression_batch_size=None,
        dm_time_min=0.02,
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert sweep.differences("0.3-gt0.25", tmp_path / "config.yaml") == {}
    assert sweep.differences("0.3-gt0.25-dm0.25", tmp_path / "config.yaml") == {"dm_time_min": (0.25, 0.02)}
    assert sweep.differences("0.3-gt0.25-seed1", tmp_path / "config.yaml") == {"seed_everything": (1, 0)}
    assert sweep.differences("0.3-gt0.25-fsteacher", tmp_path / "config.yaml") == {
        "fake_score": (None, "builtin:digits_efficient_kd_long")
    }
    assert sweep.differences("0.3-gt0.25-ratio10", tmp_path / "config.yaml") == {
        "update_ratio": (10, 5),
        "trainer.max_steps": (16500, 9000),
    }
    assert sweep.overrides("0.3-gt0.25-ratio10-seed1")[1:] == [
        "--model.init_args.update_ratio=10",
        "--trainer.max_steps=16500",
        "--seed_everything=1",
    ]
    assert sweep.differences("0.3-gt0.25-cos", tmp_path / "config.yaml") == {
        "lr_scheduler.class_path": ("torch.optim.lr_scheduler.CosineAnnealingLR", None),
        "lr_scheduler.init_args.T_max": (1500, None),
    }
    assert sweep.differences("0.3-t299", tmp_path / "config.yaml") == {
        "timesteps": ([999, 299], None),
        "gan_time_max": (0.5, 0.25),
    }


def test_the_dmd2_merged_table_sets_each_seed_average_beside_its_runs_alone():
    """One row per way of merging (last checkpoints; last four of each), with the merged student's per-seed FID,
    the seeds it beats the progressive student on, and the runs' own means beside it."""
    sweep = json.loads((Path(__file__).parents[1] / "benchmarks/results/dmd2_2step_sweep.json").read_text())
    base = next(iter(sweep["variants"].values()))

    def rows(value: float, ref: float) -> list:
        found = json.loads(json.dumps(base["rows"]))
        found[0]["summary"]["fid_real"]["mean"] = value
        found[0]["summary"]["fid_ref"]["mean"] = ref
        for offset, item in zip((-0.001, -0.012, 0.001), found[0]["per_seed"], strict=True):
            item["fid_real"] = value + offset
        return found

    variants = {
        "a": {**base, "rows": rows(0.070, 0.060), "averaged": {"rows": rows(0.080, 0.050)}},
        "b": {**base, "rows": rows(0.100, 0.070), "averaged": {"rows": rows(0.090, 0.060)}},
    }
    merged = {
        "seeds": [0, 1],
        "variants": ["a", "b"],
        "last": {"checkpoints": 2, "rows": rows(0.076, 0.040)},
        "last4": {"checkpoints": 8, "rows": rows(0.084, 0.030)},
    }
    table = tables.dmd2_2step_merged({**sweep, "variants": variants, "merged": {"a + b": merged}})
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
    assert len(cells) == 3 and cells[2][0] == "progressive two-step"
    assert cells[0][:5] == [
        "`a`, `b`",
        "0, 1",
        "last checkpoint of each (2)",
        "0.075 / 0.064 / 0.077",
        "0, 1, 2",
    ]
    assert cells[0][6] == "0.085 (0.070 to 0.100)" and cells[0][8] == "0.065"
    assert cells[1][2:5] == ["last 4 checkpoints of each (8)", "0.083 / 0.072 / 0.085", "none"]
    assert cells[1][6] == "0.085 (0.080 to 0.090)" and cells[1][8] == "0.055"
    assert tables.dmd2_2step_merged({**sweep, "merged": {}}).count("\n") == 3  # header, rule, progressive


def test_the_dmd2_sweep_merges_only_runs_of_one_setting_at_other_seeds(tmp_path, capsys):
    """A model soup of runs that differ in more than the seed (or repeat one, or is a single run) is refused
    before anything is exported."""
    import argparse

    import dmd2_2step_sweep as sweep

    out = tmp_path / "sweep.json"
    out.write_text(
        json.dumps({"variants": {name: {} for name in ("0.3-gt0.25", "0.3-gt0.25-seed1", "0.3-gt0.25-cos")}})
    )
    parser = argparse.ArgumentParser()
    for runs, expected in (
        ({"0.3-gt0.25": "x", "0.3-gt0.25-cos": "y"}, "differ from 0.3-gt0.25 in more than the seed"),
        ({"0.3-gt0.25": "x"}, "two or more runs"),
        ({"0.3-gt0.25": "x", "0.3-gt0.25-seed2": "y"}, "no recorded entry"),
    ):
        with pytest.raises(SystemExit):
            sweep.merge(out, runs, parser)
        assert expected in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the right variants, but a run folder of another variant
        (tmp_path / "run").mkdir()
        saved = {"seed_everything": 0, "model": {"init_args": {"gan_time_max": 0.25}}}
        (tmp_path / "run" / "config.yaml").write_text(json.dumps(saved))
        sweep.merge(
            out, {"0.3-gt0.25": str(tmp_path / "run"), "0.3-gt0.25-seed1": str(tmp_path / "run")}, parser
        )
    assert "is not a run of variant" in capsys.readouterr().err


def test_the_dmd2_sweep_averages_a_runs_last_four_checkpoints_whatever_its_length(tmp_path):
    """A 16,500-batch run (10 critic updates per generator update) averages batches 12,000 to 16,500, not the
    config's 4,500 to 9,000; a run missing one of them is refused by name."""
    import dmd2_2step_sweep as sweep
    import torch

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    torch.save({"global_step": 16500}, checkpoints / "last.ckpt")
    for epoch, step in ((500, 12000), (600, 13500), (700, 15000), (800, 16500), (100, 9000)):
        (checkpoints / f"epoch={epoch}-step={step}.ckpt").touch()
    paths, steps = sweep.last_four(tmp_path)
    assert steps == [12000, 13500, 15000, 16500]
    assert [p.name for p in paths] == [
        "epoch=500-step=12000.ckpt",
        "epoch=600-step=13500.ckpt",
        "epoch=700-step=15000.ckpt",
        "last.ckpt",
    ]
    (checkpoints / "epoch=600-step=13500.ckpt").unlink()
    with pytest.raises(SystemExit, match="0 checkpoints of step 13500"):
        sweep.last_four(tmp_path)
