"""The bad-input catalogue: each case is a clear error (the argument, what was expected, how to fix it) raised
before the first training step, with nothing written (no checkpoint, nothing overwritten)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "digits"

NO_W_EMBEDDING = """model:
  init_args:
    student:
      class_path: students.efficient.efficient_unet_digits
      init_args: {teacher: builtin:digits, time_cond_proj_dim: null}
"""

# (case id, config, extra YAML or None, overrides, fragments the message must contain)
CASES = [
    ("config typo", "kd.yaml", None, ["--model.init_args.feature_wieght=1"], ["feature_wieght"]),
    (
        "missing teacher folder",
        "kd.yaml",
        None,
        ["--model.init_args.teacher.init_args.path=/no/such/teacher"],
        ["/no/such/teacher", "does not exist", "builtin:digits"],
    ),
    (
        "data size vs network size",
        "kd.yaml",
        None,
        ["--data.init_args.image_size=8"],
        ["data.image_size=8", "sample_size=16", "image_size=16"],
    ),
    (
        "student channels vs teacher",
        "kd.yaml",
        None,
        ["--model.init_args.student.init_args.in_channels=3"],
        ["student.in_channels=3", "teacher's in_channels=1", "in_channels=1"],
    ),
    (
        "student classes vs teacher",
        "kd.yaml",
        None,
        ["--model.init_args.student.init_args.num_class_embeds=5"],
        ["student.num_class_embeds=5", "teacher's is 11", "num_class_embeds=11"],
    ),
    (
        "guidance without a guidance embedding",
        "consistency.yaml",
        NO_W_EMBEDDING,
        ["--model.init_args.guidance_max=2.0"],
        ["timestep_cond", "time_cond_proj_dim", "guidance_min = guidance_max = 1"],
    ),
    (
        "negative KD weight",
        "kd.yaml",
        None,
        ["--model.init_args.feature_weight=-1"],
        ["feature_weight", ">= 0"],
    ),
    (
        "unknown non-finite policy",
        "kd.yaml",
        None,
        ["--model.init_args.nonfinite=ignore"],
        ["nonfinite", "stop"],
    ),
    (
        "skipping interval k not whole",
        "consistency.yaml",
        None,
        ["--model.init_args.original_steps=30"],
        ["original_steps=30", "does not divide", "50 for 1000"],
    ),
    (
        "guidance range reversed",
        "consistency.yaml",
        None,
        ["--model.init_args.guidance_min=3.0", "--model.init_args.guidance_max=2.0"],
        ["guidance_min <= guidance_max", "guidance_min=3.0"],
    ),
    ("unknown consistency loss", "consistency.yaml", None, ["--model.init_args.loss=l1"], ["loss", "huber"]),
    ("target rate out of range", "consistency.yaml", None, ["--model.init_args.target_decay=1"], ["[0, 1)"]),
    (
        "unknown built-in student",
        "consistency.yaml",
        None,
        ["--model.init_args.student.init_args.path=builtin:no_such_student"],
        ["builtin:no_such_student", "builtin:digits_efficient_kd"],
    ),
    (
        "round schedule that does not halve",
        "progressive.yaml",
        None,
        ["--model.init_args.teacher_steps=48"],
        ["teacher_steps=48", "does not halve", "powers of two"],
    ),
    (
        "more teacher steps than timesteps",
        "progressive.yaml",
        None,
        ["--model.init_args.teacher_steps=2048"],
        ["teacher_steps=2048", "exceeds the teacher's 1000 timesteps"],
    ),
    (
        "promote the EMA without one",
        "progressive.yaml",
        None,
        ["--model.init_args.ema_decay=null"],
        ["promote='ema' needs ema_decay"],
    ),
    (
        "a batch larger than the data",
        "kd.yaml",
        None,
        ["--data.init_args.batch_size=2000"],
        ["1437 samples", "fewer than one global batch of 2000", "lower batch_size"],
    ),
    (
        "zero-length rounds",
        "progressive.yaml",
        None,
        ["--model.init_args.round_steps=0"],
        ["round_steps", ">= 1"],
    ),
    (
        "condition dropout above 1",
        "kd.yaml",
        None,
        ["--model.init_args.cond_drop_prob=1.5"],
        ["cond_drop_prob must be in [0, 1]", "1.5", "model.init_args.cond_drop_prob"],
    ),
    (
        "a step count of zero in eval_steps",
        "consistency.yaml",
        None,
        ["--model.init_args.eval_steps=[0, 1, 4]"],
        ["eval_steps", "[0, 1, 4]", "model.init_args.eval_steps"],
    ),
    (
        "negative learning rate",
        "kd.yaml",
        None,
        ["--model.init_args.optimizer.init_args.lr=-0.001"],
        ["model.init_args.optimizer.init_args.lr", "-0.001"],
    ),
]


@pytest.mark.slow  # each case starts the CLI: make test-slow
@pytest.mark.parametrize(
    ("config", "extra", "overrides", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_config_fails_before_the_first_step(
    config, extra, overrides, fragments, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(CONFIGS / config)]
    if extra is not None:
        (tmp_path / "extra.yaml").write_text(extra)
        args += ["-c", str(tmp_path / "extra.yaml")]
    args += [
        *overrides,
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
    ]
    with pytest.raises((ValueError, TypeError, FileNotFoundError, SystemExit)) as info:
        main(args)
    error = info.value
    message = f"{error} {error.__cause__ or ''} {error.__context__ or ''} {capsys.readouterr().err}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the error: {message[:2000]}"
    assert not list(tmp_path.rglob("*.ckpt"))  # no step ran, nothing was saved
    assert not list(tmp_path.rglob("version_*")) and not list(tmp_path.rglob("config.yaml"))  # no run folder


def test_unreadable_and_foreign_checkpoints_are_named(tiny_teacher_dir, tmp_path):
    from conftest import tiny_cond_unet

    from distill.export import load_checkpoint
    from distill.methods.knowledge import KnowledgeDistillation
    from teachers import DiffusionTeacher

    module = KnowledgeDistillation(
        DiffusionTeacher.from_pretrained(tiny_teacher_dir), tiny_cond_unet(seed=1), samples_per_class=0
    )
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises((RuntimeError, ValueError), match=r"garbage\.ckpt"):
        load_checkpoint(module, garbage)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}}, foreign)
    with pytest.raises(RuntimeError, match="does not match this method"):
        load_checkpoint(module, foreign)


def test_an_existing_export_folder_is_left_as_it_was(tmp_path):
    from distill.export import export_module

    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite true"):
        export_module(object(), ckpt_path=tmp_path / "none.ckpt", output=out)
    assert (out / "keep.txt").read_text() == "mine" and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_missing_data_folder_or_empty_student_path_is_named(tmp_path):
    from students.loading import load_student

    with pytest.raises(FileNotFoundError, match="no model config"):
        load_student(tmp_path)


@pytest.mark.slow
def test_a_student_trained_for_another_prediction_type_is_refused(tmp_path, monkeypatch, capsys):
    """An epsilon-prediction student handed to the v-prediction digits teacher (as an SD-2 student to an SD-1.5
    teacher would be): its outputs mean something else, so the run stops before the first step."""
    import json
    import shutil

    from students.loading import builtin_students_dir

    folder = tmp_path / "eps_student"
    shutil.copytree(builtin_students_dir() / "digits_efficient_kd", folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "epsilon"
    config_file.write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, SystemExit)) as info:
        main(
            [
                "fit",
                "-c",
                str(CONFIGS / "consistency.yaml"),
                f"--model.init_args.student.init_args.path={folder}",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
            ]
        )
    message = f"{info.value} {capsys.readouterr().err}"
    for fragment in [
        "'epsilon'",
        "teacher predicts 'v_prediction'",
        str(config_file),
        "exported from this teacher",
    ]:
        assert fragment in message, message[:2000]
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["corrupt image", "empty folder", "missing shards"])
def test_corrupt_or_empty_text_to_image_data_fails_before_the_first_step(
    case, tiny_sd, tmp_path, monkeypatch
):
    """The SD recipe on the tiny offline pipeline, pointed at bad data: named before any step, nothing written."""
    import shutil

    pipeline, captions = tiny_sd
    data = tmp_path / "data"
    args = []
    if case == "corrupt image":
        shutil.copytree(captions, data)
        (data / "0003.png").write_bytes(b"truncated")
        fragments = ["0003.png: unreadable image", "on_error=skip"]
    elif case == "empty folder":
        data.mkdir()
        fragments = ["no usable image-caption pairs", str(data)]
    else:
        data.mkdir()
        args = ["--data=distill.data_t2i.LatentShardDataModule"]
        fragments = ["no index.json", "distill precompute"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError, SystemExit)) as info:
        main(
            [
                "fit",
                "-c",
                str(CONFIGS.parent / "sd15" / "kd_bk_small.yaml"),
                f"--model.init_args.teacher.init_args.path={pipeline}",
                f"--model.init_args.student.init_args.teacher={pipeline}",
                "--trainer.accelerator=cpu",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
                *args,
                f"--data.init_args.root={data}",
                *([] if args else ["--data.init_args.image_size=16", "--data.init_args.num_workers=0"]),
            ]
        )
    message = f"{info.value} {info.value.__context__ or ''}"
    for fragment in fragments:
        assert fragment in message, message[:2000]
    assert not list(tmp_path.rglob("*.ckpt"))
