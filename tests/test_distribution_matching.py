"""DistributionMatchingDistillation (DMD2) as a method: the turn schedule of its two players, what each update
touches, backward simulation, the critic head, checkpoints, export, non-finite batches, TensorBoard, and the bad
inputs refused before any step. The objective's maths is tested in test_distribution_matching_gmm.py."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import cpu_trainer, random_digits_loader, tiny_cond_unet
from torch.utils.data import DataLoader, TensorDataset

from distill.critic import CriticHead, bottleneck_features
from distill.methods.distribution_matching import COLLAPSE_UPDATES, DistributionMatchingDistillation
from distill.objectives.distribution_matching import (
    DistributionMatchingOptions,
    draw_distribution_matching,
    generator_input,
    generator_x0,
    times_in_range,
)
from distill.rng import GeneratorRandom
from teachers import DiffusionTeacher
from teachers.schedule import q_sample


@pytest.fixture
def teacher(tiny_teacher_dir):
    return DiffusionTeacher.from_pretrained(tiny_teacher_dir)


def _method(teacher, **kwargs) -> DistributionMatchingDistillation:
    options = dict(samples_per_class=0, evaluator=None, update_ratio=2)
    options.update(kwargs)
    return DistributionMatchingDistillation(teacher, tiny_cond_unet(seed=1), **options)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_each_batch_updates_one_player_at_the_ratio(teacher):
    module = _method(teacher, update_ratio=2)
    assert [module.is_generator_turn(s) for s in range(6)] == [True, False, False, True, False, False]
    assert [module.generator_updates(s) for s in range(7)] == [0, 1, 1, 1, 2, 2, 2]
    trainer = cpu_trainer(max_steps=9)
    trainer.fit(module, train_dataloaders=random_digits_loader(n=80))
    # global_step counts every optimizer step, and each batch makes exactly one
    assert trainer.global_step == 9
    generator, critic = (opt.optimizer for opt in module.optimizers())
    steps = [int(next(iter(o.state.values()))["step"]) for o in (generator, critic)]
    assert steps == [3, 6]
    assert int(module.ema.num_updates) == 3  # the EMA follows generator updates only


def test_a_generator_update_touches_only_the_student_and_a_critic_update_only_the_critic(teacher):
    module = _method(teacher, update_ratio=1)
    students, fakes, heads = _params(module.student), _params(module.fake_score), _params(module.critic_head)
    cpu_trainer(max_steps=1).fit(module, train_dataloaders=random_digits_loader())
    assert _changed(students, module.student)
    assert not _changed(fakes, module.fake_score) and not _changed(heads, module.critic_head)
    module = _method(teacher, update_ratio=1)
    students, fakes, heads = _params(module.student), _params(module.fake_score), _params(module.critic_head)
    trainer = cpu_trainer(max_steps=2)
    trainer.fit(module, train_dataloaders=random_digits_loader())
    assert _changed(fakes, module.fake_score) and _changed(heads, module.critic_head)
    # the generator's turn froze the critic only while it ran: its parameters train again afterwards
    assert all(p.requires_grad for p in module.fake_score.parameters())


def test_the_fake_score_starts_as_a_float32_copy_of_the_teacher_unless_given(teacher):
    module = _method(teacher)
    assert module.fake_score is not teacher.unet
    for a, b in zip(module.fake_score.parameters(), teacher.unet.parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b.float()) and a.requires_grad
    given = tiny_cond_unet(seed=7)
    assert _method(teacher, fake_score=given).fake_score is given


def test_backward_simulation_runs_the_generator_itself_to_the_drawn_step(teacher):
    schedule = teacher.schedule
    net = tiny_cond_unet(seed=3)
    options = DistributionMatchingOptions()
    grid = schedule.consistency_grid(3, original_steps=50)
    x0 = torch.randn(4, 1, 8, 8)
    draws = draw_distribution_matching(
        GeneratorRandom(torch.Generator().manual_seed(0)), x0=x0, num_steps=3, schedule=schedule
    )
    draws = type(draws)(**{**draws.__dict__, "step": torch.tensor([0, 1, 2, 1])})
    cond = torch.tensor([1, 2, 3, 4])
    z, t = generator_input(net, schedule, grid=grid, draws=draws, cond=cond, x0=None, options=options)
    assert torch.equal(t, grid[draws.step])
    assert torch.equal(z[0], draws.noise[0])  # step 0: pure noise
    with torch.no_grad():  # by hand: one generator step, re-noised to grid[1], then another to grid[2]
        x = generator_x0(net, schedule, draws.noise, grid[0].expand(4), cond, options)
        a, s = schedule.alpha_sigma(grid[1].expand(4))
        z1 = q_sample(x0=x, eps=draws.renoise[0], alpha=a, sigma=s)
        x = generator_x0(net, schedule, z1, grid[1].expand(4), cond, options)
        a, s = schedule.alpha_sigma(grid[2].expand(4))
        z2 = q_sample(x0=x, eps=draws.renoise[1], alpha=a, sigma=s)
    torch.testing.assert_close(z[1], z1[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(z[3], z1[3], rtol=0, atol=1e-6)
    torch.testing.assert_close(z[2], z2[2], rtol=0, atol=1e-6)
    # without backward simulation: the real samples noised to the step's time (still pure noise at step 0)
    z_real, _ = generator_input(net, schedule, grid=grid, draws=draws, cond=cond, x0=x0, options=options)
    a, s = schedule.alpha_sigma(grid[2].expand(4))
    torch.testing.assert_close(z_real[2], q_sample(x0=x0, eps=draws.noise, alpha=a, sigma=s)[2])
    assert torch.equal(z_real[0], draws.noise[0])


@pytest.mark.parametrize("rows", [None, 3])
def test_the_regression_loss_pairs_the_generators_first_step_with_the_teachers_sample(teacher, rows):
    """DMD's regression term: the generator's one-step sample from a draw's noise against the teacher's
    deterministic sample from the same noise, on the first ``regression_batch_size`` images of the batch."""
    module = _method(
        teacher, num_steps=2, regression_weight=1.0, regression_steps=3, regression_batch_size=rows
    )
    x0, cond = next(iter(random_digits_loader(n=8, batch_size=8)))
    out = module.generator_losses((x0, cond), rng=GeneratorRandom(torch.Generator().manual_seed(5)))
    draws = draw_distribution_matching(
        GeneratorRandom(torch.Generator().manual_seed(5)), x0=x0, num_steps=2, schedule=teacher.schedule
    )
    n = 8 if rows is None else rows
    with torch.no_grad():
        target = teacher.sample(cond[:n], draws.noise[:n], steps=3)
        first = module.generator_grid[:1].expand(n)
        sample = generator_x0(
            module.student, teacher.schedule, draws.noise[:n], first, cond[:n], module.options
        )
    expected = torch.nn.functional.mse_loss(sample, target)
    torch.testing.assert_close(out["regression"], expected, rtol=1e-5, atol=1e-7)
    # the term reaches the generator's loss with its weight
    without = _method(teacher, num_steps=2).generator_losses(
        (x0, cond), rng=GeneratorRandom(torch.Generator().manual_seed(5))
    )
    torch.testing.assert_close(out["loss"] - without["loss"], expected, rtol=1e-4, atol=1e-6)


def test_distribution_matching_times_cover_the_fraction_range_on_both_families(teacher):
    u = torch.tensor([0.0, 0.5, 1.0])
    assert times_in_range(teacher.schedule, u, low=0.02, high=0.98).tolist() == [20, 500, 980]
    from teachers.flow import FlowSchedule

    flow = FlowSchedule.from_scheduler_config(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0}
    )
    times = times_in_range(flow, u, low=0.0, high=1.0)
    assert times[0] < times[1] < times[2] and float(times[2]) == 1000.0  # least noisy first, up to s = 1


def test_the_critic_reads_the_bottleneck_and_skips_the_rest_of_the_network(teacher):
    net = tiny_cond_unet(seed=0)
    ran = []
    net.up_blocks[0].register_forward_hook(lambda *a: ran.append(True))
    features = bottleneck_features(
        net, "mid_block", torch.randn(2, 1, 8, 8), torch.tensor([10, 500]), torch.tensor([1, 2])
    )
    assert features.shape == (2, 32, 4, 4) and not ran
    head = CriticHead.for_features(features.shape)
    assert head(features).shape == (2,)
    tokens = CriticHead.for_features((2, 16, 24))
    assert tokens.kind == "tokens" and tokens(torch.randn(2, 16, 24)).shape == (2,)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(B, N, C\)"):
        CriticHead.for_features((2, 24))
    with pytest.raises(ValueError, match=r"gan_feature names module 'middle'.*mid_block"):
        bottleneck_features(net, "middle", torch.randn(1, 1, 8, 8), torch.tensor([1]), torch.tensor([1]))


def test_checkpoints_hold_both_players_never_the_teacher_and_resume_the_ratio(teacher, tmp_path):
    module = _method(teacher)
    trainer = cpu_trainer(max_steps=4, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=random_digits_loader())
    path = tmp_path / "dmd.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    keys = state["state_dict"].keys()
    assert not [k for k in keys if k.startswith("teacher.")]
    assert any(k.startswith("fake_score.") for k in keys) and any(k.startswith("critic_head.") for k in keys)
    assert any(k.startswith("ema.") for k in keys) and len(state["optimizer_states"]) == 2
    assert state["distribution_matching"] == {"update_ratio": 2, "generator_updates": 2}
    fresh = _method(teacher)
    fresh.on_load_checkpoint(copy.deepcopy(state))
    fresh.load_state_dict(state["state_dict"], strict=False)
    for a, b in zip(fresh.fake_score.parameters(), module.fake_score.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="update_ratio=2, this run has 3"):
        _method(teacher, update_ratio=3).on_load_checkpoint(copy.deepcopy(state))


def test_export_is_an_lcm_folder_that_samples_as_the_method(teacher, tmp_path):
    from teachers.sampling import per_sample_noise

    module = _method(teacher, num_steps=2).eval()
    assert module.eval_steps == [2]
    assert module.generator_grid.tolist() == [999, 499]  # LCMScheduler's 2 steps of 50
    module.save_pretrained(tmp_path / "export")
    loaded = DiffusionTeacher.from_pretrained(tmp_path / "export")
    assert loaded.schedule.scheduler_class == "LCMScheduler"
    seeds, indices, labels = torch.zeros(3, dtype=torch.long), torch.arange(3), torch.tensor([2, 5, 8])
    noise = per_sample_noise(seeds=seeds, indices=indices, shape=(1, 8, 8))
    for steps in (1, 2):
        expected = module.sample(labels, noise, steps=steps, seeds=seeds, indices=indices)
        got = loaded.sample(labels, noise, steps=steps, seeds=seeds, indices=indices)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_custom_timesteps_train_the_generator_there_and_travel_with_the_export(teacher, tmp_path):
    from teachers.sampling import per_sample_noise
    from teachers.schedule import TRAINED_TIMESTEPS_KEY

    module = _method(teacher, num_steps=2, timesteps=[999, 299]).eval()
    assert module.generator_grid.tolist() == [999, 299]
    draws = draw_distribution_matching(
        GeneratorRandom(torch.Generator().manual_seed(0)),
        x0=torch.zeros(64, 1, 8, 8),
        num_steps=2,
        schedule=teacher.schedule,
    )
    assert set(module.generator_grid[draws.step].tolist()) == {999, 299}  # the generator trains at both times
    module.save_pretrained(tmp_path / "export")
    loaded = DiffusionTeacher.from_pretrained(tmp_path / "export")
    assert loaded.schedule.config[TRAINED_TIMESTEPS_KEY] == [999, 299]
    assert loaded.schedule.consistency_grid(2).tolist() == [999, 299]
    seeds, indices, labels = torch.zeros(3, dtype=torch.long), torch.arange(3), torch.tensor([2, 5, 8])
    noise = per_sample_noise(seeds=seeds, indices=indices, shape=(1, 8, 8))
    expected = module.sample(labels, noise, steps=2, seeds=seeds, indices=indices)
    torch.testing.assert_close(
        loaded.sample(labels, noise, steps=2, seeds=seeds, indices=indices), expected, rtol=0, atol=1e-6
    )
    from distill.export import model_card

    card = model_card(module, {"global_step": 0}, weights="ema")
    assert "[999, 299], recorded in the scheduler config as `_trained_timesteps`" in card
    assert "`timesteps=[999, 299]`" in card
    at_499 = _method(teacher, num_steps=2).eval()
    at_499.student.load_state_dict(module.student.state_dict())
    at_499.ema.load_state_dict(module.ema.state_dict())
    assert not torch.allclose(at_499.sample(labels, noise, steps=2, seeds=seeds, indices=indices), expected)


def test_a_flow_teacher_trains_and_exports_a_flow_lcm_scheduler(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    path = tmp_path / "flow"
    tiny_cond_unet(seed=0).save_pretrained(path / "unet")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(path / "scheduler")
    flow = DiffusionTeacher.from_pretrained(path)
    module = _method(flow, num_steps=2)
    assert float(module.generator_grid[0]) == 1000.0  # the first step starts at pure noise (s = 1)
    with pytest.raises(ValueError, match="applies to a DDPM-family teacher"):
        _method(flow, num_steps=2, timesteps=[999, 299])
    before = _params(module.student)
    cpu_trainer(max_steps=3).fit(module, train_dataloaders=random_digits_loader())
    assert _changed(before, module.student)
    module.save_pretrained(tmp_path / "export")
    assert (
        DiffusionTeacher.from_pretrained(tmp_path / "export").schedule.scheduler_class
        == "FlowMatchLCMScheduler"
    )


def _corrupt_loader(bad_batch: int):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(32, 1, 8, 8, generator=gen) * 2 - 1
    images[bad_batch * 8] = float("nan")
    return DataLoader(TensorDataset(images, torch.arange(32) % 10), batch_size=8)


def test_a_non_finite_critic_batch_is_skipped_or_stops(teacher):
    module = _method(teacher, nonfinite="skip", update_ratio=3)
    trainer = cpu_trainer(max_steps=3)
    # batch 1 (a critic turn: its real images feed the GAN term) is corrupt: skipped, nothing moves
    trainer.fit(module, train_dataloaders=_corrupt_loader(bad_batch=1))
    assert module.nonfinite_steps == 1 and trainer.global_step == 3
    assert all(
        torch.isfinite(p).all()
        for m in (module.student, module.fake_score, module.critic_head)
        for p in m.parameters()
    )
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        cpu_trainer(max_steps=3).fit(
            _method(teacher, update_ratio=3), train_dataloaders=_corrupt_loader(bad_batch=1)
        )


def test_tensorboard_holds_both_players_losses_and_the_critics_logits(teacher, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = _method(teacher)
    logger = TensorBoardLogger(tmp_path, name="dmd", version=0)
    cpu_trainer(max_steps=6, logger=logger, log_every_n_steps=1).fit(
        module, train_dataloaders=random_digits_loader()
    )
    acc = EventAccumulator(str(tmp_path / "dmd" / "version_0"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "train/generator/dm",
        "train/generator/gan",
        "train/generator/dm_grad_norm",
        "train/critic/fake_score",
        "train/critic/gan",
        "train/critic/logit_real",
        "train/critic/logit_fake",
        "train/generator_updates",
    ):
        assert tag in tags, (tag, sorted(tags))
    assert [e.value for e in acc.Scalars("train/generator_updates")][-1] == 2.0


def test_a_saturated_critic_is_warned_about_once(teacher):
    module = _method(teacher)
    saturated = {"logit_fake": torch.tensor(-9.0), "logit_real": torch.tensor(9.0)}
    with pytest.warns(UserWarning, match="GAN critic has separated"):
        for _ in range(COLLAPSE_UPDATES):
            module._watch_collapse(saturated)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module._watch_collapse(saturated)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"update_ratio": 0}, "update_ratio must be a whole number >= 1"),
        ({"update_ratio": 2.5}, "update_ratio must be a whole number >= 1"),
        ({"regression_batch_size": 0}, "regression_batch_size must be a whole number >= 1"),
        ({"dm_time_min": 0.5, "dm_time_max": 0.4}, "dm_time_min < dm_time_max"),
        ({"gan_feature": "bottleneck"}, "gan_feature names module 'bottleneck'"),
        ({"gan_critic_weight": -1.0}, "gan_critic_weight must be >= 0"),
        ({"num_steps": 0}, "num_steps must be a whole number"),
        ({"num_steps": 8, "original_steps": 4}, "num_steps=8 exceeds original_steps=4"),
        ({"gradient_clip_val": float("nan")}, "gradient_clip_val must be a finite number"),
        (
            {"num_steps": 2, "timesteps": [999, 250]},
            "model.init_args.timesteps: \\[250\\] not on the consistency grid",
        ),
        ({"num_steps": 2, "timesteps": [299, 999]}, "model.init_args.timesteps must be strictly decreasing"),
        ({"num_steps": 1, "timesteps": [999, 299]}, "has 2 times but num_steps=1"),
        ({"critic_optimizer": lambda p: torch.optim.AdamW(p, lr=-1.0)}, "model.init_args.critic_optimizer"),
    ],
)
def test_bad_options_are_refused_at_construction(teacher, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _method(teacher, **kwargs)


def test_bad_networks_are_refused(teacher, tmp_path):
    student = tiny_cond_unet(seed=1)
    with pytest.raises(ValueError, match="separate network from the student"):
        DistributionMatchingDistillation(teacher, student, fake_score=student, samples_per_class=0)
    with pytest.raises(ValueError, match="not the teacher's own"):
        DistributionMatchingDistillation(teacher, student, fake_score=teacher.unet, samples_per_class=0)
    other = tiny_cond_unet(seed=2)
    other.trained_prediction_type = "epsilon"
    with pytest.raises(ValueError, match="fake_score: its weights were trained to predict 'epsilon'"):
        DistributionMatchingDistillation(teacher, student, fake_score=other, samples_per_class=0)
    with pytest.raises(ValueError, match="fake_score has num_class_embeds=5"):
        DistributionMatchingDistillation(
            teacher, student, fake_score=tiny_cond_unet(seed=2, num_class_embeds=5), samples_per_class=0
        )


def test_trainer_options_that_do_not_apply_to_manual_optimisation_are_refused(teacher):
    with pytest.raises(Exception, match="gradient_clip_val"):
        cpu_trainer(max_steps=1, gradient_clip_val=1.0).fit(
            _method(teacher), train_dataloaders=random_digits_loader()
        )
    with pytest.raises(Exception, match="accumulate_grad_batches"):
        cpu_trainer(max_steps=1, accumulate_grad_batches=2).fit(
            _method(teacher), train_dataloaders=random_digits_loader()
        )


def test_ddp_without_unused_parameter_search_is_refused_before_any_step(teacher):
    module = _method(teacher)
    strategy = SimpleNamespace(_ddp_kwargs={})
    module._trainer = SimpleNamespace(
        strategy=strategy, world_size=2, accumulate_grad_batches=1, gradient_clip_val=None, datamodule=None
    )
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        module.setup("fit")
    strategy._ddp_kwargs = {"find_unused_parameters": True}
    module.setup("fit")
