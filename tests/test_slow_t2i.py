"""Text-to-image end to end on the tiny offline SD pipeline (make test-slow): KD, progressive and consistency
distillation through ``distill fit`` (the configs/sd15 recipes, or an inline progressive config), ``distill export``
to a complete pipeline folder, and generation through diffusers' own pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.cli import main

pytestmark = pytest.mark.slow
SD15 = Path(__file__).resolve().parents[1] / "configs" / "sd15"

PROGRESSIVE = """model:
  class_path: distill.ProgressiveDistillation
  init_args:
    teacher:
      class_path: teachers.DiffusionTeacher.from_pretrained
      init_args: {{path: {pipeline}, dtype: bfloat16}}
    student:
      class_path: students.bk.bk_small
      init_args: {{teacher: {pipeline}, time_cond_proj_dim: 32}}
    teacher_steps: 8
    final_steps: 2
    round_steps: 2
    promote: student
    guidance_min: 3.0
    guidance_max: 7.0
    ema_decay: null
    samples_per_class: 0
    evaluator: null
"""


def _fit_and_export(args: list[str], tmp_path: Path, name: str) -> Path:
    main(
        [
            "fit",
            *args,
            "--trainer.max_steps=3",
            "--trainer.accelerator=cpu",
            "--trainer.accumulate_grad_batches=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.logger.init_args.name={name}",
            "--trainer.logger.init_args.version=0",
            "--trainer.enable_progress_bar=false",
        ]
    )
    run = tmp_path / name / "version_0"
    out = tmp_path / f"{name}_export"
    main(
        [
            "export",
            "-c",
            str(run / "config.yaml"),
            f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            f"--output={out}",
            "--weights=raw",
        ]
    )
    return out


def _data(pipeline, captions):
    return [
        f"--model.init_args.teacher.init_args.path={pipeline}",
        f"--data.init_args.root={captions}",
        "--data.init_args.image_size=16",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]


def _check(images) -> None:
    images = np.asarray(images)
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()


def test_kd_student_exports_to_a_stable_diffusion_pipeline(tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    pipeline, captions = tiny_sd
    out = _fit_and_export(
        [
            "-c",
            str(SD15 / "kd_bk_small.yaml"),
            *_data(pipeline, captions),
            f"--model.init_args.student.init_args.teacher={pipeline}",
        ],
        tmp_path,
        "kd",
    )
    assert {"unet", "scheduler", "vae", "text_encoder", "tokenizer", "model_index.json"} <= {
        p.name for p in out.iterdir()
    }
    assert "StableDiffusionPipeline.from_pretrained" in (out / "README.md").read_text()
    pipe = StableDiffusionPipeline.from_pretrained(out)
    student = UNet2DConditionModel.from_pretrained(out / "unet")
    assert student.config.layers_per_block == 1 and sum(p.numel() for p in pipe.unet.parameters()) == sum(
        p.numel() for p in student.parameters()
    )
    _check(pipe(["a red square"] * 2, num_inference_steps=3, height=16, width=16, output_type="np").images)
    # or as the unet of the teacher's own pipeline
    teacher_pipe = StableDiffusionPipeline.from_pretrained(pipeline, unet=student, safety_checker=None)
    _check(
        teacher_pipe(
            ["a blue circle"] * 2, num_inference_steps=2, height=16, width=16, output_type="np"
        ).images
    )


def test_consistency_student_samples_in_diffusers_lcm_pipeline(tiny_sd, tmp_path):
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    pipeline, captions = tiny_sd
    out = _fit_and_export(
        [
            "-c",
            str(SD15 / "lcm.yaml"),
            *_data(pipeline, captions),
            f"--model.init_args.student.init_args.path={pipeline}",
        ],
        tmp_path,
        "lcm",
    )
    pipe = LatentConsistencyModelPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.unet.config.time_cond_proj_dim == 256
    images = pipe(
        ["a red square"] * 2, num_inference_steps=2, guidance_scale=8.0, height=16, width=16, output_type="np"
    )
    _check(images.images)


def test_progressive_student_samples_in_a_stable_diffusion_pipeline(tiny_sd, tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipeline, captions = tiny_sd
    extra = tmp_path / "progressive.yaml"
    extra.write_text(PROGRESSIVE.format(pipeline=pipeline))
    out = _fit_and_export(
        ["-c", str(SD15 / "kd_bk_small.yaml"), "-c", str(extra), *_data(pipeline, captions)], tmp_path, "pd"
    )
    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.scheduler.config.timestep_spacing == "trailing"
    # a guidance-distilled student: the pipeline feeds w through timestep_cond and runs one forward per step
    calls = []
    pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(args[0].shape[0]), with_kwargs=True
    )
    images = pipe(
        ["a blue circle"] * 2,
        num_inference_steps=2,
        guidance_scale=5.0,
        height=16,
        width=16,
        output_type="np",
    )
    _check(images.images)
    assert calls == [2, 2], calls
