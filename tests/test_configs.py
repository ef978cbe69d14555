"""Every YAML in configs/ parses and runs one fast_dev_run step in-process through the `distill` CLI (`distill test`
for evaluation configs, `distill fit` for the others)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
# Cheap settings for what only affects cost, never what the config means.
CHEAP = {
    "configs/digits/teacher.yaml": [
        "--model.init_args.samples_per_class=1",
        "--model.init_args.sample_steps=2",
    ],
    **{
        f"configs/digits/{name}.yaml": [
            "--model.init_args.eval_num_samples=20",
            "--model.init_args.eval_steps=[1]",
            "--model.init_args.samples_per_class=1",
            "--model.init_args.evaluator.init_args.kid_subset_size=10",
            "--model.init_args.evaluator.init_args.kid_subsets=5",
        ]
        for name in ("kd", "kd_bk_tiny", "kd_efficient", "kd_efficient_long", "kd_timm", "robust")
    },
    "configs/digits/progressive.yaml": [
        "--model.init_args.eval_num_samples=20",
        "--model.init_args.samples_per_class=1",
        "--model.init_args.evaluator.init_args.kid_subset_size=10",
        "--model.init_args.evaluator.init_args.kid_subsets=5",
    ],
    **{
        f"configs/digits/{name}.yaml": [
            "--model.init_args.eval_num_samples=20",
            "--model.init_args.eval_steps=[1]",
            "--model.init_args.samples_per_class=1",
            "--model.init_args.evaluator.init_args.kid_subset_size=10",
            "--model.init_args.evaluator.init_args.kid_subsets=5",
        ]
        for name in ("dmd2", "dmd2_2step")
    },
    **{
        f"configs/digits/{name}.yaml": [
            "--model.init_args.eval_num_samples=20",
            "--model.init_args.eval_steps=[1, 2]",
            "--model.init_args.samples_per_class=1",
            "--model.init_args.evaluator.init_args.kid_subset_size=10",
            "--model.init_args.evaluator.init_args.kid_subsets=5",
        ]
        for name in ("consistency", "consistency_qad")
    },
    "configs/digits/teacher_eval.yaml": [
        "--model.init_args.steps=[1]",
        "--data.init_args.num_samples=40",
        "--data.init_args.seeds=[0,1]",
        "--data.init_args.batch_size=40",
        "--model.init_args.evaluator.init_args.kid_subset_size=20",
        "--model.init_args.evaluator.init_args.kid_subsets=5",
    ],
}
# one calibration batch instead of the config's 8 (calibration itself is tested in tests/test_quantization.py)
CHEAP["configs/digits/consistency_qad.yaml"].append(
    "--model.init_args.quantize.init_args.calibration_batches=1"
)
# the flow-matching digits configs mirror the DDPM ones and are cheapened the same way
CHEAP.update(
    {
        f"configs/digits_flow/{k.split('/')[-1]}": v
        for k, v in list(CHEAP.items())
        if k.split("/")[-1]
        in (
            "teacher.yaml",
            "kd.yaml",
            "progressive.yaml",
            "consistency.yaml",
            "teacher_eval.yaml",
            "dmd2.yaml",
        )
    }
)
# configs/sd15 run against the tiny offline SD pipeline and caption folder (conftest.tiny_sd), on the CPU
SD15 = [
    "--model.init_args.teacher.init_args.path={pipeline}",
    "--data.init_args.root={captions}",
    "--data.init_args.image_size=16",
    "--data.init_args.batch_size=2",
    "--data.init_args.num_workers=0",
    "--trainer.accelerator=cpu",
    "--model.init_args.eval_teacher_steps=2",
    "--data.init_args.num_val=2",
]
CHEAP["configs/sd15/kd_bk_small.yaml"] = [*SD15, "--model.init_args.student.init_args.teacher={pipeline}"]
CHEAP["configs/sd15/lcm_bk_small.yaml"] = [*SD15, "--model.init_args.student.init_args.teacher={pipeline}"]
CHEAP["configs/sd15/lcm.yaml"] = [*SD15, "--model.init_args.student.init_args.path={pipeline}"]
CHEAP["configs/sd15/dmd2.yaml"] = [*SD15, "--model.init_args.student.init_args.path={pipeline}"]
CHEAP["configs/sd15/dmd2_bk_small.yaml"] = [*SD15, "--model.init_args.student.init_args.teacher={pipeline}"]
CHEAP["configs/sd15/test.yaml"] = [
    "--model.init_args.model.init_args.path={pipeline}",
    "--model.init_args.evaluator.init_args.reference_images={captions}",
    "--model.init_args.evaluator.init_args.feature_network=clip",
    "--model.init_args.evaluator.init_args.clip={clip}",
    "--model.init_args.evaluator.init_args.image_size=16",
    "--model.init_args.evaluator.init_args.kid_subset_size=4",
    "--model.init_args.evaluator.init_args.kid_subsets=5",
    "--model.init_args.steps=[1]",
    "--data.init_args.prompt_file={prompts}",
    "--data.init_args.batch_size=4",
    "--trainer.accelerator=cpu",
]
# configs/sd3 and configs/flux run against tiny offline SD3- and FLUX-shaped pipelines with their CPU smoke overlay
for family in ("sd3", "flux"):
    for name in ("kd", "lcm"):
        student_key = "teacher" if name == "kd" else "path"
        CHEAP[f"configs/{family}/{name}.yaml"] = [
            "-c",
            f"{{root}}/configs/{family}/cpu_smoke.yaml",
            "--model.init_args.teacher.init_args.path={pipeline}",
            f"--model.init_args.student.init_args.{student_key}={{pipeline}}",
            "--data.init_args.root={captions}",
            "--data.init_args.image_size=16",
            "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0",
            "--data.init_args.num_val=2",
        ]
TRANSFORMER_SMOKE = {"configs/sd3/cpu_smoke.yaml": "sd3", "configs/flux/cpu_smoke.yaml": "flux"}
# not standalone: shards.yaml is tested with lcm.yaml after distill precompute, cpu_smoke.yaml on top of lcm.yaml
# (tests/test_docs_commands.py runs it under the documented workflow in make test-slow)
OVERLAYS = {"configs/sd15/shards.yaml", "configs/sd15/cpu_smoke.yaml", *TRANSFORMER_SMOKE}
# Variants whose one-step run repeats a method the fast suite already runs from another config (kd.yaml,
# lcm.yaml) with another student: the run is in make test-slow; the fast suite parses them
# (test_config_parses) and builds their students (tests/test_students.py, tests/test_timm_unet.py).
SLOW_RUNS = {
    "configs/digits/kd_bk_tiny.yaml",
    "configs/digits/kd_efficient.yaml",
    "configs/digits/kd_efficient_long.yaml",
    "configs/digits/kd_timm.yaml",
    "configs/sd15/kd_bk_small.yaml",
    "configs/sd15/lcm_bk_small.yaml",
    "configs/sd15/dmd2_bk_small.yaml",
}


def _rel(config: Path) -> str:
    return str(config.relative_to(config.parents[2]))


def _param(config: Path):
    marks = [pytest.mark.slow] if _rel(config) in SLOW_RUNS else []
    return pytest.param(config, id=_rel(config), marks=marks)


def test_configs_exist():
    assert CONFIGS, "configs/ holds no YAML"


@pytest.mark.parametrize("config", sorted(SLOW_RUNS))
def test_config_parses(config, capsys):
    """The configs whose run is slow-only still parse, with every class_path resolved (--print_config)."""
    path = Path(__file__).resolve().parents[1] / config
    with pytest.raises(SystemExit) as info:
        main(["fit", "-c", str(path), "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("distill.")


def test_slow_runs_are_configs():
    assert {_rel(c) for c in CONFIGS} >= SLOW_RUNS


@pytest.mark.parametrize("config", [_param(c) for c in CONFIGS])
def test_config_fast_dev_run(config, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    rel = str(config.relative_to(config.parents[2]))
    if rel == "configs/sd15/cpu_smoke.yaml":
        pipeline, captions = request.getfixturevalue("tiny_sd")
        lcm = str(config.parents[1] / "sd15" / "lcm.yaml")
        cheap = [a.format(pipeline=pipeline, captions=captions) for a in CHEAP["configs/sd15/lcm.yaml"]]
        main(
            [
                "fit",
                "-c",
                lcm,
                "-c",
                str(config),
                *[a for a in cheap if not a.startswith("--trainer.")],
                "--trainer.fast_dev_run=1",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.enable_progress_bar=false",
            ]
        )
        return
    if rel in TRANSFORMER_SMOKE:  # the overlay runs under every recipe of its family; here: what it sets
        family = TRANSFORMER_SMOKE[rel]
        pipeline, _ = request.getfixturevalue(f"tiny_{family}")
        recipe = str(config.parents[1] / family / "kd.yaml")
        capsys = request.getfixturevalue("capsys")  # capturing from here on
        with pytest.raises(SystemExit) as info:
            main(["fit", "-c", recipe, "-c", str(config), f"--model.init_args.teacher.init_args.path={pipeline}",
                  f"--model.init_args.student.init_args.teacher={pipeline}", "--print_config"])  # fmt: skip
        assert info.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        teacher = printed["model"]["init_args"]["teacher"]["init_args"]
        assert teacher["dtype"] == "float32" and teacher["max_sequence_length"] == 16
        assert printed["trainer"]["accelerator"] == "cpu" and printed["trainer"]["max_steps"] == 2
        assert teacher.get("sample_size") == (8 if family == "flux" else None)
        return
    if rel in OVERLAYS:
        pipeline, captions = request.getfixturevalue("tiny_sd")
        base = [str(config.parents[1] / "sd15" / "lcm.yaml")]
        cheap = [a.format(pipeline=pipeline, captions=captions) for a in CHEAP["configs/sd15/lcm.yaml"]]
        main(["precompute", "-c", *base, *cheap, f"--output={tmp_path / 'shards'}", "--shard_size=10"])
        main(
            [
                "fit",
                "-c",
                *base,
                "-c",
                str(config),
                *[a for a in cheap if not a.startswith("--data.")],
                f"--data.init_args.root={tmp_path / 'shards'}",
                "--data.init_args.batch_size=2",
                "--data.init_args.num_workers=0",
                "--trainer.fast_dev_run=1",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.enable_progress_bar=false",
            ]
        )
        return
    extra = CHEAP.get(rel, [])
    family = rel.split("/")[1]
    if family in ("sd3", "flux"):
        pipeline, captions = request.getfixturevalue(f"tiny_{family}")
        root = config.parents[2]
        extra = [a.format(pipeline=pipeline, captions=captions, root=root) for a in extra]
    if rel.startswith("configs/sd15/"):
        pipeline, captions = request.getfixturevalue("tiny_sd")
        places = {"pipeline": pipeline, "captions": captions}
        if any("{clip}" in a or "{prompts}" in a for a in extra):
            places["clip"] = request.getfixturevalue("tiny_clip")
            places["prompts"] = tmp_path / "prompts.txt"
            places["prompts"].write_text("a red square\na blue circle\n")
        extra = [a.format(**places) for a in extra]
    # evaluation configs (a GenerativeEvaluation model) run `distill test`, the others `distill fit`
    model = (yaml.safe_load(config.read_text()).get("model") or {}).get("class_path", "")
    command = "test" if model.endswith(".GenerativeEvaluation") else "fit"
    main(
        [
            command,
            "-c",
            str(config),
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            *extra,
        ]
    )
