"""Train a diffusion model from scratch (used to make the digits teacher)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import SchedulerMixin
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from distill.ema import EMA
from distill.methods.common import (
    balanced_labels,
    check_data_matches,
    configure,
    drop_labels,
    image_grid,
    log_image,
    null_class_of,
)
from teachers.network import call_denoiser, denoise
from teachers.parameterization import target_for
from teachers.sampling import ddim_sample_steps
from teachers.schedule import NoiseSchedule, q_sample, snr


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
        min_snr_gamma: Min-SNR loss weighting (Hang et al. 2023); None for the plain MSE on the target.
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
        sample_steps: int = 25,
        sample_guidance: float = 2.0,
        samples_per_class: int = 8,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        self.model = model
        self.schedule = NoiseSchedule.from_scheduler(noise_scheduler)
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
    def diffusion_loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        generator: torch.Generator | None = None,
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """The denoising loss on a batch: uniform t, Gaussian noise, MSE to the schedule's target."""
        batch = images.shape[0]
        t = torch.randint(
            0, self.schedule.num_train_timesteps, (batch,), device=images.device, generator=generator
        )
        eps = torch.randn(images.shape, device=images.device, generator=generator, dtype=images.dtype)
        alpha, sigma = self.schedule.alpha_sigma(t, dtype=images.dtype)
        z = q_sample(x0=images, eps=eps, alpha=alpha, sigma=sigma)
        cond = None
        if self.null_class is not None:
            cond = (
                drop_labels(labels, null_class=self.null_class, prob=self.cond_drop_prob, generator=generator)
                if self.training
                else labels
            )
        out = call_denoiser(self.model if net is None else net, z, t, cond)
        target = target_for(
            prediction_type=self.schedule.prediction_type, x0=images, eps=eps, alpha=alpha, sigma=sigma
        )
        per_sample = F.mse_loss(out.float(), target.float(), reduction="none").flatten(1).mean(1)
        if self.min_snr_gamma is not None:
            s = snr(alpha=alpha.float(), sigma=sigma.float())
            weight = s.clamp(max=self.min_snr_gamma)
            weight = (
                weight
                / {"epsilon": s, "v_prediction": s + 1, "sample": torch.ones_like(s)}[
                    self.schedule.prediction_type
                ]
            )
            per_sample = per_sample * weight
        return per_sample.mean()

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

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.samples_per_class <= 0:
            return
        n = (self.num_classes or 1) * self.samples_per_class
        labels = balanced_labels(n, self.num_classes or 1, device=self.device) if self.num_classes else None
        images = self.generate(
            n,
            labels=labels,
            steps=self.sample_steps,
            guidance_scale=self.sample_guidance,
            seed=self.eval_seed,
        )
        # columns are classes: sort so each row holds one sample of every class
        log_image(self, "samples/ema", image_grid(images, nrow=self.num_classes or 8))

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
        """``n`` samples by DDIM (trailing spacing) from the EMA (or raw) weights, with optional CFG."""
        net = self.ema.module if use_ema else self.model
        cfg = net.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        gen = torch.Generator(self.device).manual_seed(seed)
        noise = torch.randn((n, cfg.in_channels, size, size), generator=gen, device=self.device)
        uncond = None if labels is None else torch.full_like(labels, self.null_class)
        denoiser = partial(
            denoise,
            net,
            self.schedule,
            cond=labels,
            guidance_scale=guidance_scale if labels is not None else None,
            uncond=uncond,
        )
        return ddim_sample_steps(
            denoiser=denoiser, noise=noise, schedule=self.schedule, steps=steps, clip_x0=1.0
        )

    def save_pretrained(self, directory: str | Path, *, use_ema: bool = True) -> None:
        """Write ``unet/`` and ``scheduler/`` in diffusers format (the layout ``DiffusionTeacher`` loads)."""
        directory = Path(directory)
        (self.ema.module if use_ema else self.model).save_pretrained(directory / "unet")
        self.schedule.save_pretrained(directory / "scheduler")
