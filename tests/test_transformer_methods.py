"""The distillation methods on SD3 and FLUX teachers: bad students and guidance requests refused before any step,
KD's embedded-guidance draws, and (make test-slow) each configs/sd3 and configs/flux recipe trained, exported and
sampled by the stock diffusers pipeline, equal to the library's own samples."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", minversion="5.0")

from distill import ConsistencyDistillation, KnowledgeDistillation
from students.transformer import depth_pruned_transformer, narrow_transformer
from teachers import DiffusionTeacher

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a photo of digit zero", "a red square"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one torch thread (conftest)."""


@pytest.fixture(scope="module")
def sd3(tiny_sd3):
    return DiffusionTeacher.from_pretrained(tiny_sd3[0], max_sequence_length=8)


@pytest.fixture(scope="module")
def flux(tiny_flux):
    return DiffusionTeacher.from_pretrained(tiny_flux[0], max_sequence_length=8, sample_size=8)


def test_students_that_do_not_fit_the_teacher_are_refused(sd3, flux, tiny_sd):
    from students.loading import load_student

    unet = load_student(tiny_sd[0])
    unet = type(unet).from_config(unet.config)  # the tiny SD-1.x UNet's architecture, untrained
    with pytest.raises(
        ValueError, match="UNet2DConditionModel but the teacher's denoiser is a SD3Transformer2DModel"
    ):
        KnowledgeDistillation(sd3, unet)
    with pytest.raises(ValueError, match="FluxTransformer2DModel but the teacher's denoiser is a SD3"):
        KnowledgeDistillation(sd3, depth_pruned_transformer(flux, every=2))
    config = {**dict(sd3.unet.config), "joint_attention_dim": 48}
    wrong = type(sd3.unet).from_config(config)
    with pytest.raises(
        ValueError, match=re.escape("student.joint_attention_dim=48 but the teacher's joint_attention_dim=64")
    ):
        KnowledgeDistillation(sd3, wrong, init_from_teacher=False)
    config = {**dict(sd3.unet.config), "patch_size": 1}
    with pytest.raises(ValueError, match=re.escape("student.patch_size=1")):
        KnowledgeDistillation(sd3, type(sd3.unet).from_config(config), init_from_teacher=False)


def test_guidance_asked_of_networks_that_cannot_take_it_is_refused(sd3, flux, tmp_path):
    from distill.tiny_pipeline import build_tiny_flux

    with pytest.raises(ValueError, match="this teacher takes no guidance input"):
        KnowledgeDistillation(sd3, depth_pruned_transformer(sd3, every=2), guidance_min=1.0, guidance_max=4.0)
    schnell_like = narrow_transformer(flux, num_attention_heads=1, num_layers=1, num_single_layers=1)
    schnell_like = type(schnell_like).from_config({**dict(schnell_like.config), "guidance_embeds": False})
    with pytest.raises(ValueError, match="the student has no guidance input"):
        KnowledgeDistillation(flux, schnell_like, guidance_min=1.0, guidance_max=4.0, init_from_teacher=False)
    with pytest.raises(ValueError, match="FLUX student without a guidance embedding"):
        ConsistencyDistillation(flux, schnell_like, init_from_teacher=False, eval_guidance_scale=3.5)
    with pytest.raises(ValueError, match="FLUX student without a guidance embedding"):
        ConsistencyDistillation(
            flux, schnell_like, init_from_teacher=False, guidance_min=1.0, guidance_max=4.0
        )
    schnell = DiffusionTeacher.from_pretrained(
        build_tiny_flux(tmp_path / "schnell", guidance_embeds=False), max_sequence_length=8, sample_size=8
    )
    with pytest.raises(ValueError, match="FLUX teacher has no guidance embedding"):
        ConsistencyDistillation(
            schnell, schnell_like, init_from_teacher=False, guidance_min=3.0, guidance_max=3.0
        )


def test_kd_gives_flux_teacher_and_student_the_same_drawn_guidance(flux, monkeypatch):
    """FLUX-dev's scale is an input: each sample's draw reaches teacher and student alike, inside the range."""
    import teachers.transformer as transformer

    method = KnowledgeDistillation(
        flux, depth_pruned_transformer(flux, every=2), guidance_min=1.5, guidance_max=4.0
    )
    seen: list[torch.Tensor] = []
    original = transformer.call_transformer

    def spy(net, sample, timestep, cond, *, guidance=None):
        seen.append(guidance.clone())
        return original(net, sample, timestep, cond, guidance=guidance)

    monkeypatch.setattr("teachers.network.call_transformer", spy)
    cond = flux.encode_prompt(PROMPTS * 2)
    batch = {"latents": torch.randn(4, 4, 8, 8), "prompt_embeds": cond["encoder_hidden_states"],
             "pooled_projections": cond["pooled_projections"]}  # fmt: skip
    losses = method.training_losses(batch)
    assert torch.isfinite(losses["loss"]) and losses["feature_kd"] > 0
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # teacher, then student
    assert seen[0].shape == (4,) and ((seen[0] >= 1.5) & (seen[0] <= 4.0)).all() and seen[0].std() > 0


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_progressive_and_consistency_step_on_transformer_teachers(family, sd3, flux):
    """Progressive distillation (a round of 4 -> 2 Euler steps) and consistency distillation take a finite loss
    and a gradient to every block of a depth-pruned student of either family."""
    from distill import ProgressiveDistillation

    teacher = sd3 if family == "sd3" else flux
    cond = teacher.encode_prompt(PROMPTS)
    batch = {"latents": torch.randn(2, 4, 8, 8), "prompt_embeds": cond["encoder_hidden_states"],
             "pooled_projections": cond["pooled_projections"]}  # fmt: skip
    methods = [
        ProgressiveDistillation(
            teacher, depth_pruned_transformer(teacher, every=2), teacher_steps=4, final_steps=2
        ),
        ConsistencyDistillation(teacher, depth_pruned_transformer(teacher, every=2), original_steps=10),
    ]
    for method in methods:
        loss = method.training_losses(batch)["loss"]
        assert torch.isfinite(loss)
        loss.backward()
        grads = [
            p.grad
            for name, p in method.student.named_parameters()
            if name.startswith("transformer_blocks.0.")
        ]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_kd_draws_logit_normal_times_as_sd3_trains(sd3):
    """time_density: logit_normal concentrates KD's times mid-trajectory (SD3's recipe); uniform spreads them."""
    from distill.objectives import draw_noising
    from distill.rng import GeneratorRandom

    method = KnowledgeDistillation(sd3, depth_pruned_transformer(sd3, every=2), time_density="logit_normal")
    assert method.time_density == "logit_normal"
    x0 = torch.zeros(4000, 1, 1, 1)
    sigmas = {}
    for density in ("uniform", "logit_normal"):
        rng = GeneratorRandom(torch.Generator().manual_seed(0), device=torch.device("cpu"))
        draws = draw_noising(
            rng, x0=x0, schedule=sd3.schedule, cond=None, cond_drop_prob=0.0, density=density
        )
        sigmas[density] = sd3.schedule.sigma_of(draws.t)
    # sigma = sigmoid(n) before the shift: its quartiles sit inside the uniform draw's
    spread = {k: float(v.quantile(0.75) - v.quantile(0.25)) for k, v in sigmas.items()}
    assert spread["logit_normal"] < 0.8 * spread["uniform"]
    with pytest.raises(ValueError, match="time_density must be one of"):
        KnowledgeDistillation(sd3, depth_pruned_transformer(sd3, every=2), time_density="cosine")


# -- make test-slow: every recipe end to end on the tiny pipelines -----------------------------------------------
def _fit_and_export(config: str, pipeline: Path, captions: Path, tmp_path: Path) -> Path:
    from distill.cli import main

    family = config.split("/")[1]
    student_key = "teacher" if config.endswith("kd.yaml") else "path"
    args = [
        "-c",
        str(ROOT / config),
        "-c",
        str(ROOT / "configs" / family / "cpu_smoke.yaml"),
        f"--model.init_args.teacher.init_args.path={pipeline}",
        f"--model.init_args.student.init_args.{student_key}={pipeline}",
        f"--data.init_args.root={captions}",
        "--data.init_args.image_size=16",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--trainer.enable_progress_bar=false",
    ]
    main(["fit", *args])
    run = Path(sorted(glob.glob(str(tmp_path / "runs" / "*" / "version_*")))[-1])
    out = tmp_path / "export"
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt = ckpt if ckpt.is_file() else sorted((run / "checkpoints").glob("*.ckpt"))[-1]
    main(
        ["export", "-c", str(run / "config.yaml"), f"--ckpt_path={ckpt}", f"--output={out}", "--weights=raw"]
    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, steps, guidance",
    [
        ("configs/sd3/kd.yaml", 3, 7.0),
        ("configs/sd3/lcm.yaml", 1, 1.0),
        ("configs/flux/kd.yaml", 3, 3.5),
        ("configs/flux/lcm.yaml", 1, 3.5),
    ],
)
def test_recipes_train_export_and_sample_in_the_stock_pipeline(config, steps, guidance, tmp_path, request):
    """A run, an export, and images from diffusers' own pipeline equal the library's samples (same prompts and
    seed). Consistency students are compared at one step: SD3/FLUX pipelines pass no generator to the scheduler's
    step, so a multistep consistency sampler's re-noising there comes from torch's global RNG."""
    import diffusers

    family = config.split("/")[1]
    pipeline, captions = request.getfixturevalue(f"tiny_{family}")
    out = _fit_and_export(config, pipeline, captions, tmp_path)
    index = json.loads((out / "model_index.json").read_text())
    expected = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}[family]
    assert index["_class_name"] == expected and index["transformer"][0] == "diffusers"
    assert (out / "transformer" / "distilled_from.json").is_file()
    size = {"sample_size": 8} if family == "flux" else {}
    student = DiffusionTeacher.from_pretrained(out, max_sequence_length=16, **size)
    teacher = DiffusionTeacher.from_pretrained(pipeline, max_sequence_length=16, **size)
    assert student.unet.config.num_layers < teacher.unet.config.num_layers or config.endswith("lcm.yaml")
    cond = student.encode_prompt(PROMPTS)
    noise = torch.randn(2, student.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = (student.decode_latents(student.sample(cond, noise, steps=steps, guidance_scale=guidance)) + 1) / 2
    pipe = getattr(diffusers, expected).from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        PROMPTS,
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=16,
        width=16,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    assert (ours - images).abs().max() < 1e-4
    card = (out / "README.md").read_text()
    assert expected in card and "max_sequence_length=16" in card
