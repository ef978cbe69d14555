"""Consistency-model math against diffusers: LCM timesteps, boundary scalings, guidance embedding, sampler."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import SCHEDULER
from diffusers import LCMScheduler

from teachers import DiffusionTeacher
from teachers.parameterization import consistency_output, consistency_scalings, guidance_scale_embedding
from teachers.sampling import consistency_sample
from teachers.schedule import (
    TRAINED_TIMESTEPS_KEY,
    NoiseSchedule,
    check_consistency_timesteps,
    lcm_skipping_timesteps,
    lcm_timesteps,
)


def _lcm_scheduler(**overrides) -> LCMScheduler:
    # betas set explicitly: LCMScheduler.from_config(ddim.config) drops keys that were defaults in the source
    config = {k: SCHEDULER[k] for k in ("num_train_timesteps", "beta_schedule", "prediction_type")}
    return LCMScheduler(**config, **overrides)


@pytest.mark.parametrize("original_steps", [50, 25, 8])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lcm_timesteps_match_lcm_scheduler(steps, original_steps):
    if steps > original_steps:
        pytest.skip("more steps than the skipping grid has")
    scheduler = _lcm_scheduler(original_inference_steps=original_steps)
    scheduler.set_timesteps(steps)
    ours = lcm_timesteps(num_train_timesteps=1000, num_inference_steps=steps, original_steps=original_steps)
    assert ours.tolist() == scheduler.timesteps.tolist()


def test_skipping_grid_and_bad_requests():
    assert lcm_skipping_timesteps(num_train_timesteps=1000, original_steps=50)[:3].tolist() == [19, 39, 59]
    assert lcm_skipping_timesteps(num_train_timesteps=1000, original_steps=50)[-1] == 999
    assert lcm_timesteps(num_train_timesteps=1000, num_inference_steps=4).tolist() == [999, 759, 499, 259]
    with pytest.raises(ValueError, match=r"num_inference_steps must be in \[1, 50\]"):
        lcm_timesteps(num_train_timesteps=1000, num_inference_steps=51)
    with pytest.raises(ValueError, match="original_steps must be in"):
        lcm_skipping_timesteps(num_train_timesteps=1000, original_steps=0)


def test_boundary_scalings_match_lcm_scheduler_and_make_f_the_identity_at_zero():
    scheduler = _lcm_scheduler()
    t = torch.tensor([0, 1, 19, 259, 500, 999])
    c_skip, c_out = consistency_scalings(timesteps=t)
    for i, step in enumerate(t.tolist()):
        ref_skip, ref_out = scheduler.get_scalings_for_boundary_condition_discrete(step)
        assert c_skip[i].item() == pytest.approx(float(ref_skip), rel=1e-6, abs=1e-9)
        assert c_out[i].item() == pytest.approx(float(ref_out), rel=1e-6, abs=1e-9)
    z, x0 = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    f = consistency_output(z=z, x0=x0, c_skip=c_skip, c_out=c_out)
    torch.testing.assert_close(f[0], z[0])  # boundary condition f(z, 0) = z
    torch.testing.assert_close(f[-1], x0[-1], atol=1e-5, rtol=0)  # far from 0 it is the x0-prediction


def _diffusers_guidance_embedding():
    """LatentConsistencyModelPipeline.get_guidance_scale_embedding from the installed diffusers, without importing
    the pipeline module (it needs transformers, which only the t2i extra installs)."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(
        "diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_text2img"
    )
    tree = ast.parse(Path(spec.origin).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "get_guidance_scale_embedding":
            namespace = {"torch": torch}
            exec(compile(ast.Module(body=[node], type_ignores=[]), spec.origin, "exec"), namespace)
            return namespace["get_guidance_scale_embedding"]
    raise AssertionError("diffusers no longer defines get_guidance_scale_embedding there")


@pytest.mark.parametrize("dim", [8, 256, 33])
def test_guidance_embedding_matches_the_lcm_pipeline(dim):
    w = torch.tensor([0.0, 1.0, 3.5, 7.0])
    ours = guidance_scale_embedding(w=w, dim=dim)
    ref = _diffusers_guidance_embedding()(None, w, embedding_dim=dim)
    assert ours.shape == (4, dim)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="w must be a vector"):
        guidance_scale_embedding(w=w[:, None], dim=dim)


def _assert_sampler_matches_stepping(teacher, scheduler, *, timesteps, alphas_cumprod) -> None:
    """Stepping ``scheduler`` (timesteps already set) on the teacher's network gives what ``consistency_sample``
    gives at ``timesteps``, from the same noise and the same re-noising draws."""
    labels = torch.tensor([1, 4, 7])
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(5)
    z = noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = teacher.unet(z, t, None, class_labels=labels).sample
            z = scheduler.step(out, t, z, generator=gen).prev_sample
    ours_gen = torch.Generator().manual_seed(5)
    ours = consistency_sample(
        denoiser=partial(teacher.predict, cond=labels),
        noise=noise,
        timesteps=timesteps,
        alphas_cumprod=alphas_cumprod,
        step_noise=lambda i: torch.randn(noise.shape, generator=ours_gen),
    )
    torch.testing.assert_close(ours, z, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_sampler_agrees_with_lcm_scheduler_on_the_same_model(steps, tiny_teacher_dir):
    scheduler = _lcm_scheduler()
    scheduler.set_timesteps(steps)
    _assert_sampler_matches_stepping(
        DiffusionTeacher.from_pretrained(tiny_teacher_dir),
        scheduler,
        timesteps=lcm_timesteps(num_train_timesteps=1000, num_inference_steps=steps),
        alphas_cumprod=NoiseSchedule.from_scheduler_config(SCHEDULER).alphas_cumprod,
    )


def test_custom_timesteps_sample_as_lcm_scheduler_with_timesteps_and_are_recorded_in_the_export(
    tiny_teacher_dir, tmp_path
):
    """A config that records the student's trained times (e.g. DMD2's [999, 299]) samples at them for that many
    steps, exactly as a stock LCMScheduler given ``timesteps=``; other step counts keep LCM's grid."""
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    export = NoiseSchedule.from_scheduler_config(SCHEDULER).consistency_export(
        original_steps=50, timestep_scaling=10.0, timesteps=[999, 299]
    )
    assert export.config[TRAINED_TIMESTEPS_KEY] == [999, 299]
    assert export.consistency_grid(2).tolist() == [999, 299]
    assert export.consistency_grid(1).tolist() == [999]
    assert export.consistency_grid(2, original_steps=50).tolist() == [999, 499]  # an explicit grid wins
    export.save_pretrained(tmp_path / "scheduler")
    # stock diffusers keeps the private key in the config (not a constructor argument) and saves it again
    stock = LCMScheduler.from_pretrained(tmp_path / "scheduler")
    stock.save_pretrained(tmp_path / "again")
    assert LCMScheduler.from_pretrained(tmp_path / "again").config[TRAINED_TIMESTEPS_KEY] == [999, 299]
    stock.set_timesteps(timesteps=stock.config[TRAINED_TIMESTEPS_KEY])
    assert stock.timesteps.tolist() == [999, 299]

    _assert_sampler_matches_stepping(
        teacher, stock, timesteps=export.consistency_grid(2), alphas_cumprod=export.alphas_cumprod
    )


@pytest.mark.parametrize(
    "timesteps, match",
    [
        ([299, 999], "strictly decreasing"),
        ([999, 999], "strictly decreasing"),
        ([999, 250], r"\[250\] not on the consistency grid of original_steps=50 \(19, 39, ..., 999\)"),
        ([999.0, 299], "whole numbers"),
        ([], "non-empty list"),
        ("999", "non-empty list"),
    ],
)
def test_bad_custom_timesteps_are_refused_naming_the_grid(timesteps, match):
    with pytest.raises(ValueError, match=match):
        check_consistency_timesteps(timesteps=timesteps, num_train_timesteps=1000, original_steps=50)
    # on the grid of 4 (249, 499, 749, 999) a time the grid of 50 lacks is fine
    assert check_consistency_timesteps(
        timesteps=[999, 249], num_train_timesteps=1000, original_steps=4
    ).tolist() == [999, 249]
