"""Calling a diffusers-style denoiser with our conditioning convention.

Teachers and students share one call signature, diffusers': ``net(sample, timestep, encoder_hidden_states=...,
class_labels=..., timestep_cond=...)``. ``cond`` is an integer tensor of class labels (B,), a float tensor of
encoder hidden states (B, L, D), or SDXL's dict with ``added_cond_kwargs`` (``teachers.conditioning``); a network
without conditioning takes ``cond=None``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from teachers.conditioning import Cond, cat_cond, cond_to, denoiser_kwargs
from teachers.parameterization import Prediction, cfg_combine, guidance_scale_embedding, to_prediction
from teachers.schedule import NoiseSchedule
from teachers.transformer import call_transformer, takes_guidance, transformer_family


@functools.lru_cache(maxsize=64)
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def call_denoiser(
    net: nn.Module,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    cond: Cond = None,
    *,
    timestep_cond: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``net`` and return its output tensor (``.sample`` of a diffusers output). Text conditions are cast to
    the network's dtype (a half-precision teacher gets half-precision embeddings). SD3 and FLUX transformers get
    the inputs their pipelines give them (:mod:`teachers.transformer`); ``guidance`` is FLUX-dev's embedded
    guidance scale."""
    params = _forward_params(type(net))
    if cond is not None and (isinstance(cond, dict) or torch.is_floating_point(cond)):
        cond = cond_to(cond, dtype=sample.dtype)
    if transformer_family(net) is not None:
        if timestep_cond is not None:
            raise ValueError(f"a {type(net).__name__} has no timestep_cond input (LCM's guidance embedding)")
        return call_transformer(net, sample, timestep, cond, guidance=guidance)
    if guidance is not None:
        raise ValueError(f"a {type(net).__name__} has no guidance input; use classifier-free guidance")
    kwargs = denoiser_kwargs(cond, params)
    if timestep_cond is not None:
        kwargs["timestep_cond"] = timestep_cond
    out = net(sample, timestep, **kwargs)
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, tuple | list):
        return out[0]
    return out


def num_class_embeds(net: nn.Module) -> int | None:
    """Number of class embeddings of a diffusers UNet (null class included), or None."""
    config = getattr(net, "config", None)
    return None if config is None else getattr(config, "num_class_embeds", None)


def denoise(
    net: nn.Module,
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: Cond = None,
    *,
    guidance_scale: float | torch.Tensor | None = None,
    uncond: Cond = None,
    timestep_cond: torch.Tensor | None = None,
) -> Prediction:
    """One denoiser evaluation as a :class:`Prediction`, with classifier-free guidance in one batched forward.

    ``guidance_scale`` None or 1.0 runs the conditional branch only; otherwise ``uncond`` (the null class or
    the empty-prompt embeddings) is batched with ``cond``. The network runs in its own dtype and the math in
    ``x_t``'s. Gradients flow unless the caller disables them (teachers call this under ``no_grad``).
    """
    t = torch.as_tensor(t, device=x_t.device)
    if t.ndim == 0:
        t = t.expand(x_t.shape[0])
    alpha, sigma = schedule.alpha_sigma(t, dtype=x_t.dtype)
    net_dtype = next(net.parameters()).dtype
    guided = guidance_scale is not None and not (
        isinstance(guidance_scale, int | float) and guidance_scale == 1.0
    )
    if takes_guidance(net):  # FLUX-dev: the scale is an input, one forward (1 when no guidance is asked)
        scale = 1.0 if guidance_scale is None else guidance_scale
        out = call_denoiser(
            net,
            x_t.to(net_dtype),
            t,
            cond,
            timestep_cond=timestep_cond,
            guidance=torch.as_tensor(scale, dtype=torch.float32, device=x_t.device).expand(x_t.shape[0]),
        ).to(x_t.dtype)
        return to_prediction(
            output=out, prediction_type=schedule.prediction_type, z=x_t, alpha=alpha, sigma=sigma
        )
    if guided and transformer_family(net) == "flux":
        raise ValueError(
            f"guidance scale {guidance_scale}: this FLUX transformer has no guidance embedding "
            "(guidance_embeds: false, FLUX-schnell-style) and FLUX pipelines run no classifier-free guidance "
            "batch; set the guidance scale to 1 (or distil from a guidance-embedded FLUX-dev teacher)"
        )
    if guided:
        if cond is None or uncond is None:
            raise ValueError("classifier-free guidance needs both cond and uncond (or guidance_scale=None)")
        tc = None if timestep_cond is None else torch.cat([timestep_cond, timestep_cond])
        out = call_denoiser(
            net,
            torch.cat([x_t, x_t]).to(net_dtype),
            torch.cat([t, t]),
            cat_cond(cond, uncond),
            timestep_cond=tc,
        ).to(x_t.dtype)
        out_c, out_u = out.chunk(2)
        out = cfg_combine(cond=out_c, uncond=out_u, guidance_scale=guidance_scale)
    else:
        out = call_denoiser(net, x_t.to(net_dtype), t, cond, timestep_cond=timestep_cond).to(x_t.dtype)
    return to_prediction(
        output=out, prediction_type=schedule.prediction_type, z=x_t, alpha=alpha, sigma=sigma
    )


def time_cond_dim(net: nn.Module) -> int | None:
    """Width of a network's ``timestep_cond`` input (diffusers' ``time_cond_proj_dim``), or None."""
    config = getattr(net, "config", None)
    return None if config is None else getattr(config, "time_cond_proj_dim", None)


def is_guided(guidance_scale: float | torch.Tensor | None) -> bool:
    """Whether a classifier-free guidance scale asks for guidance (None and 1 mean off)."""
    if guidance_scale is None:
        return False
    if isinstance(guidance_scale, torch.Tensor):
        return bool((guidance_scale != 1.0).any())
    return float(guidance_scale) != 1.0


def guided_denoiser(
    net: nn.Module,
    schedule: NoiseSchedule,
    *,
    cond: Cond,
    guidance_scale: float | None,
    uncond: Callable[[Cond], Cond] | None = None,
):
    """``(z, t) -> Prediction`` of ``net`` at the classifier-free guidance scale ``guidance_scale`` (1 or None:
    off), taken the way the network takes it: a guidance-distilled network (with a ``timestep_cond`` input, as
    LCM and guided progressive students) gets LCM's ``w = scale - 1`` embedded there, one forward per step; a
    FLUX-dev transformer gets the scale itself as its ``guidance`` input; any other network runs CFG with
    ``uncond(cond)`` (the null class or empty prompt) batched beside ``cond``."""
    if isinstance(guidance_scale, int | float) and not math.isfinite(guidance_scale):
        raise ValueError(
            f"guidance_scale must be a finite number (1: no guidance), got {guidance_scale}; pass e.g. 1 or 2"
        )
    if transformer_family(net) == "flux":  # embedded guidance or none: FLUX pipelines batch no CFG
        return functools.partial(denoise, net, schedule, cond=cond, guidance_scale=guidance_scale)
    embed_dim = time_cond_dim(net)
    if embed_dim:
        return _EmbeddedGuidance(
            net, schedule, cond, float(1.0 if guidance_scale is None else guidance_scale)
        )
    if is_guided(guidance_scale) and cond is not None:
        if uncond is None:
            raise ValueError("classifier-free guidance needs the unconditional branch (uncond)")
        return functools.partial(
            denoise, net, schedule, cond=cond, guidance_scale=guidance_scale, uncond=uncond(cond)
        )
    return functools.partial(denoise, net, schedule, cond=cond)


class _EmbeddedGuidance:
    """A guidance-distilled network's denoiser: ``w = scale - 1`` through ``timestep_cond``, one forward."""

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, cond: Cond, scale: float) -> None:
        self.net, self.schedule, self.cond, self.w = net, schedule, cond, scale - 1.0
        self.dim = time_cond_dim(net)

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> Prediction:
        w = torch.full((z.shape[0],), self.w, device=z.device)
        emb = guidance_scale_embedding(w=w, dim=self.dim)
        return denoise(self.net, self.schedule, z, t, self.cond, timestep_cond=emb)
