"""Distribution matching distillation, DMD2 (Yin et al. 2024): a 1- to few-step student whose samples' distribution
matches the teacher's, for any student architecture (:mod:`distill.objectives.distribution_matching`).

Two players, trained in turns on the same data stream (two time-scale update rule): the *generator* (the student)
and the *critic* (the fake score, a denoiser of the generator's distribution, plus DMD2's GAN head on its
bottleneck). Each training batch is one update of one of them: in every ``update_ratio + 1`` batches the
generator is updated once and the critic ``update_ratio`` times (DMD2: 5). So ``trainer.global_step`` (which
counts every optimizer step) equals the number of batches trained, and the randomness, checkpoints,
``max_steps`` and ``val_check_interval`` count batches as for every other method; the generator's EMA and LR
schedule advance on generator updates (``train/generator_updates``), the critic's LR schedule on critic updates.

Lightning's manual optimisation runs the two optimizers. Its catches, handled: each backward reaches only one
player's parameters, so under DDP the strategy must find unused parameters (``ddp_find_unused_parameters_true``;
refused otherwise, before any step); the Trainer's ``gradient_clip_val`` and ``accumulate_grad_batches`` do not
apply to manual optimisation (this method's own ``gradient_clip_val`` clips both players; accumulation is
refused); a non-finite loss skips the batch's update (no optimizer, EMA or LR step).

The student samples as a consistency model on its ``num_steps`` grid (LCMScheduler's timesteps, custom ``timesteps``
on its grid, or FlowMatchLCMScheduler's for a flow teacher) and exports that scheduler, which stock diffusers loads
(custom times are recorded in the config and passed as a pipeline's ``timesteps=``).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from distill.critic import CriticHead, bottleneck_features
from distill.features import transfer_weights
from distill.methods.base import DistillationModule
from distill.methods.checks import null_class_of
from distill.methods.optim import check_optimizer, configure
from distill.methods.ranges import check_at_least, check_finite, check_step_count
from distill.objectives.distribution_matching import (
    DistributionMatchingOptions,
    critic_loss,
    draw_distribution_matching,
    generate,
    generator_loss,
    generator_x0,
    times_in_range,
)
from distill.rng import GeneratorRandom, KeyedRandom
from teachers.conditioning import head_cond
from teachers.schedule import NoiseSchedule, check_consistency_timesteps
from teachers.teacher import DiffusionTeacher

CRITIC_OPTIMIZER_KEY = "model.init_args.critic_optimizer"
#: the critic counts as collapsed when, for this many critic updates in a row, it calls generated samples real with
#: probability below ``COLLAPSE_P`` and real ones real above ``1 - COLLAPSE_P``
COLLAPSE_UPDATES = 50
COLLAPSE_P = 0.02

# Lightning warns that a checkpoint taken under manual optimisation holds the weights after the batch's update. That
# is this method's design, as under automatic optimisation: a checkpoint at step N holds N updates, so a run resumed
# from it continues exactly.
warnings.filterwarnings(
    "ignore",
    message="Using ModelCheckpoint with manual optimization and every_n_train_steps",
    category=UserWarning,
)


class DistributionMatchingDistillation(DistillationModule):
    """DMD2: distribution-matching gradient from the teacher (real score) and a trained fake score, a GAN critic
    on the fake score's bottleneck, two time-scale updates, backward simulation for multi-step students.

    Args:
        teacher: the frozen teacher (the real score).
        student: the generator (any registered architecture; it takes the teacher's conditioning).
        fake_score: the fake score's initial network, trained from there (None: a float32 copy of the teacher's
            network, as DMD2). A smaller trained denoiser of the same parameterisation (e.g. a KD student) costs
            less per update.
        num_steps: the generator's sampling steps (1: one step from pure noise; DMD2 uses 1 to 4).
        backward_simulation: train a multi-step generator at each step on inputs made by running itself from
            noise (DMD2); false: real data noised to the step's time.
        original_steps: the consistency grid's skipping-step size the steps are taken from (LCMScheduler's
            ``original_inference_steps``: for 1000 timesteps and 50, the 1-step time is 999 and 2 steps 999, 499).
        timesteps: custom times of the generator's ``num_steps`` steps instead of LCM's evenly spaced ones, points of
            the ``original_steps`` grid in decreasing order (e.g. ``[999, 299]``: a second step at lower noise, as
            DMD2's released students are sampled with ``timesteps=``); the exported scheduler config records them
            and this package's samplers use them (a DDPM-family teacher; None: LCM's grid).
        guidance_scale: the teacher's classifier-free guidance scale in the real score (1: none); the student
            learns the guided distribution and samples it with guidance 1.
        update_ratio: critic updates per generator update (DMD2: 5); at least 1.
        dm_time_min, dm_time_max: the fraction range of training times the distribution-matching gradient is
            taken at (DMD2: 0.02, 0.98).
        gan_generator_weight, gan_critic_weight: the GAN term's weight in the generator's and the critic's loss
            (DMD2 ImageNet: 3e-3, 1e-2; both 0: no critic head).
        gan_feature: the fake score's module whose output the critic head reads (a UNet's ``mid_block``; for a
            transformer a block such as ``transformer_blocks.4``).
        gan_time_max: the critic sees samples noised to a time in ``[0, gan_time_max]`` of the training times.
        regression_weight: weight of DMD's regression loss (MSE of the generator's one-step sample to the
            teacher's deterministic sample from the same noise, computed on the fly; 0: none).
        regression_steps: the teacher's sampling steps for the regression pairs.
        regression_batch_size: make the regression pairs for the first this many images of each batch only (the
            teacher's sampler costs ``regression_steps`` forwards per image; None: the whole batch). The loss is
            the mean over those images.
        critic_optimizer: optimizer factory of the critic (fake score and head); ``optimizer`` is the generator's.
        critic_lr_scheduler: optional LR scheduler of the critic, stepped every critic update.
        gradient_clip_val: clip each player's gradient norm to this (None: no clipping); the Trainer's own
            ``gradient_clip_val`` does not apply to manual optimisation and is refused.
        timestep_scaling: the consistency boundary scaling of the exported LCMScheduler (10; sigma_data is 0.5).
        init_from_teacher: copy teacher tensors into the student where names and shapes match (DMD2 starts the
            generator from the teacher; a compressed student usually starts from its KD weights instead).
        **kwargs: the options every method shares (``DistillationModule``: optimizer (the generator's), EMA of
            the generator, evaluation, ...).
    """

    default_eval_guidance_scale = 1.0

    def __init__(
        self,
        teacher: DiffusionTeacher,
        student: nn.Module,
        fake_score: nn.Module | None = None,
        num_steps: int = 1,
        backward_simulation: bool = True,
        original_steps: int = 50,
        timesteps: list[int] | None = None,
        guidance_scale: float = 1.0,
        update_ratio: int = 5,
        dm_time_min: float = 0.02,
        dm_time_max: float = 0.98,
        gan_generator_weight: float = 3e-3,
        gan_critic_weight: float = 1e-2,
        gan_feature: str = "mid_block",
        gan_time_max: float = 1.0,
        regression_weight: float = 0.0,
        regression_steps: int = 25,
        regression_batch_size: int | None = None,
        critic_optimizer: OptimizerCallable = torch.optim.AdamW,
        critic_lr_scheduler: LRSchedulerCallable | None = None,
        gradient_clip_val: float | None = None,
        timestep_scaling: float = 10.0,
        init_from_teacher: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(update_ratio, bool) or not isinstance(update_ratio, int) or update_ratio < 1:
            raise ValueError(
                f"update_ratio must be a whole number >= 1 (critic updates per generator update), got "
                f"{update_ratio!r}: set model.init_args.update_ratio to e.g. 5 (DMD2)"
            )
        check_finite(
            {
                "guidance_scale": guidance_scale,
                "gan_generator_weight": gan_generator_weight,
                "gan_critic_weight": gan_critic_weight,
                "regression_weight": regression_weight,
                "gradient_clip_val": gradient_clip_val,
                "timestep_scaling": timestep_scaling,
            }
        )
        if gradient_clip_val is not None:
            check_at_least(gradient_clip_val, key="gradient_clip_val", minimum=0)
        check_at_least(timestep_scaling, key="timestep_scaling", minimum=0)
        if guidance_scale != 1.0 and teacher.cond_kind is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a conditional teacher (a null class or empty-prompt "
                "embeddings); set model.init_args.guidance_scale: 1"
            )
        schedule = teacher.schedule
        max_t = schedule.num_train_timesteps
        check_step_count(num_steps, key="num_steps", max_steps=max_t)
        check_step_count(regression_steps, key="regression_steps", max_steps=max_t)
        if regression_batch_size is not None and (
            isinstance(regression_batch_size, bool)
            or not isinstance(regression_batch_size, int)
            or regression_batch_size < 1
        ):
            raise ValueError(
                f"regression_batch_size must be a whole number >= 1 (images per batch given a teacher pair) or "
                f"null (the whole batch), got {regression_batch_size!r}"
            )
        if not 1 <= original_steps <= max_t:
            raise ValueError(
                f"original_steps must be in [1, {max_t}] (the teacher's timesteps), got {original_steps}"
            )
        schedule.skipping_grid(original_steps)  # refuses a grid the schedule cannot build
        if num_steps > original_steps:
            raise ValueError(
                f"num_steps={num_steps} exceeds original_steps={original_steps}: raise original_steps"
            )
        if timesteps is not None:
            if not isinstance(schedule, NoiseSchedule):
                raise ValueError(
                    "timesteps (custom generator times) applies to a DDPM-family teacher's LCM grid; a flow teacher's "
                    "generator samples on FlowMatchLCMScheduler's grid: drop model.init_args.timesteps"
                )
            grid = check_consistency_timesteps(
                timesteps=timesteps,
                num_train_timesteps=max_t,
                original_steps=original_steps,
                key="model.init_args.timesteps",
            )
            if len(grid) != num_steps:
                raise ValueError(
                    f"model.init_args.timesteps has {len(grid)} times but num_steps={num_steps}: give one time per "
                    "generator step"
                )
            timesteps = [int(t) for t in grid]
        self.options = DistributionMatchingOptions(
            guidance_scale=float(guidance_scale),
            dm_time_min=dm_time_min,
            dm_time_max=dm_time_max,
            gan_generator_weight=gan_generator_weight,
            gan_critic_weight=gan_critic_weight,
            gan_time_max=gan_time_max,
            regression_weight=regression_weight,
            timestep_scaling=timestep_scaling,
        )
        check_optimizer(critic_optimizer, key=CRITIC_OPTIMIZER_KEY)
        if fake_score is None:
            fake_score = copy.deepcopy(teacher.unet).float()
        fake_score.requires_grad_(True).train()
        if fake_score is student:
            raise ValueError(
                "fake_score must be a separate network from the student (pass null or another one)"
            )
        if fake_score is teacher.unet:
            raise ValueError(
                "fake_score must be a separate network, not the teacher's own (pass null to copy it)"
            )
        trained = getattr(fake_score, "trained_prediction_type", None)
        if trained is not None and trained != teacher.prediction_type:
            raise ValueError(
                f"fake_score: its weights were trained to predict {trained!r} but the teacher predicts "
                f"{teacher.prediction_type!r}; the fake score must denoise in the teacher's parameterisation: start "
                "it from the teacher (fake_score: null) or from a network distilled from this teacher"
            )
        null_class_of(fake_score, teacher.num_classes, argument="fake_score")
        self.init_report = None
        if kwargs.get("unit_dropping") is not None:
            raise ValueError(
                "unit_dropping (robust training) applies to the single-optimizer methods (KnowledgeDistillation, "
                "DiffusionTraining, ...); DistributionMatchingDistillation trains a generator and a critic"
            )
        if init_from_teacher:
            self.init_report = transfer_weights(source=teacher.unet, target=student)
            rank_zero_info(self.init_report.summary())
        super().__init__(teacher, student, **kwargs)
        self.automatic_optimization = False
        self.fake_score = fake_score
        self.gan_feature = gan_feature
        self.critic_head = self._build_head(fake_score) if self.options.gan else None
        self.num_steps = int(num_steps)
        self.backward_simulation = backward_simulation
        self.original_steps = original_steps
        self.update_ratio = update_ratio
        self.regression_steps = regression_steps
        self.regression_batch_size = regression_batch_size
        self.critic_optimizer = critic_optimizer
        self.critic_lr_scheduler = critic_lr_scheduler
        self.gradient_clip_val = gradient_clip_val
        self.timestep_scaling = timestep_scaling
        self.timesteps = timesteps
        grid = (
            torch.tensor(timesteps, dtype=torch.long)
            if timesteps is not None
            else schedule.consistency_grid(self.num_steps, original_steps=original_steps)
        )
        self.register_buffer("generator_grid", grid.clone(), persistent=False)
        self._saturated = 0
        self._collapse_warned = False

    def _build_head(self, fake_score: nn.Module) -> CriticHead:
        """The critic head sized by one probe forward of the fake score up to ``gan_feature``."""
        teacher = self.teacher
        size = teacher.unet.config.sample_size if hasattr(teacher.unet, "config") else teacher.sample_size
        size = tuple(size) if isinstance(size, list | tuple) else (int(size), int(size))
        probe = torch.zeros(1, teacher.in_channels, *size)
        t = times_in_range(teacher.schedule, torch.full((1,), 0.5), low=0.0, high=1.0)
        with torch.no_grad():
            features = bottleneck_features(fake_score, self.gan_feature, probe, t, teacher.dummy_cond(1))
        return CriticHead.for_features(tuple(features.shape))

    # -- turns and counters -------------------------------------------------------------------------------
    @property
    def default_eval_steps(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.num_steps,)

    def is_generator_turn(self, step: int) -> bool:
        """Whether training batch ``step`` (its global step) updates the generator: the first of every
        ``update_ratio + 1``."""
        return step % (self.update_ratio + 1) == 0

    def generator_updates(self, steps: int) -> int:
        """Generator updates among the first ``steps`` training batches."""
        return (steps + self.update_ratio) // (self.update_ratio + 1)

    def critic_modules(self) -> list[nn.Module]:
        return [self.fake_score] + ([self.critic_head] if self.critic_head is not None else [])

    def critic_parameters(self):
        for module in self.critic_modules():
            yield from module.parameters()

    # -- losses -------------------------------------------------------------------------------------------
    def _draws(self, x0: torch.Tensor, rng: KeyedRandom | GeneratorRandom):
        return draw_distribution_matching(
            rng, x0=x0, num_steps=self.num_steps, schedule=self.teacher.schedule
        )

    def _generate(self, x0, cond, draws) -> torch.Tensor:
        return generate(
            self.student,
            self.teacher.schedule,
            grid=self.generator_grid,
            draws=draws,
            cond=cond,
            options=self.options,
            x0=None if self.backward_simulation else x0,
        )

    def generator_losses(
        self, batch, rng: KeyedRandom | GeneratorRandom | None = None
    ) -> dict[str, torch.Tensor]:
        """The generator's loss terms of one batch (gradients to the student only)."""
        x0, cond = self.prepare_batch(batch)
        rng = self.train_random(x0.shape[0]) if rng is None else rng
        draws = self._draws(x0, rng)
        for module in self.critic_modules():
            module.requires_grad_(False)
        try:
            x = self._generate(x0, cond, draws)
            sample = target = None
            if self.options.regression_weight > 0:
                n = x0.shape[0] if self.regression_batch_size is None else self.regression_batch_size
                noise, pair_cond = draws.noise[:n], head_cond(cond, n)
                target = self.teacher.sample(
                    pair_cond, noise, steps=self.regression_steps, guidance_scale=self.options.guidance_scale
                )
                # the generator's one-step sample from the pair's noise: ``x`` itself for a one-step generator
                first = self.generator_grid[:1].expand(noise.shape[0])
                sample = (
                    x[:n]
                    if self.num_steps == 1 and self.backward_simulation
                    else generator_x0(
                        self.student, self.teacher.schedule, noise, first, pair_cond, self.options
                    )
                )
            return generator_loss(
                teacher=self.teacher,
                fake_score=self.fake_score,
                head=self.critic_head,
                feature=self.gan_feature,
                x=x,
                cond=cond,
                draws=draws,
                options=self.options,
                regression_sample=sample,
                regression_target=target,
            )
        finally:
            for module in self.critic_modules():
                module.requires_grad_(True)

    def critic_losses(
        self, batch, rng: KeyedRandom | GeneratorRandom | None = None
    ) -> dict[str, torch.Tensor]:
        """The critic's loss terms of one batch, on the generator's samples made without gradients."""
        x0, cond = self.prepare_batch(batch)
        rng = self.train_random(x0.shape[0]) if rng is None else rng
        draws = self._draws(x0, rng)
        with torch.no_grad():
            x = self._generate(x0, cond, draws)
        return critic_loss(
            teacher=self.teacher,
            fake_score=self.fake_score,
            head=self.critic_head,
            feature=self.gan_feature,
            x=x,
            real=x0,
            cond=cond,
            real_cond=cond,
            draws=draws,
            options=self.options,
        )

    def training_losses(
        self, batch: Any, rng: KeyedRandom | GeneratorRandom | None = None
    ) -> dict[str, torch.Tensor]:
        """The loss terms of the current turn (the generator's or the critic's)."""
        if self.is_generator_turn(self.global_step):
            return self.generator_losses(batch, rng=rng)
        return self.critic_losses(batch, rng=rng)

    # -- the manual optimisation step -----------------------------------------------------------------------
    def _player(self, generator: bool):
        """``(optimizer, scheduler or None)`` of one player."""
        optimizers = self.optimizers()
        opt = optimizers[0 if generator else 1]
        schedulers = self.lr_schedulers()
        schedulers = (
            [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]
        )
        raw = opt.optimizer if hasattr(opt, "optimizer") else opt
        scheduler = next((s for s in schedulers if s.optimizer is raw), None)
        return opt, scheduler

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx
        self._skipped = False
        generator_turn = self.is_generator_turn(self.global_step)
        losses = self.training_losses(batch)
        if not self._all_finite(losses["loss"]):
            return self._nonfinite(losses, batch_idx)
        opt, scheduler = self._player(generator_turn)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(losses["loss"])
        if self.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        opt.step()
        if scheduler is not None:
            scheduler.step()
        player = "generator" if generator_turn else "critic"
        if generator_turn and self.ema is not None:
            self.ema.update(self.student)
        sync = self._distributed()
        self.log("train/loss", losses["loss"].detach(), prog_bar=True, sync_dist=sync)
        for name, value in losses.items():
            self.log(f"train/{player}/{name}", value.detach(), sync_dist=sync)
        # global_step counts this update once the step returns
        self.log("train/generator_updates", float(self.generator_updates(self.global_step)))
        if self.nonfinite_steps:
            self.log("train/nonfinite_steps", float(self.nonfinite_steps))
        if not generator_turn and "logit_fake" in losses:
            self._watch_collapse(losses)
        return None

    def _watch_collapse(self, losses: dict[str, torch.Tensor]) -> None:
        """Warn (once) when the critic has told generated from real samples with near certainty for
        :data:`COLLAPSE_UPDATES` critic updates in a row: the GAN term then only saturates."""
        p_fake, p_real = torch.sigmoid(torch.stack([losses["logit_fake"], losses["logit_real"]])).tolist()
        saturated = p_fake < COLLAPSE_P and p_real > 1 - COLLAPSE_P
        self._saturated = self._saturated + 1 if saturated else 0
        if self._saturated >= COLLAPSE_UPDATES and not self._collapse_warned:
            self._collapse_warned = True
            rank_zero_warn(
                f"the GAN critic has separated generated from real samples with near certainty (P(real | fake) "
                f"{p_fake:.3g}, P(real | real) {p_real:.3g}) for {COLLAPSE_UPDATES} critic updates in a row at step "
                f"{self.global_step}: its gradient to the generator saturates. Lower gan_critic_weight or the "
                "critic's learning rate, raise gan_time_max (noisier critic inputs), or set the GAN weights to 0"
            )

    def validation_step(self, batch, batch_idx: int) -> None:
        rng = self.eval_random(batch_idx)
        critic = self.critic_losses(batch, rng=self.eval_random(batch_idx))
        generator = self.generator_losses(batch, rng=rng)
        self.log("val/dm_grad_norm", generator["dm_grad_norm"])
        self.log("val/fake_score", critic["fake_score"])
        for name in ("logit_real", "logit_fake"):
            if name in critic:
                self.log(f"val/{name}", critic[name])

    # -- fit-time checks ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = self._trainer
        if trainer is None or stage != "fit":
            return
        if int(getattr(trainer, "accumulate_grad_batches", 1)) > 1:
            raise ValueError(
                f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: DistributionMatchingDistillation "
                "updates one player per batch (manual optimisation), so gradient accumulation does not apply; "
                "remove it and raise data.init_args.batch_size (or the number of devices) instead"
            )
        if trainer.gradient_clip_val is not None:
            raise ValueError(
                f"trainer.gradient_clip_val={trainer.gradient_clip_val} does not apply to manual optimisation: set "
                "model.init_args.gradient_clip_val instead (it clips the generator's and the critic's updates)"
            )
        strategy = trainer.strategy
        kwargs = getattr(strategy, "_ddp_kwargs", None)
        if kwargs is not None and trainer.world_size > 1 and not kwargs.get("find_unused_parameters", False):
            raise ValueError(
                "DistributionMatchingDistillation under DDP: each backward reaches only the generator's or only the "
                "critic's parameters, so DDP must look for unused parameters; set trainer.strategy: "
                "ddp_find_unused_parameters_true (or DDPStrategy with find_unused_parameters: true)"
            )

    def configure_optimizers(self):
        def entry(config):
            return config if isinstance(config, dict) else {"optimizer": config}

        generator = configure(self.student.parameters(), self.optimizer, self.lr_scheduler)
        critic = configure(
            self.critic_parameters(),
            self.critic_optimizer,
            self.critic_lr_scheduler,
            key=CRITIC_OPTIMIZER_KEY,
        )
        return [entry(generator), entry(critic)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["distribution_matching"] = {
            "update_ratio": self.update_ratio,
            "generator_updates": self.generator_updates(int(checkpoint.get("global_step", self.global_step))),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("distribution_matching", {}).get("update_ratio")
        if saved is not None and saved != self.update_ratio:
            raise ValueError(
                f"the checkpoint was trained with update_ratio={saved}, this run has {self.update_ratio}: resuming "
                "would change which batches update the generator; resume with the same update_ratio"
            )

    # -- sampling and export ------------------------------------------------------------------------------
    def sampling_schedule(self):
        """The consistency scheduler config on the generator's grid: LCMScheduler (this run's skipping grid and
        scaling, and its custom ``timesteps`` when given) or FlowMatchLCMScheduler for a flow teacher."""
        custom = {} if self.timesteps is None else {"timesteps": self.timesteps}
        return self.teacher.schedule.consistency_export(
            original_steps=self.original_steps, timestep_scaling=self.timestep_scaling, **custom
        )

    def sampler_options(self) -> dict[str, Any]:
        return {"sigma_data": self.options.sigma_data}

    def export_schedule(self):
        return self.sampling_schedule()
