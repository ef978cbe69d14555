"""Where exports load: a latent export of a student class of this package is a diffusers pipeline (with
``students`` imported) sampling as the library does; a pixel (class-conditional) export refuses
``DiffusionPipeline`` naming the pipeline that loads it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_cond_unet

from distill.methods.knowledge import KnowledgeDistillation
from students.efficient import EfficientUNet2DConditionModel, efficient_unet
from students.loading import builtin_students_dir, list_builtin_students
from teachers import DiffusionTeacher


def test_a_latent_export_of_an_efficient_student_is_a_diffusers_pipeline(tiny_sd, tmp_path):
    from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionPipeline

    import students  # noqa: F401  (diffusers resolves model_index.json's "students" among imported modules)

    teacher = DiffusionTeacher.from_pretrained(tiny_sd[0])
    torch.manual_seed(1)
    net = efficient_unet(tiny_sd[0], block_out_channels=(16, 32), separable_convs=True, attention_head_dim=8)
    assert type(net) is EfficientUNet2DConditionModel
    out = tmp_path / "export"
    KnowledgeDistillation(teacher, net, samples_per_class=0).save_pretrained(out)
    index = json.loads((out / "model_index.json").read_text())
    assert index["unet"] == ["students", "EfficientUNet2DConditionModel"]
    pipe = DiffusionPipeline.from_pretrained(out)
    assert type(pipe) is StableDiffusionPipeline and type(pipe.unet) is EfficientUNet2DConditionModel
    assert sum(p.numel() for p in pipe.unet.parameters()) == sum(p.numel() for p in net.parameters())
    # the same images as the library's DDIM (trailing spacing) sampling of the folder, guided
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    prompts = ["a red square", "a blue circle"]
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    images = pipe(
        prompts, num_inference_steps=2, guidance_scale=2.0, latents=noise.clone(), output_type="pt"
    ).images
    model = DiffusionTeacher.from_pretrained(out)
    latents = model.sample(
        model.encode_prompt(prompts), noise, steps=2, guidance_scale=2.0, spacing="trailing"
    )
    expected = model.decode_latents(latents).add(1).div(2).clamp(0, 1)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


def test_pixel_exports_refuse_diffusion_pipeline_naming_class_conditional_pipeline(
    tiny_teacher_dir, tmp_path
):
    from diffusers import DiffusionPipeline

    from distill.pipelines import ClassConditionalPipeline

    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    plain = tmp_path / "plain"
    KnowledgeDistillation(teacher, tiny_cond_unet(seed=4), samples_per_class=0).save_pretrained(plain)
    separable = tmp_path / "separable"
    torch.manual_seed(0)
    student = efficient_unet(
        tiny_teacher_dir, block_out_channels=(16, 32), separable_convs=True, attention_head_dim=8
    )
    KnowledgeDistillation(teacher, student, samples_per_class=0).save_pretrained(separable)
    index = json.loads((separable / "model_index.json").read_text())
    assert index == {
        "_class_name": "ClassConditionalPipeline",
        "unet": ["students", "EfficientUNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    shipped = [builtin_students_dir() / name for name in list_builtin_students()]
    for folder in (plain, separable, *shipped):
        with pytest.raises(AttributeError, match="ClassConditionalPipeline"):
            DiffusionPipeline.from_pretrained(folder)
        assert ClassConditionalPipeline.from_pretrained(folder).model.num_classes == 10
