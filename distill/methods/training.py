"""Train a diffusion model from scratch (used to make the digits teacher)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from diffusers import SchedulerMixin
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from distill.ema import EMA
from distill.methods.checks import check_data_matches, null_class_of
from distill.methods.optim import check_optimizer, configure
from distill.methods.ranges import (
    check_at_least,
    check_finite,
    check_probability,
    check_step_count,
    check_time_density,
)
from distill.objectives import denoising_loss, draw_noising
from distill.rng import GeneratorRandom
from teachers.network import guided_denoiser
from teachers.sampling import per_sample_noise
from teachers.sampling import sample as sample_loop
from teachers.schedule import schedule_from_scheduler


class DiffusionTraining(L.LightningModule):
    """Denoising diffusion training of a diffusers network, class-conditional with CFG label dropout.

    The prediction type and the noise schedule come from ``noise_scheduler`` (a diffusers scheduler, whose
    config is saved beside the network on export). The EMA copy is what validation samples from and what
    :meth:`save_pretrained` writes.

    Args:
        model: the diffusers network to train (``UNet2DModel`` / ``UNet2DConditionModel``).
        noise_scheduler: a diffusers scheduler defining betas, prediction type and timestep spacing.
        optimizer: optimizer factory over the model's parameters.
        lr_scheduler: optional LR scheduler factory, stepped every optimizer step.
        num_classes: real classes for a class-conditional model (its class embeddings are num_classes + 1,
            the last one being the null class); None for an unconditional model.
        cond_drop_prob: probability of replacing a label by the null class during training.
        ema_decay: EMA decay of the weights used for validation samples and export.
        min_snr_gamma: Min-SNR loss weighting (Hang et al. 2023) of a discrete schedule; None for the plain MSE
            on the target.
        time_density: how training times are drawn: "uniform" over the scheduler's training timesteps, or
            "logit_normal" (SD3's rectified-flow recipe: ``u = sigmoid(logit_mean + logit_std n)``, time index
            ``floor(u T)``).
        logit_mean, logit_std: the logit-normal density's parameters (SD3: 0 and 1).
        sample_steps, sample_guidance, samples_per_class: the validation sample grid (DDIM, trailing).
        eval_seed: seed of the fixed noise/timesteps of the validation loss and the sample grid.
    """

    def __init__(
        self,
        model: nn.Module,
        noise_scheduler: SchedulerMixin,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_classes: int | None = 10,
        cond_drop_prob: float = 0.1,
        ema_decay: float = 0.999,
        min_snr_gamma: float | None = None,
        time_density: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        sample_steps: int = 25,
        sample_guidance: float = 2.0,
        samples_per_class: int = 8,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        check_probability(cond_drop_prob, key="cond_drop_prob", example=0.1, open_above=True)
        check_probability(ema_decay, key="ema_decay", example=0.999, open_above=True)
        check_finite({"min_snr_gamma": min_snr_gamma, "sample_guidance": sample_guidance})
        check_at_least(samples_per_class, key="samples_per_class", minimum=0)
        check_optimizer(optimizer)
        self.model = model
        self.schedule = schedule_from_scheduler(noise_scheduler)
        check_time_density(time_density, logit_mean=logit_mean, logit_std=logit_std)
        if min_snr_gamma is not None and self.schedule.family == "flow":
            raise ValueError(
                "min_snr_gamma: Min-SNR weighting is defined for the discrete family's epsilon/v/sample targets; "
                "a flow-matching scheduler trains on the velocity (use time_density: logit_normal, as SD3); "
                "remove min_snr_gamma"
            )
        self.time_density, self.logit_mean, self.logit_std = time_density, logit_mean, logit_std
        check_step_count(sample_steps, key="sample_steps", max_steps=self.schedule.num_train_timesteps)
        self.null_class = null_class_of(model, num_classes, argument="model")
        self.num_classes = num_classes if self.null_class is not None else None
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.cond_drop_prob = cond_drop_prob
        self.ema = EMA(model, decay=ema_decay)
        self.min_snr_gamma = min_snr_gamma
        self.sample_steps = sample_steps
        self.sample_guidance = sample_guidance
        self.samples_per_class = samples_per_class
        self.eval_seed = eval_seed
        # The EMA copy is updated by hand, never synchronised by DDP.
        self._ddp_params_and_buffers_to_ignore = [f"ema.{k}" for k in self.ema.state_dict()]

    def setup(self, stage: str) -> None:
        check_data_matches(self.model, getattr(self.trainer, "datamodule", None), argument="model")

    # -- training -----------------------------------------------------------------------------------------
    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """The null class for every label (the unconditional branch of classifier-free guidance)."""
        return torch.full_like(cond, self.null_class)

    def diffusion_loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        generator: torch.Generator | None = None,
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """The denoising loss (:func:`distill.objectives.denoising_loss`) on a batch: uniform t, Gaussian noise,
        label dropout while training, draws from ``generator`` (the global RNG when None)."""
        cond = labels if self.null_class is not None else None
        draws = draw_noising(
            GeneratorRandom(generator, device=images.device),
            x0=images,
            schedule=self.schedule,
            cond=cond,
            cond_drop_prob=self.cond_drop_prob if self.training else 0.0,
            density=self.time_density,
            logit_mean=self.logit_mean,
            logit_std=self.logit_std,
        )
        return denoising_loss(
            net=self.model if net is None else net,
            schedule=self.schedule,
            x0=images,
            cond=cond,
            draws=draws,
            null_cond=self.null_cond,
            min_snr_gamma=self.min_snr_gamma,
        )["loss"]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self.diffusion_loss(images, labels if self.null_class is not None else None)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimizer step, then the EMA update: before callbacks' batch-end hooks, so a checkpoint holds the
        EMA of exactly the weights it holds (see ``DistillationModule.optimizer_step``)."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.model)

    def configure_optimizers(self):
        return configure(self.model.parameters(), self.optimizer, self.lr_scheduler)

    # -- evaluation ---------------------------------------------------------------------------------------
    def _eval_generator(self, batch_idx: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(self.eval_seed * 100_003 + batch_idx)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        gen = self._eval_generator(batch_idx)
        cond_labels = labels if self.null_class is not None else None
        with torch.no_grad():
            loss = self.diffusion_loss(images, cond_labels, generator=gen)
            ema_loss = self.diffusion_loss(
                images, cond_labels, generator=self._eval_generator(batch_idx), net=self.ema.module
            )
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/loss_ema", ema_loss)

    def test_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        with torch.no_grad():
            loss = self.diffusion_loss(
                images,
                labels if self.null_class is not None else None,
                generator=self._eval_generator(batch_idx),
            )
        self.log("test/loss", loss)

    # -- the sampling contract and evaluation ---------------------------------------------------------------
    @property
    def cond_kind(self) -> str | None:
        return "class" if self.null_class is not None else None

    @property
    def in_channels(self) -> int:
        return int(self.model.config.in_channels)

    @property
    def sample_size(self) -> int:
        size = self.model.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def eval_steps(self) -> list[int]:
        return [self.sample_steps]

    @property
    def eval_guidance_scale(self) -> float:
        return self.sample_guidance

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor | None,
        noise: torch.Tensor,
        *,
        steps: int = 25,
        guidance_scale: float | None = 1.0,
        use_ema: bool = True,
        **_: object,
    ) -> torch.Tensor:
        """Samples by DDIM (trailing spacing; Euler on the shifted grid for a flow schedule) from the EMA (or raw)
        weights at the CFG scale ``guidance_scale``."""
        net = self.ema.module if use_ema else self.model
        denoiser = guided_denoiser(
            net, self.schedule, cond=cond, guidance_scale=guidance_scale, uncond=self.null_cond
        )
        return sample_loop(
            denoiser=denoiser,
            schedule=self.schedule,
            noise=noise,
            steps=steps,
            sampler="ddim",
            clip_x0=1.0 if self.schedule.clip_pixels else None,
        )

    def configure_callbacks(self) -> list[L.Callback]:
        """The validation sample grid (:class:`distill.validation.SampleGrid`, EMA weights)."""
        from distill.validation import SampleGrid

        if self.samples_per_class <= 0:
            return []
        return [SampleGrid(samples_per_class=self.samples_per_class, teacher_steps=None, seed=self.eval_seed)]

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        steps: int = 25,
        guidance_scale: float | None = None,
        seed: int = 0,
        use_ema: bool = True,
    ) -> torch.Tensor:
        """``n`` samples from noise keyed on ``(seed, index)``, by :meth:`sample`."""
        shape = (self.in_channels, self.sample_size, self.sample_size)
        noise = per_sample_noise(
            seeds=torch.full((n,), seed), indices=torch.arange(n), shape=shape, device=self.device
        )
        return self.sample(labels, noise, steps=steps, guidance_scale=guidance_scale, use_ema=use_ema)

    def save_pretrained(self, directory: str | Path, *, use_ema: bool = True) -> None:
        """Write ``unet/`` and ``scheduler/`` in diffusers format (the layout ``DiffusionTeacher`` loads)."""
        directory = Path(directory)
        (self.ema.module if use_ema else self.model).save_pretrained(directory / "unet")
        self.schedule.save_pretrained(directory / "scheduler")
