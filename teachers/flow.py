"""The flow-matching (rectified flow) schedule family, as pure keyword-only functions and :class:`FlowSchedule`.

Conventions follow diffusers' ``FlowMatchEulerDiscreteScheduler`` (SD3, FLUX) and the papers (Liu et al. 2022,
Esser et al. 2024): with ``s`` (sigma) in [0, 1], ``x_s = (1 - s) x0 + s eps``, so ``alpha = 1 - s`` and
``sigma = s`` in the interface the methods share, and the network predicts the velocity ``eps - x0``
(``prediction_type = "flow_prediction"``). The network's time input is ``s * num_train_timesteps`` (a float), as
the SD3 pipeline passes it; sampling grids are shifted by ``shift`` (``s' = shift s / (1 + (shift - 1) s)``) or,
with ``use_dynamic_shifting``, by ``mu`` computed from the image's token count (FLUX).

Everything is read from the teacher's scheduler config (``FlowMatchEulerDiscreteScheduler``,
``FlowMatchLCMScheduler``, or SANA's ``DPMSolverMultistepScheduler`` with ``use_flow_sigmas``), never re-typed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FLOW_SCHEDULERS = (
    "FlowMatchEulerDiscreteScheduler",
    "FlowMatchLCMScheduler",
    "FlowMatchHeunDiscreteScheduler",
)
# multistep solvers that sample a flow model when their config says use_flow_sigmas (SANA)
FLOW_SIGMA_SCHEDULERS = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler")
TIME_SHIFT_TYPES = ("exponential", "linear")
# where a sampling grid's unshifted sigmas come from: the scheduler's set_timesteps, or FluxPipeline's own sigmas
SIGMA_GRIDS = ("scheduler", "flux")
TIME_DENSITIES = ("uniform", "logit_normal")
# options of diffusers' flow schedulers this library's deterministic Euler/consistency samplers do not reproduce
_UNSUPPORTED = (
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "invert_sigmas",
    "stochastic_sampling",
)


def is_flow_config(config: Mapping[str, Any]) -> bool:
    """Whether a diffusers scheduler config describes a flow-matching schedule (a FlowMatch* class, or a multistep
    solver with ``use_flow_sigmas``, SANA's form)."""
    name = str(config.get("_class_name", ""))
    return name in FLOW_SCHEDULERS or (name in FLOW_SIGMA_SCHEDULERS and bool(config.get("use_flow_sigmas")))


def config_shift(config: Mapping[str, Any]) -> float:
    """The static shift a flow config holds: ``shift`` (FlowMatch*), or ``flow_shift`` (SANA's DPM-Solver)."""
    if str(config.get("_class_name", "")) in FLOW_SIGMA_SCHEDULERS:
        return float(config.get("flow_shift", 1.0) or 1.0)
    return float(config.get("shift", 1.0))


def check_flow_config(config: Mapping[str, Any], *, source: str | None = None) -> None:
    """Refuse a flow scheduler config this library cannot sample as diffusers does, naming ``source``, the key,
    what is allowed and the fix."""
    where = f"scheduler config {source}" if source else "scheduler config"
    fix = "fix the file, or write it again with scheduler.save_pretrained(...)"
    prediction_type = config.get("prediction_type", "flow_prediction")
    if str(config.get("_class_name", "")) in FLOW_SCHEDULERS:
        prediction_type = "flow_prediction"  # FlowMatch* schedulers take the velocity whatever the key says
    if prediction_type != "flow_prediction":
        raise ValueError(
            f"{where}: a flow-matching schedule takes prediction_type 'flow_prediction' (the velocity eps - x0), "
            f"got {prediction_type!r}; {fix}"
        )
    for key in _UNSUPPORTED:
        if config.get(key):
            raise ValueError(
                f"{where}: {key}=true is not supported: the library samples flow models on diffusers' default "
                f"(shifted linear) sigma grid with the deterministic Euler or consistency step; set {key} to false"
            )
    steps = config.get("num_train_timesteps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{where}: num_train_timesteps must be a positive integer, got {steps!r}; {fix}")
    shift = config_shift(config)
    if not math.isfinite(shift) or shift <= 0:
        key = "flow_shift" if "flow_shift" in config else "shift"
        raise ValueError(f"{where}: {key} must be a positive number, got {shift!r}; {fix}")
    kind = config.get("time_shift_type", "exponential")
    if kind not in TIME_SHIFT_TYPES:
        raise ValueError(f"{where}: time_shift_type must be one of {TIME_SHIFT_TYPES}, got {kind!r}; {fix}")
    terminal = config.get("shift_terminal")
    if terminal is not None and not 0 <= float(terminal) < 1:
        raise ValueError(f"{where}: shift_terminal must be in [0, 1), got {terminal!r}; {fix}")


def flow_q_sample(*, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x_s = (1 - s) x0 + s eps`` with a per-sample ``sigma`` (B,)."""
    s = sigma.reshape(sigma.shape + (1,) * (x0.ndim - sigma.ndim))
    return (1.0 - s) * x0 + s * eps


def shift_sigmas(*, sigmas: np.ndarray | torch.Tensor, shift: float):
    """SD3's static shift ``shift s / (1 + (shift - 1) s)`` (1: identity; > 1 spends more steps at high noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def time_shift(*, sigmas: np.ndarray | torch.Tensor, mu: float, kind: str = "exponential"):
    """FLUX's resolution-dependent shift: ``e^mu / (e^mu + (1/s - 1))`` ("exponential") or
    ``mu / (mu + (1/s - 1))`` ("linear"), diffusers' ``time_shift(mu, 1.0, s)``."""
    if kind == "exponential":
        return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    if kind == "linear":
        return mu / (mu + (1 / sigmas - 1))
    raise ValueError(f"time_shift_type must be one of {TIME_SHIFT_TYPES}, got {kind!r}")


def dynamic_shift_mu(
    *,
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """FLUX's ``mu`` for an image of ``image_seq_len`` tokens: linear from ``base_shift`` at ``base_seq_len`` to
    ``max_shift`` at ``max_seq_len`` (the pipelines' ``calculate_shift``)."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + base_shift - slope * base_seq_len


def stretch_to_terminal(*, sigmas: np.ndarray, terminal: float) -> np.ndarray:
    """Stretch a decreasing sigma grid so its last value is ``terminal`` (LTX-Video's ``shift_terminal``)."""
    one_minus = 1 - sigmas
    return 1 - one_minus / (one_minus[-1] / (1 - terminal))


def flow_train_sigmas(*, num_train_timesteps: int, shift: float, dynamic: bool) -> torch.Tensor:
    """The decreasing float32 training sigmas ``k / T`` (k = T..1) a FlowMatchEuler scheduler builds at
    construction, shifted statically unless ``dynamic``."""
    grid = torch.from_numpy(
        np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1].copy()
    )
    sigmas = grid / num_train_timesteps
    return sigmas if dynamic else shift_sigmas(sigmas=sigmas, shift=shift)


def flow_sigma_bounds(*, num_train_timesteps: int, shift: float, dynamic: bool) -> tuple[float, float]:
    """``(sigma_max, sigma_min)`` of :func:`flow_train_sigmas`, as diffusers holds them; the sampling grid spans
    these two."""
    sigmas = flow_train_sigmas(num_train_timesteps=num_train_timesteps, shift=shift, dynamic=dynamic)
    return float(sigmas[0].item()), float(sigmas[-1].item())


def flow_sigmas(
    *,
    num_inference_steps: int,
    num_train_timesteps: int = 1000,
    shift: float = 1.0,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    shift_terminal: float | None = None,
    sigma_grid: str = "scheduler",
) -> torch.Tensor:
    """The decreasing float32 sigmas of an ``num_inference_steps``-step FlowMatchEuler grid (without the final 0):
    evenly spaced network times from ``sigma_max`` to ``sigma_min`` (``sigma_grid="scheduler"``, the scheduler's own
    ``set_timesteps``) or ``linspace(1, 1/N, N)`` (``"flux"``: the sigmas ``FluxPipeline`` passes it), then shifted
    by ``shift`` or, when ``mu`` is given (dynamic shifting), by :func:`time_shift`, then stretched to
    ``shift_terminal``."""
    if not num_inference_steps >= 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if sigma_grid not in SIGMA_GRIDS:
        raise ValueError(f"sigma_grid must be one of {SIGMA_GRIDS}, got {sigma_grid!r}")
    dynamic = mu is not None
    if sigma_grid == "flux":
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
    else:
        sigma_max, sigma_min = flow_sigma_bounds(
            num_train_timesteps=num_train_timesteps, shift=shift, dynamic=dynamic
        )
        times = np.linspace(
            sigma_max * num_train_timesteps, sigma_min * num_train_timesteps, num_inference_steps
        )
        sigmas = times / num_train_timesteps
    if dynamic:
        sigmas = time_shift(sigmas=sigmas, mu=float(mu), kind=time_shift_type)
    else:
        sigmas = shift_sigmas(sigmas=sigmas, shift=shift)
    if shift_terminal:
        if num_inference_steps < 2:
            raise ValueError(
                f"shift_terminal={shift_terminal} stretches the grid so its last point is that sigma, which a "
                "1-step grid cannot do (diffusers returns NaN); sample with 2 or more steps"
            )
        sigmas = stretch_to_terminal(sigmas=sigmas, terminal=shift_terminal)
    return torch.from_numpy(np.asarray(sigmas)).to(torch.float32)


def logit_normal_sigmas(*, normal: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """SD3's logit-normal time density: ``sigmoid(mean + std n)`` for standard normal ``n``."""
    return torch.sigmoid(mean + std * normal)


def train_time_indices(
    rng: Any,
    batch: int,
    *,
    num_train_timesteps: int,
    density: str = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> torch.Tensor:
    """Indices into a schedule's ``num_train_timesteps`` training times: uniform (``rng.randint``), or
    ``floor(u T)`` for SD3's logit-normal ``u`` (:func:`logit_normal_sigmas` of ``rng.randn``)."""
    if density not in TIME_DENSITIES:
        raise ValueError(f"density must be one of {TIME_DENSITIES}, got {density!r}")
    if density == "uniform":
        return rng.randint(num_train_timesteps, batch)
    u = logit_normal_sigmas(normal=rng.randn((batch,)), mean=logit_mean, std=logit_std)
    return (u * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)


@dataclass(frozen=True)
class FlowSchedule:
    """A flow-matching schedule read from a diffusers scheduler config; the same interface as
    :class:`teachers.schedule.NoiseSchedule` (``alpha_sigma`` of network times, grids, training times, boundary
    scalings), so every method runs on it unchanged.

    ``image_seq_len`` is the token count dynamic shifting reads (FLUX's pipelines: latent pixels / patch^2); the
    teacher sets it from its network. Static shifting ignores it.
    """

    num_train_timesteps: int
    shift: float
    use_dynamic_shifting: bool
    config: Mapping[str, Any]
    image_seq_len: int | None = None
    sigma_grid: str = "scheduler"

    family = "flow"
    prediction_type = "flow_prediction"
    clip_pixels = False  # diffusers' flow schedulers never clip the x0-prediction

    @classmethod
    def from_scheduler_config(cls, config: Mapping[str, Any], *, source: str | None = None) -> FlowSchedule:
        cfg = dict(config)
        check_flow_config(cfg, source=source)
        return cls(
            num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
            shift=config_shift(cfg),
            use_dynamic_shifting=bool(cfg.get("use_dynamic_shifting", False)),
            config=cfg,
        )

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> FlowSchedule:
        return cls.from_scheduler_config(json.loads(scheduler.to_json_string()))

    @property
    def scheduler_class(self) -> str:
        return str(self.config.get("_class_name", "FlowMatchEulerDiscreteScheduler"))

    @property
    def mu(self) -> float | None:
        """Dynamic shifting's ``mu`` for :attr:`image_seq_len` from the config's base/max shift and sequence
        lengths (None with static shifting)."""
        if not self.use_dynamic_shifting:
            return None
        if self.image_seq_len is None:
            raise ValueError(
                "this flow schedule shifts dynamically (use_dynamic_shifting: true) and needs the image's token "
                "count: build it through DiffusionTeacher, or call with_image_seq_len(n)"
            )
        c = self.config
        return dynamic_shift_mu(
            image_seq_len=self.image_seq_len,
            base_seq_len=int(c.get("base_image_seq_len", 256)),
            max_seq_len=int(c.get("max_image_seq_len", 4096)),
            base_shift=float(c.get("base_shift", 0.5)),
            max_shift=float(c.get("max_shift", 1.15)),
        )

    def with_image_seq_len(self, n: int | None) -> FlowSchedule:
        return dataclasses.replace(self, image_seq_len=n)

    def with_sigma_grid(self, sigma_grid: str) -> FlowSchedule:
        """The same schedule sampling on ``sigma_grid``'s sigmas (``"flux"``: FluxPipeline's, which it passes to
        whatever scheduler the folder has)."""
        if sigma_grid not in SIGMA_GRIDS:
            raise ValueError(f"sigma_grid must be one of {SIGMA_GRIDS}, got {sigma_grid!r}")
        return dataclasses.replace(self, sigma_grid=sigma_grid)

    def with_config(self, **updates: Any) -> FlowSchedule:
        return dataclasses.replace(self, config={**self.config, **updates})

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``scheduler_config.json`` (FlowMatchEulerDiscreteScheduler when the config names no class)."""
        from teachers.schedule import write_scheduler_config

        write_scheduler_config(directory, self.config, default_class="FlowMatchEulerDiscreteScheduler")

    # -- the interface every method uses ----------------------------------------------------------------------
    def sigma_of(self, times: torch.Tensor) -> torch.Tensor:
        """Sigma of network times (``t / T``), in float64."""
        return torch.as_tensor(times).to(torch.float64) / self.num_train_timesteps

    def alpha_sigma(self, timesteps: torch.Tensor, *, dtype: torch.dtype = torch.float32):
        """``(1 - s, s)`` at network times ``t = s T``; a negative time is clean data (s = 0)."""
        s = self.sigma_of(timesteps).clamp(min=0.0)
        return (1.0 - s).to(dtype), s.to(dtype)

    def sigmas(self, num_inference_steps: int) -> torch.Tensor:
        """The decreasing sigmas of a ``num_inference_steps``-step grid, as the config's diffusers scheduler sets
        them (its shift, or dynamic shifting at :attr:`image_seq_len`)."""
        c = self.config
        return flow_sigmas(
            num_inference_steps=num_inference_steps,
            num_train_timesteps=self.num_train_timesteps,
            shift=self.shift,
            mu=self.mu,
            time_shift_type=str(c.get("time_shift_type", "exponential")),
            shift_terminal=c.get("shift_terminal"),
            sigma_grid=self.sigma_grid,
        )

    def grid(self, num_inference_steps: int, *, spacing: str | None = None) -> torch.Tensor:
        """Decreasing network times ``s T`` (float32, as diffusers computes ``timesteps``) of the sampling grid;
        ``spacing`` is a discrete-schedule option and is ignored."""
        return self.sigmas(num_inference_steps) * self.num_train_timesteps

    def next_times(self, grid: torch.Tensor) -> torch.Tensor:
        """Where each grid point steps to: the next point, and clean data (time 0) after the last."""
        return torch.cat([grid[1:], grid.new_zeros(1)])

    def end_alpha_sigma(self) -> tuple[float, float]:
        return 1.0, 0.0

    def progressive_grid(self, teacher_steps: int, *, final_steps: int) -> torch.Tensor:
        """The decreasing ``teacher_steps``-point grid a progressive-distillation round's teacher steps on: the
        ``final_steps``-step sampling grid (the one an export samples with) halved ``log2(teacher_steps /
        final_steps)`` times by inserting sigma midpoints (and one before clean data). diffusers' flow grids end
        at ``sigma_min`` and are not nested, so every round's grid is built from the final one: each round's
        student learns exactly the steps the next round's grid (and, last, the sampler) takes."""
        levels = 0
        while final_steps << levels < teacher_steps:
            levels += 1
        if final_steps << levels != teacher_steps:
            raise ValueError(
                f"teacher_steps={teacher_steps} is not final_steps={final_steps} times a power of two"
            )
        sigmas = self.sigmas(final_steps).to(torch.float64)
        for _ in range(levels):
            ends = torch.cat([sigmas, sigmas.new_zeros(1)])
            mids = (ends[:-1] + ends[1:]) / 2
            sigmas = torch.stack([sigmas, mids], dim=1).reshape(-1)
        return (sigmas * self.num_train_timesteps).to(torch.float32)

    def as_scheduler(self, class_name: str) -> FlowSchedule:
        """This schedule as a config of diffusers' flow scheduler ``class_name``, keeping the keys that class
        takes (its shift and shifting options), so stock diffusers loads it without ignored keys."""
        import inspect

        import diffusers

        params = inspect.signature(getattr(diffusers, class_name).__init__).parameters
        config = {k: v for k, v in self.config.items() if k in params}
        if "flow_shift" in self.config and "shift" in params:  # SANA's key, FlowMatch*'s name
            config["shift"] = self.shift
        return dataclasses.replace(self, config={"_class_name": class_name, **config})

    def deterministic_export(self) -> FlowSchedule:
        """The scheduler config a few-step deterministic student samples with: FlowMatchEulerDiscreteScheduler
        with this schedule's shift."""
        return self.as_scheduler("FlowMatchEulerDiscreteScheduler")

    def consistency_export(self, *, original_steps: int, timestep_scaling: float) -> FlowSchedule:
        """The scheduler config a consistency student samples with: FlowMatchLCMScheduler, same shift."""
        return self.as_scheduler("FlowMatchLCMScheduler")

    def consistency_grid(
        self, num_inference_steps: int, *, original_steps: int | None = None
    ) -> torch.Tensor:
        """Decreasing times a consistency model samples at: FlowMatchLCMScheduler's grid (the Euler grid)."""
        return self.grid(num_inference_steps)

    def train_times(
        self,
        rng: Any,
        batch: int,
        *,
        density: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
    ) -> torch.Tensor:
        """Training times as diffusers' SD3/FLUX training scripts draw them: ``u`` uniform or logit-normal, then the
        training grid's time at index ``floor(u T)`` (the config's static shift applies)."""
        index = train_time_indices(
            rng,
            batch,
            num_train_timesteps=self.num_train_timesteps,
            density=density,
            logit_mean=logit_mean,
            logit_std=logit_std,
        )
        return self.train_grid().to(index.device)[index]

    def train_grid(self) -> torch.Tensor:
        """The decreasing training times ``s_k T`` of diffusers' scheduler at construction (``k / T`` shifted by
        the static shift; unshifted when shifting is dynamic), float32."""
        sigmas = flow_train_sigmas(
            num_train_timesteps=self.num_train_timesteps, shift=self.shift, dynamic=self.use_dynamic_shifting
        )
        return sigmas * self.num_train_timesteps

    def skipping_grid(self, original_steps: int) -> torch.Tensor:
        """The increasing solver grid consistency distillation trains on: the teacher's ``original_steps``-step
        Euler grid (shifted as it samples), low noise first."""
        if original_steps < 1:
            raise ValueError(f"original_steps must be >= 1, got {original_steps}")
        return self.grid(original_steps).flip(0)

    def consistency_scalings(
        self, t: torch.Tensor, *, sigma_data: float = 0.5, timestep_scaling: float = 10.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out) = (0, 1)``: with a velocity network ``x0 = z - s v`` is already the identity at
        ``s = 0``, so the consistency function is the x0-prediction, as diffusers' FlowMatchLCMScheduler steps."""
        t = torch.as_tensor(t)
        return torch.zeros_like(t, dtype=torch.float32), torch.ones_like(t, dtype=torch.float32)
