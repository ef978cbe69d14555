"""Options declared once (the base's reach every method through ``**kwargs``), one guidance convention (the CFG
scale, 1 = off) everywhere, and configs written with the old meaning refused with the converted value."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from distill.cli import main
from distill.methods.base import DistillationModule

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "digits"
METHOD_CONFIGS = {"kd.yaml": "KnowledgeDistillation", "consistency.yaml": "ConsistencyDistillation"}
METHOD_CONFIGS["progressive.yaml"] = "ProgressiveDistillation"
BASE_OPTIONS = [
    n
    for n in inspect.signature(DistillationModule.__init__).parameters
    if n not in ("self", "teacher", "student")
]


@pytest.mark.parametrize("config", sorted(METHOD_CONFIGS))
def test_print_config_lists_every_base_option(config, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "-c", str(CONFIGS / config), "--print_config"])
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].endswith(METHOD_CONFIGS[config])
    init_args = printed["model"]["init_args"]
    missing = [name for name in BASE_OPTIONS if name not in init_args]
    assert not missing, missing
    assert {
        "optimizer",
        "ema_decay",
        "compile_student",
        "evaluator",
        "eval_guidance_scale",
        "check_student_teacher",
    } <= set(BASE_OPTIONS)


def test_no_method_redeclares_the_base_options():
    from distill.methods.consistency import ConsistencyDistillation
    from distill.methods.knowledge import KnowledgeDistillation
    from distill.methods.progressive import ProgressiveDistillation

    for cls in (KnowledgeDistillation, ConsistencyDistillation, ProgressiveDistillation):
        own = set(inspect.signature(cls.__init__).parameters)
        assert not own & set(BASE_OPTIONS), (cls.__name__, own & set(BASE_OPTIONS))
        assert "kwargs" in own


@pytest.mark.parametrize(
    ("config", "override", "expected"),
    [
        ("consistency.yaml", "--model.init_args.w_max=2.0", "guidance_max: 3.0"),
        ("consistency.yaml", "--model.init_args.w_min=0.5", "guidance_min: 1.5"),
        ("progressive.yaml", "--model.init_args.eval_guidance=1.0", "eval_guidance_scale: 2.0"),
        ("kd.yaml", "--model.init_args.eval_guidance=2.0", "eval_guidance_scale: 2.0"),
    ],
)
def test_old_guidance_keys_are_refused_with_the_converted_value(
    config, override, expected, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "-c", str(CONFIGS / config), override, "--trainer.max_steps=1"])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert expected in err and "classifier-free guidance" in err, err
    assert not (tmp_path / "lightning_logs").exists()


def test_an_old_config_file_is_refused_with_the_converted_value(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = yaml.safe_load((CONFIGS / "consistency.yaml").read_text())
    init = old["model"]["init_args"]
    init.pop("guidance_min"), init.pop("guidance_max"), init.pop("eval_guidance_scale")
    init.update({"w_min": 0.0, "w_max": 1.0, "eval_guidance": 0.0})
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(path)])
    err = capsys.readouterr().err
    for text in ("guidance_min: 1.0", "guidance_max: 2.0", "eval_guidance_scale: 1.0", str(path)):
        assert text in err, (text, err)


def test_one_guidance_scale_means_the_same_in_every_method(tiny_teacher_dir):
    """Scale 3 is the teacher's CFG at 3 wherever it is set: the guided teacher step of consistency and
    progressive distillation, the teacher row of every method's grid, and LCM's w = 2 in the student embedding."""
    from conftest import tiny_cond_unet

    from distill.methods.consistency import ConsistencyDistillation
    from distill.methods.knowledge import KnowledgeDistillation
    from distill.methods.progressive import ProgressiveDistillation
    from distill.objectives import draw_consistency, draw_progressive, teacher_solver_step
    from distill.rng import GeneratorRandom
    from teachers import DiffusionTeacher
    from teachers.network import guided_denoiser
    from teachers.parameterization import ddim_step

    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    scale = 3.0
    x0, labels = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 3])
    z, s, t = torch.randn(4, 1, 8, 8), torch.tensor([999, 519, 259, 19]), torch.tensor([979, 499, 239, 0])
    guided = teacher.predict(z, s, labels, guidance_scale=scale)
    alpha, sigma = teacher.schedule.alpha_sigma(t)
    expected_step = ddim_step(x0=guided.x0, eps=guided.eps, alpha_next=alpha, sigma_next=sigma)

    common = dict(samples_per_class=0, eval_guidance_scale=scale)
    cd = ConsistencyDistillation(
        teacher,
        tiny_cond_unet(seed=1, time_cond_proj_dim=8),
        guidance_min=scale,
        guidance_max=scale,
        **common,
    )
    pd = ProgressiveDistillation(
        teacher,
        tiny_cond_unet(seed=2, time_cond_proj_dim=8),
        teacher_steps=4,
        final_steps=1,
        guidance_min=scale,
        guidance_max=scale,
        **common,
    )
    kd = KnowledgeDistillation(teacher, tiny_cond_unet(seed=3), **common)
    rng = GeneratorRandom(torch.Generator().manual_seed(0))
    for draws in (
        draw_consistency(
            rng,
            x0=x0,
            solver_grid=cd.solver_timesteps,
            guidance_min=scale,
            guidance_max=scale,
            cond=labels,
            cond_drop_prob=0.0,
        ),
        draw_progressive(rng, x0=x0, grid=pd.teacher_grid(), guidance_min=scale, guidance_max=scale),
    ):
        torch.testing.assert_close(draws.w + 1.0, torch.full((4,), scale))  # LCM's w = scale - 1, internal
        step = teacher_solver_step(teacher, z, s, t, labels, draws.w, guided=True)
        torch.testing.assert_close(step, expected_step, rtol=1e-5, atol=1e-5)
    for module in (kd, cd, pd):
        assert module.eval_guidance_scale == scale
    # a guidance-distilled student takes w = scale - 1 through timestep_cond, as diffusers' LCM pipeline does
    emb_denoiser = guided_denoiser(cd.student, teacher.schedule, cond=labels, guidance_scale=scale)
    assert emb_denoiser.w == pytest.approx(scale - 1.0)
    # a plain student runs CFG at the same scale as the teacher
    kd_pred = guided_denoiser(
        teacher.unet, teacher.schedule, cond=labels, guidance_scale=scale, uncond=teacher.null_cond
    )(z, s)
    torch.testing.assert_close(kd_pred.x0, guided.x0)


def test_a_run_saved_with_old_guidance_keys_is_refused_by_export_and_sample(tmp_path):
    from distill.lightning_cli import module_from_config

    old = yaml.safe_load((CONFIGS / "progressive.yaml").read_text())
    old["model"]["init_args"].pop("eval_guidance_scale")
    old["model"]["init_args"].update({"w_min": 0.0, "w_max": 0.5})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(ValueError, match=r"write `guidance_max: 1.5`") as info:
        module_from_config(path)
    assert str(path) in str(info.value) and "guidance_min: 1.0" in str(info.value)
