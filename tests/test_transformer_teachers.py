"""SD3 and FLUX teachers: pipeline folders load through the allowlists, prompts encode and samples come out exactly
as diffusers' own StableDiffusion3Pipeline / FluxPipeline compute them, FLOPs are counted exactly, and depth-pruned
transformer students are subsets of their teacher."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", minversion="5.0")  # the tiny T5 tokenizer is built with v5's API

from diffusers import FluxPipeline, StableDiffusion3Pipeline

from distill.features import FeatureRecorder
from distill.flops import count_macs, example_inputs
from distill.flops.counting import flop_counter_macs
from distill.tiny_pipeline import build_tiny_flux, build_tiny_sd3
from students import create_student
from students.transformer import depth_pruned_transformer, narrow_transformer
from teachers import DiffusionTeacher
from teachers.flow import time_shift
from teachers.transformer import flux_image_ids, pack_latents, unpack_latents

PROMPTS = ["a photo of digit zero", "a red square"]
T5_TOKENS = (
    16  # short T5 sequences keep the tiny pipelines fast; the pipelines are called with the same value
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one torch thread (conftest)."""


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    return build_tiny_sd3(tmp_path_factory.mktemp("sd3") / "pipe")


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return build_tiny_flux(tmp_path_factory.mktemp("flux") / "pipe")


def _pipe(cls, path, **kwargs):
    pipe = cls.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_latents(pipe, teacher, *, steps: int, guidance: float, seed: int = 0) -> torch.Tensor:
    size = teacher.image_size
    latents = pipe(
        PROMPTS,
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=size,
        width=size,
        max_sequence_length=T5_TOKENS,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
    ).images
    if latents.ndim == 3:  # FLUX returns packed tokens
        latents = pipe._unpack_latents(latents, size, size, pipe.vae_scale_factor)
    return latents


def _noise(teacher, seed: int = 0) -> torch.Tensor:
    shape = (len(PROMPTS), teacher.in_channels, teacher.sample_size, teacher.sample_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# -- loading and conditioning ---------------------------------------------------------------------------------
def test_sd3_teacher_loads_every_part(sd3_dir):
    teacher = DiffusionTeacher.from_pretrained(sd3_dir, max_sequence_length=T5_TOKENS)
    assert teacher.transformer_family == "sd3" and type(teacher.unet).__name__ == "SD3Transformer2DModel"
    assert [type(e).__name__ for e in teacher.text_encoders] == [
        "CLIPTextModelWithProjection",
        "CLIPTextModelWithProjection",
        "T5EncoderModel",
    ]
    assert teacher.in_channels == 4 and teacher.sample_size == 8 and teacher.image_size == 16
    assert teacher.cond_kind == "text" and teacher.schedule.family == "flow"
    assert teacher._latent_scaling() == pytest.approx((1.5305, 0.0609))


@pytest.mark.parametrize("t5", [True, False])
def test_sd3_prompts_and_samples_equal_the_stock_pipeline(sd3_dir, tmp_path, t5):
    path = sd3_dir
    kwargs = {}
    if not t5:  # SD3 runs without T5: zero T5 tokens
        path = tmp_path / "no_t5"
        build_tiny_sd3(path, t5=False)
        kwargs = {"text_encoder_3": None, "tokenizer_3": None}
    teacher = DiffusionTeacher.from_pretrained(path, max_sequence_length=T5_TOKENS)
    assert len(teacher.text_encoders) == (3 if t5 else 2)
    pipe = _pipe(StableDiffusion3Pipeline, path, **kwargs)
    cond = teacher.encode_prompt(PROMPTS)
    with torch.no_grad():  # as the pipeline's __call__ runs it (attention kernels differ with autograd on)
        embeds, _, pooled, _ = pipe.encode_prompt(
            PROMPTS, None, None, do_classifier_free_guidance=False, max_sequence_length=T5_TOKENS
        )
    assert torch.equal(cond["encoder_hidden_states"], embeds) and torch.equal(
        cond["pooled_projections"], pooled
    )
    for steps in (1, 3):
        ours = teacher.sample(cond, _noise(teacher), steps=steps, guidance_scale=3.0)
        theirs = _pipeline_latents(pipe, teacher, steps=steps, guidance=3.0)
        assert (ours - theirs).abs().max() < 1e-5, steps


def test_flux_prompts_and_samples_equal_the_stock_pipeline(flux_dir):
    teacher = DiffusionTeacher.from_pretrained(flux_dir, max_sequence_length=T5_TOKENS)
    assert teacher.transformer_family == "flux" and teacher.in_channels == 4  # 16 packed channels / 4
    assert teacher.sample_size == 128  # FluxPipeline's default (1024 px) when not told
    teacher = DiffusionTeacher.from_pretrained(flux_dir, max_sequence_length=T5_TOKENS, sample_size=8)
    assert teacher.schedule.image_seq_len == 16  # (8 / 2)^2 packed tokens, what FluxPipeline's mu reads
    pipe = _pipe(FluxPipeline, flux_dir)
    cond = teacher.encode_prompt(PROMPTS)
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(PROMPTS, None, max_sequence_length=T5_TOKENS)
    assert torch.equal(cond["encoder_hidden_states"], embeds) and torch.equal(
        cond["pooled_projections"], pooled
    )
    for steps, guidance in ((1, 3.5), (3, 2.0)):  # FLUX-dev's embedded guidance: one forward per step
        ours = teacher.sample(cond, _noise(teacher), steps=steps, guidance_scale=guidance)
        theirs = _pipeline_latents(pipe, teacher, steps=steps, guidance=guidance)
        assert (ours - theirs).abs().max() < 1e-5, steps
    other = teacher.sample(cond, _noise(teacher), steps=1, guidance_scale=1.0)
    assert (other - teacher.sample(cond, _noise(teacher), steps=1, guidance_scale=3.5)).abs().max() > 1e-4


def test_flux_sigma_grid_is_the_pipelines():
    """FluxPipeline passes linspace(1, 1/N, N) (then dynamic shifting by mu); the scheduler's own set_timesteps
    would start from linspace(1, 1/1000, N)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from teachers.flow import FlowSchedule

    config = dict(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0).config)
    schedule = FlowSchedule.from_scheduler_config(config).with_image_seq_len(1024).with_sigma_grid("flux")
    mu = schedule.mu
    expected = time_shift(sigmas=np.linspace(1.0, 1.0 / 4, 4), mu=mu)
    assert np.allclose(schedule.sigmas(4).numpy(), expected, atol=1e-7)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0)
    scheduler.set_timesteps(sigmas=list(np.linspace(1.0, 1.0 / 4, 4)), mu=mu)
    assert torch.allclose(schedule.grid(4), scheduler.timesteps.float(), atol=1e-4)


def test_flux_without_guidance_embedding_refuses_a_scale(tmp_path):
    path = build_tiny_flux(tmp_path / "schnell", guidance_embeds=False)
    teacher = DiffusionTeacher.from_pretrained(path, max_sequence_length=T5_TOKENS, sample_size=8)
    cond = teacher.encode_prompt(PROMPTS[:1])
    noise = _noise(teacher)[:1]
    assert torch.isfinite(teacher.sample(cond, noise, steps=1, guidance_scale=1.0)).all()
    with pytest.raises(ValueError, match="no guidance embedding"):
        teacher.sample(cond, noise, steps=1, guidance_scale=3.5)


def test_packing_round_trips_and_ids_are_rows_and_columns():
    x = torch.randn(2, 4, 6, 8)
    tokens = pack_latents(latents=x)
    assert tokens.shape == (2, 12, 16)
    assert torch.equal(unpack_latents(tokens=tokens, height=6, width=8), x)
    assert torch.equal(tokens[0, 1], x[0, :, 0:2, 2:4].reshape(-1))  # token (0, 1): rows 0-1, columns 2-3
    ids = flux_image_ids(height=6, width=8)
    assert ids.shape == (12, 3) and ids[5].tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="even"):
        pack_latents(latents=torch.zeros(1, 4, 5, 4))


def test_unknown_family_and_bad_sizes_are_refused(sd3_dir, flux_dir, tmp_path):
    odd = tmp_path / "pixart"
    shutil.copytree(sd3_dir, odd)
    config = json.loads((odd / "transformer" / "config.json").read_text())
    config["_class_name"] = "PixArtTransformer2DModel"
    (odd / "transformer" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="PixArtTransformer2DModel"):
        DiffusionTeacher.from_pretrained(odd)
    with pytest.raises(ValueError, match="multiple of the network's patch size 2"):
        DiffusionTeacher.from_pretrained(flux_dir, sample_size=7)
    with pytest.raises(ValueError, match="max_sequence_length"):
        DiffusionTeacher.from_pretrained(sd3_dir, max_sequence_length=0)


# -- FLOPs ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_transformer_macs_equal_torch_flop_counter(sd3_dir, flux_dir, family):
    """Joint attention, adaLN, RoPE and patching counted exactly (fvcore + our handles vs FlopCounterMode)."""
    teacher = DiffusionTeacher.from_pretrained(sd3_dir if family == "sd3" else flux_dir, sample_size=8)
    inputs = example_inputs(teacher.unet, text_len=T5_TOKENS)
    ours = count_macs(teacher.unet, inputs)
    theirs = flop_counter_macs(teacher.unet, inputs)
    assert not ours.uncounted
    assert ours.by_category["conv"] == theirs["conv"]
    assert ours.by_category["linear"] + ours.by_category["matmul"] == theirs["linear+matmul"]
    assert ours.by_category["attention"] == theirs["attention"] > 0
    # the pipelines' text tokens: SD3 CLIP's 77 then T5's, FLUX T5's alone
    assert inputs.encoder_hidden_states.shape[1] == (77 + T5_TOKENS if family == "sd3" else T5_TOKENS)


# -- students -------------------------------------------------------------------------------------------------
def test_sd3_depth_pruned_student_is_a_subset_of_its_teacher(sd3_dir):
    teacher = DiffusionTeacher.from_pretrained(sd3_dir)
    student = create_student("sd3_depth_half", teacher=teacher)
    assert student.config.num_layers == 3  # blocks 0, 2 and the context_pre_only last block 3
    assert student.student_info.feature_pairs == [
        ("transformer_blocks.0", "transformer_blocks.0"),
        ("transformer_blocks.2", "transformer_blocks.1"),
        ("transformer_blocks.3", "transformer_blocks.2"),
    ]
    t_state, s_state = teacher.unet.state_dict(), student.state_dict()
    assert torch.equal(
        s_state["transformer_blocks.1.attn.to_q.weight"], t_state["transformer_blocks.2.attn.to_q.weight"]
    )
    assert torch.equal(s_state["pos_embed.proj.weight"], t_state["pos_embed.proj.weight"])
    assert student.transformer_blocks[-1].context_pre_only
    # the student answers the teacher's call with the teacher's conditioning
    cond = teacher.encode_prompt(PROMPTS[:1])
    from teachers.network import call_denoiser

    out = call_denoiser(student, torch.randn(1, 4, 8, 8), torch.tensor([500.0]), cond)
    assert out.shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="context_pre_only"):
        depth_pruned_transformer(teacher, keep=[0, 1])
    with pytest.raises(ValueError, match="FluxTransformer2DModel teacher"):
        create_student("flux_depth_half", teacher=teacher)


def test_flux_depth_pruned_and_narrow_students(flux_dir):
    teacher = DiffusionTeacher.from_pretrained(flux_dir, sample_size=8)
    student = depth_pruned_transformer(teacher, keep=[1], keep_single=[0])
    assert (student.config.num_layers, student.config.num_single_layers) == (1, 1)
    assert student.config.guidance_embeds  # FLUX-dev's guidance input is kept
    assert torch.equal(
        student.state_dict()["transformer_blocks.0.ff.net.0.proj.weight"],
        teacher.unet.state_dict()["transformer_blocks.1.ff.net.0.proj.weight"],
    )
    narrow = narrow_transformer(teacher, num_attention_heads=1, num_layers=1, num_single_layers=1)
    assert narrow.config.joint_attention_dim == teacher.unet.config.joint_attention_dim
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in teacher.unet.parameters()) / 2
    # feature KD hooks read the image-token stream of (encoder_hidden_states, hidden_states) block outputs
    recorder = FeatureRecorder(
        student, ["transformer_blocks.0", "single_transformer_blocks.0"], argument="test"
    )
    cond = teacher.encode_prompt(PROMPTS[:1])
    from teachers.network import denoise

    with recorder.recording() as features:
        denoise(student, teacher.schedule, torch.randn(1, 4, 8, 8), torch.tensor([500.0]), cond)
    assert features["transformer_blocks.0"].shape == (1, 16, 32)  # 16 image tokens of width 2 x 16
    assert features["single_transformer_blocks.0"].shape == (1, 16, 32)
