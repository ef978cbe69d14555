"""Conversions between the three diffusion parameterisations, as pure keyword-only functions.

With ``z = alpha x0 + sigma eps`` and ``v = alpha eps - sigma x0`` (Salimans & Ho 2022) every quantity is an
affine function of the network output for fixed ``z``; ``alpha``/``sigma`` are per-sample vectors (B,) or
tensors broadcastable to ``z``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from teachers.schedule import PREDICTION_TYPES, _broadcast

# what a network may be trained to predict: the discrete family's three, and the flow velocity ``eps - x0``
ALL_PREDICTION_TYPES = (*PREDICTION_TYPES, "flow_prediction")


def _b(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return _broadcast(value, like) if value.ndim == 1 and like.ndim > 1 else value


def x0_from_eps(
    *, z: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    return (z - _b(sigma, z) * eps) / _b(alpha, z)


def eps_from_x0(
    *, z: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    return (z - _b(alpha, z) * x0) / _b(sigma, z)


def x0_from_v(*, z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return _b(alpha, z) * z - _b(sigma, z) * v


def eps_from_v(*, z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return _b(sigma, z) * z + _b(alpha, z) * v


def v_from_x0_eps(
    *, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    return _b(alpha, x0) * eps - _b(sigma, x0) * x0


def x0_from_flow(
    *, z: torch.Tensor, flow: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """x0 from the velocity ``u = eps - x0``: ``(z - sigma u) / (alpha + sigma)`` (rectified flow: ``z - s u``)."""
    return (z - _b(sigma, z) * flow) / (_b(alpha, z) + _b(sigma, z))


def eps_from_flow(
    *, z: torch.Tensor, flow: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """eps from the velocity ``u = eps - x0``: ``(z + alpha u) / (alpha + sigma)`` (rectified flow: ``z + (1 - s) u``)."""
    return (z + _b(alpha, z) * flow) / (_b(alpha, z) + _b(sigma, z))


class Prediction(NamedTuple):
    """A denoiser's answer in all parameterisations, mutually consistent for the same ``z``: x0, eps, v
    (``alpha eps - sigma x0``) and, as a property, the flow velocity ``eps - x0``."""

    x0: torch.Tensor
    eps: torch.Tensor
    v: torch.Tensor

    @property
    def flow(self) -> torch.Tensor:
        """The flow-matching velocity ``eps - x0`` (what SD3/FLUX networks output)."""
        return self.eps - self.x0


def to_prediction(
    *, output: torch.Tensor, prediction_type: str, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> Prediction:
    """Interpret a network output trained as ``prediction_type`` and derive the other two quantities.

    For ``sample`` the eps is undefined where sigma = 0; callers never evaluate networks at clean data.
    """
    if prediction_type == "epsilon":
        eps = output
        x0 = x0_from_eps(z=z, eps=eps, alpha=alpha, sigma=sigma)
        v = v_from_x0_eps(x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    elif prediction_type == "v_prediction":
        v = output
        x0 = x0_from_v(z=z, v=v, alpha=alpha, sigma=sigma)
        eps = eps_from_v(z=z, v=v, alpha=alpha, sigma=sigma)
    elif prediction_type == "sample":
        x0 = output
        eps = eps_from_x0(z=z, x0=x0, alpha=alpha, sigma=sigma)
        v = v_from_x0_eps(x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    elif prediction_type == "flow_prediction":
        x0 = x0_from_flow(z=z, flow=output, alpha=alpha, sigma=sigma)
        eps = eps_from_flow(z=z, flow=output, alpha=alpha, sigma=sigma)
        v = v_from_x0_eps(x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    else:
        raise ValueError(f"prediction_type must be one of {ALL_PREDICTION_TYPES}, got {prediction_type!r}")
    return Prediction(x0=x0, eps=eps, v=v)


def target_for(
    *, prediction_type: str, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """The regression target a network trained as ``prediction_type`` should output."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return v_from_x0_eps(x0=x0, eps=eps, alpha=alpha, sigma=sigma)
    if prediction_type == "sample":
        return x0
    if prediction_type == "flow_prediction":
        return eps - x0
    raise ValueError(f"prediction_type must be one of {ALL_PREDICTION_TYPES}, got {prediction_type!r}")


def ddim_step(
    *, x0: torch.Tensor, eps: torch.Tensor, alpha_next: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) update ``z_s = alpha_s x0 + sigma_s eps`` (Song et al. 2021, eq. 12)."""
    return _b(alpha_next, x0) * x0 + _b(sigma_next, x0) * eps


def cfg_combine(
    *, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: torch.Tensor | float
) -> torch.Tensor:
    """Classifier-free guidance ``uncond + w (cond - uncond)``; ``w`` may be a per-sample vector (B,).

    Weights sum to one, so guiding any of x0/eps/v gives the same result (the conversions are affine in the
    output for fixed z).
    """
    w = torch.as_tensor(guidance_scale, dtype=cond.dtype, device=cond.device)
    if w.ndim == 1:
        w = _broadcast(w, cond)
    return uncond + w * (cond - uncond)


def consistency_scalings(
    *, timesteps: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary-condition scalings ``(c_skip, c_out)`` of a discrete-time consistency model (LCM; diffusers'
    ``LCMScheduler.get_scalings_for_boundary_condition_discrete``): with ``s = t * timestep_scaling``,
    ``c_skip = sigma_data^2 / (s^2 + sigma_data^2)``, ``c_out = s / sqrt(s^2 + sigma_data^2)``; at ``t = 0`` the
    model is the identity, ``f(z, 0) = z``."""
    s = timesteps.to(torch.float64) * timestep_scaling
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s / (s**2 + sigma_data**2).sqrt()
    return c_skip.float(), c_out.float()


def consistency_output(
    *, z: torch.Tensor, x0: torch.Tensor, c_skip: torch.Tensor, c_out: torch.Tensor
) -> torch.Tensor:
    """The consistency function ``f(z_t, t) = c_skip(t) z_t + c_out(t) x0_pred(z_t, t)``."""
    return _b(c_skip.to(z.dtype), z) * z + _b(c_out.to(z.dtype), z) * x0


def guidance_scale_embedding(*, w: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of guidance scales (B,) for a student's ``timestep_cond`` (LCM): frequencies
    ``10000^(-i / (dim/2 - 1))`` of ``w * scale``, sines then cosines, zero-padded to an odd ``dim``. LCM and
    diffusers' pipelines embed ``guidance_scale - 1`` (the LCM form of CFG)."""
    if w.ndim != 1:
        raise ValueError(f"w must be a vector (B,), got shape {tuple(w.shape)}")
    if dim < 4:
        raise ValueError(f"dim must be >= 4, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1))
    )
    angles = (w.float() * scale)[:, None] * freqs[None, :]
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def progressive_x_target(
    *,
    z: torch.Tensor,
    z_end: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    alpha_end: torch.Tensor,
    sigma_end: torch.Tensor,
) -> torch.Tensor:
    """Progressive distillation's x-target (Salimans & Ho 2022, Alg. 2): the x0 for which ONE DDIM step from
    ``(z, t)`` lands on ``z_end`` at ``t''``, where the teacher's TWO steps landed:
    ``x~ = (z_end - (sigma_end / sigma) z) / (alpha_end - (sigma_end / sigma) alpha)``. When ``t''`` is clean data
    (``alpha_end = 1, sigma_end = 0``) this is ``z_end``, the second teacher step's x-prediction."""
    ratio = _b(sigma_end, z) / _b(sigma, z)
    return (z_end - ratio * z) / (_b(alpha_end, z) - ratio * _b(alpha, z))


def truncated_snr_weight(*, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``max(SNR, 1)`` with ``SNR = alpha^2 / sigma^2``: progressive distillation's x-space loss weight."""
    return torch.clamp(alpha.double() ** 2 / sigma.double() ** 2, min=1.0).to(alpha.dtype)
