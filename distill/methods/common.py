"""Pieces every method shares: conditioning checks, label dropout, optimizers, sample grids."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from distill.rng import GeneratorRandom, KeyedRandom
from teachers.network import num_class_embeds


def null_class_of(net: nn.Module, num_classes: int | None, *, argument: str) -> int | None:
    """Check a class-conditional network has ``num_classes`` real classes plus a null class; return the null."""
    n_embeds = num_class_embeds(net)
    if num_classes is None:
        return None if n_embeds is None else n_embeds - 1
    if n_embeds is None:
        raise ValueError(
            f"{argument} has no class embeddings but num_classes={num_classes}: set num_class_embeds="
            f"{num_classes + 1} on the network (classes + the null class for guidance) or num_classes=null"
        )
    if n_embeds != num_classes + 1:
        raise ValueError(
            f"{argument} has num_class_embeds={n_embeds}, expected num_classes + 1 = {num_classes + 1} "
            f"(the last embedding is the null class used for classifier-free guidance)"
        )
    return num_classes


def check_data_matches(net: nn.Module, datamodule, *, argument: str, teacher=None) -> None:
    """Fail before any step when the data's image size or channels differ from what the network takes.

    Pixel data for a latent teacher (``teacher.is_latent``) is compared in pixels (the network's sample size x the
    VAE's factor, 3 channels in); precomputed latents (``datamodule.is_latent``) and pixel teachers directly.
    """
    config = getattr(net, "config", None)
    if datamodule is None or config is None:
        return
    size = getattr(config, "sample_size", None)
    size = size[0] if isinstance(size, list | tuple) else size
    channels = getattr(config, "in_channels", None)
    pixels_for_latents = (
        teacher is not None and teacher.is_latent and not getattr(datamodule, "is_latent", False)
    )
    if pixels_for_latents:
        factor = teacher.vae_scale_factor
        size = None if size is None else int(size) * factor
        channels = int(teacher.vae.config.in_channels)
    data_size = getattr(datamodule, "image_size", None)
    if getattr(datamodule, "is_latent", False):
        data_size = getattr(datamodule, "latent_size", None)
    if size is not None and data_size is not None and int(size) != int(data_size):
        latent_data = getattr(datamodule, "is_latent", False)
        what = f"the latents' size {data_size}" if latent_data else f"data.image_size={data_size}"
        where = f"{argument}.sample_size={config.sample_size}" + (
            f" x the VAE's factor {teacher.vae_scale_factor} = {size} pixels" if pixels_for_latents else ""
        )
        raise ValueError(
            f"{what} but {where}: set both to the same size (e.g. --data.init_args.image_size={size})"
        )
    data_channels = getattr(datamodule, "channels", None)
    if channels is not None and data_channels is not None and int(channels) != int(data_channels):
        raise ValueError(
            f"the data has {data_channels} channel(s) but {argument}.in_channels={channels}: set "
            f"in_channels={data_channels} on the network"
        )


def drop_labels(
    labels: torch.Tensor,
    *,
    null_class: int,
    prob: float,
    generator: torch.Generator | None = None,
    rng: KeyedRandom | GeneratorRandom | None = None,
):
    """Replace each label by ``null_class`` with probability ``prob`` (classifier-free guidance training).

    The uniform draws come from ``rng`` (:mod:`distill.rng`) when given, else from ``generator``."""
    if prob <= 0:
        return labels
    if rng is not None:
        keep = rng.rand(labels.shape[0]).to(labels.device) >= prob
    else:
        keep = torch.rand(labels.shape, device=labels.device, generator=generator) >= prob
    return torch.where(keep, labels, torch.full_like(labels, null_class))


def configure(
    params: Iterable[nn.Parameter],
    optimizer: OptimizerCallable,
    lr_scheduler: LRSchedulerCallable | None,
    *,
    interval: str = "step",
):
    """``configure_optimizers``' return value for one optimizer and an optional per-step LR scheduler."""
    opt = optimizer(params)
    if lr_scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler(opt), "interval": interval}}


def balanced_labels(n: int, num_classes: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` labels cycling through the classes (0, 1, ..., C-1, 0, ...), balanced to within one."""
    return torch.arange(n, device=device) % num_classes


def image_grid(images: torch.Tensor, *, nrow: int) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> one (C, H', W') grid in [0, 1] with 1-pixel gaps."""
    from torchvision.utils import make_grid

    return make_grid(images.float().clamp(-1, 1).add(1).div(2), nrow=nrow, padding=1, pad_value=1.0)


def log_image(module, tag: str, image: torch.Tensor) -> None:
    """Log an image to TensorBoard if the module's logger is a TensorBoard logger."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in module.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image.cpu(), global_step=module.global_step)


Generate = Callable[..., torch.Tensor]


def time_cond_dim(net: nn.Module) -> int | None:
    """Width of a network's ``timestep_cond`` input (diffusers' ``time_cond_proj_dim``), or None."""
    config = getattr(net, "config", None)
    return None if config is None else getattr(config, "time_cond_proj_dim", None)


def eval_noise(teacher, n: int, *, seed: int, device) -> torch.Tensor:
    """The validation noise: ``n`` samples keyed on ``(seed, index)``, shaped like the teacher's inputs."""
    from teachers.sampling import per_sample_noise

    shape = (teacher.in_channels, teacher.sample_size, teacher.sample_size)
    return per_sample_noise(seeds=torch.full((n,), seed), indices=torch.arange(n), shape=shape, device=device)


def evaluate_generator(
    evaluator, generate: Callable, *, noise: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 500
) -> dict[str, float]:
    """FID/KID/accuracy of ``generate(labels, noise) -> images`` over ``noise`` in batches (num_samples dropped)."""
    metrics = evaluator.accumulator()
    n = noise.shape[0]
    for start in range(0, n, batch_size):
        idx = slice(start, min(start + batch_size, n))
        lab = None if labels is None else labels[idx]
        metrics.update(generate(lab, noise[idx]), lab)
    return {k: float(v) for k, v in metrics.compute().items() if k != "num_samples"}


def check_guidance(
    teacher, student: nn.Module, *, w_min: float, w_max: float, eval_guidance: float, input_needed: bool
) -> int | None:
    """Validate an LCM/Meng-form guidance range ``0 <= w_min <= w_max`` before any step; returns the width of
    the student's ``timestep_cond`` input (None if it has none). ``input_needed``: the range must reach the
    student as an input (it varies, or later rounds' teachers need it)."""
    if not 0.0 <= w_min <= w_max:
        raise ValueError(
            f"need 0 <= w_min <= w_max (LCM-form guidance: teacher CFG scale 1 + w), got w_min={w_min}, "
            f"w_max={w_max}"
        )
    embed_dim = time_cond_dim(student)
    if input_needed and embed_dim is None:
        raise ValueError(
            f"guidance w in [{w_min}, {w_max}] needs a student with a timestep_cond input: build it with "
            "time_cond_proj_dim (e.g. 64), or set w_min = w_max = 0"
        )
    if (w_max > 0 or eval_guidance > 0) and getattr(teacher, "cond_kind", None) is None:
        raise ValueError(
            "guidance (w_max or eval_guidance > 0) needs a teacher with an unconditional branch (a null class or "
            "empty-prompt embeddings); this teacher has none: set w_min = w_max = eval_guidance = 0"
        )
    return embed_dim
