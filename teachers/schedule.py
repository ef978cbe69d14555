"""Noise-schedule math for discrete-time (DDPM-style) diffusion, as pure keyword-only functions.

Conventions follow the papers and diffusers: ``abar_t = alphas_cumprod[t]``, ``alpha_t = sqrt(abar_t)``,
``sigma_t = sqrt(1 - abar_t)``, ``z_t = alpha_t * x0 + sigma_t * eps`` and ``SNR_t = alpha_t^2 / sigma_t^2``.

The schedule always comes from a diffusers scheduler config (the teacher's ``scheduler_config.json``), never
re-typed: :class:`NoiseSchedule` reads ``alphas_cumprod`` from the scheduler that config builds.

A negative timestep stands for "after the last step" (clean data) and maps to ``final_alphas_cumprod``
(1.0, as DDIM's ``set_alpha_to_one=True``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

Spacing = Literal["leading", "trailing", "linspace"]
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")
# the scheduler-config key of the custom times a consistency / DMD2 student was trained to sample at (e.g. [999, 299]):
# diffusers keeps a key that begins with "_" in a loaded scheduler's config (and saves it again) without passing it
# to the constructor, so a stock pipeline samples at them when given ``timesteps=scheduler.config[KEY]``; this
# package's samplers read them from the config
TRAINED_TIMESTEPS_KEY = "_trained_timesteps"
# the beta schedules diffusers' discrete schedulers compute (unless the config gives trained_betas)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")
# diffusers' discrete-time schedulers: all share DDPM's alphas_cumprod, so a teacher saved with any of them loads
DISCRETE_SCHEDULERS = frozenset(
    {
        "DDPMScheduler",
        "DDIMScheduler",
        "LCMScheduler",
        "TCDScheduler",
        "PNDMScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "HeunDiscreteScheduler",
        "LMSDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "DPMSolverSDEScheduler",
        "UniPCMultistepScheduler",
        "DEISMultistepScheduler",
        "DDPMParallelScheduler",
        "DDIMParallelScheduler",
    }
)


def check_scheduler_config(config: Mapping[str, Any], *, source: str | None = None) -> None:
    """Refuse a scheduler config this library cannot build a schedule from, naming ``source`` (its file), the
    key, the allowed values and the fix, before diffusers fails on it without saying where."""
    where = f"scheduler config {source}" if source else "scheduler config"
    fix = "fix the file, or write it again with scheduler.save_pretrained(...)"
    from teachers.flow import is_flow_config

    if is_flow_config(config):
        raise ValueError(
            f"{where} describes a flow-matching schedule ({config.get('_class_name')}), not a discrete one: build "
            "it with teachers.schedule.schedule_from_config (or teachers.flow.FlowSchedule)"
        )
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"{where}: prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}; {fix}"
        )
    if config.get("trained_betas") is None:
        beta_schedule = config.get("beta_schedule", "linear")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"{where}: beta_schedule must be one of {BETA_SCHEDULES} (or give trained_betas), got "
                f"{beta_schedule!r}; {fix}"
            )
    steps = config.get("num_train_timesteps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{where}: num_train_timesteps must be a positive integer, got {steps!r}; {fix}")
    for key in ("beta_start", "beta_end"):
        value = config.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 < value < 1
        ):
            raise ValueError(f"{where}: {key} must be a number in (0, 1), got {value!r}; {fix}")


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector (B,) so it broadcasts against ``like`` (B, ...)."""
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def abar_at(
    *, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, final_alphas_cumprod: float = 1.0
) -> torch.Tensor:
    """``alphas_cumprod[t]`` for integer timesteps; negative ``t`` gives ``final_alphas_cumprod``."""
    t = torch.as_tensor(timesteps, device=alphas_cumprod.device).long()
    gathered = alphas_cumprod[t.clamp(min=0)]
    return torch.where(t < 0, torch.full_like(gathered, final_alphas_cumprod), gathered)


def alpha_sigma(
    *, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, final_alphas_cumprod: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t) = (sqrt(abar_t), sqrt(1 - abar_t))`` gathered at ``timesteps``."""
    abar = abar_at(
        alphas_cumprod=alphas_cumprod, timesteps=timesteps, final_alphas_cumprod=final_alphas_cumprod
    )
    return abar.sqrt(), (1.0 - abar).clamp(min=0.0).sqrt()


def snr(*, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``alpha^2 / sigma^2`` (inf where sigma is 0)."""
    return alpha.square() / sigma.square()


def log_snr(*, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``log(alpha^2 / sigma^2)``."""
    return 2.0 * (alpha.log() - sigma.log())


def q_sample(
    *, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Forward process ``z_t = alpha_t x0 + sigma_t eps`` (per-sample ``alpha``/``sigma`` of shape (B,))."""
    return _broadcast(alpha, x0) * x0 + _broadcast(sigma, x0) * eps


def timestep_grid(
    *, num_inference_steps: int, num_train_timesteps: int, spacing: Spacing, steps_offset: int = 0
) -> torch.Tensor:
    """Decreasing integer timesteps for an ``num_inference_steps``-step sampler, as diffusers' DDIM spaces them.

    ``trailing`` starts at ``T - 1`` (a 1-step sampler starts from pure noise); ``leading`` and ``linspace``
    start lower, and ``leading`` with one step samples at ``t = 0``, which is why few-step grids use trailing.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps must be in [1, {num_train_timesteps}] (num_train_timesteps), "
            f"got {num_inference_steps}"
        )
    n, big_t = num_inference_steps, num_train_timesteps
    if spacing == "linspace":
        grid = np.linspace(0, big_t - 1, n).round()[::-1].copy().astype(np.int64)
    elif spacing == "leading":
        ratio = big_t // n
        grid = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64) + steps_offset
    else:
        ratio = big_t / n
        grid = np.round(np.arange(big_t, 0, -ratio)).astype(np.int64) - 1
    return torch.from_numpy(grid)


def previous_timesteps(*, timesteps: torch.Tensor) -> torch.Tensor:
    """The step each grid point moves to: the next grid point, and ``-1`` (clean data) after the last."""
    return torch.cat([timesteps[1:], timesteps.new_tensor([-1])])


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete noise schedule read from a diffusers scheduler config.

    Holds what the math needs (``alphas_cumprod``, the prediction type, the train-time step count and the
    default spacing for few-step grids) and the original config, so exports can write a matching scheduler.
    """

    alphas_cumprod: torch.Tensor
    prediction_type: str
    num_train_timesteps: int
    timestep_spacing: str
    steps_offset: int
    config: Mapping[str, Any]

    family = "vp"
    clip_pixels = True  # a pixel-space sampler clamps the x0-prediction to [-1, 1] (diffusers' clip_sample)

    @classmethod
    def from_scheduler_config(cls, config: Mapping[str, Any], *, source: str | None = None) -> NoiseSchedule:
        """Build from a diffusers scheduler config (any of DDPM/DDIM/LCM/Euler's ``scheduler_config.json``);
        errors name ``source`` (the file it was read from) when given."""
        from diffusers import DDPMScheduler

        cfg = dict(config)
        check_scheduler_config(cfg, source=source)
        prediction_type = cfg.get("prediction_type", "epsilon")
        # DDPMScheduler computes betas -> alphas_cumprod exactly as every diffusers discrete scheduler does,
        # including rescale_betas_zero_snr and trained_betas.
        keys = (
            "num_train_timesteps",
            "beta_start",
            "beta_end",
            "beta_schedule",
            "trained_betas",
            "rescale_betas_zero_snr",
        )
        ddpm = DDPMScheduler(**{k: cfg[k] for k in keys if k in cfg and cfg[k] is not None})
        spacing = cfg.get("timestep_spacing", "leading")
        if spacing not in SPACINGS:
            spacing = "trailing"
        return cls(
            alphas_cumprod=ddpm.alphas_cumprod.to(torch.float64).clone(),
            prediction_type=prediction_type,
            num_train_timesteps=int(ddpm.config.num_train_timesteps),
            timestep_spacing=spacing,
            steps_offset=int(cfg.get("steps_offset", 0)),
            config=cfg,
        )

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> NoiseSchedule:
        """Build from a diffusers scheduler instance (its saved config keeps ``_class_name``)."""
        import json

        return cls.from_scheduler_config(json.loads(scheduler.to_json_string()))

    @property
    def final_alphas_cumprod(self) -> float:
        """``alphas_cumprod`` after a sampler's last step, as DDIM's ``set_alpha_to_one`` says: 1.0 (clean data)
        when true or absent (diffusers' default), else ``alphas_cumprod[0]`` (SD-1.x's configs set it false)."""
        if self.config.get("set_alpha_to_one", True) in (False, "false"):
            return float(self.alphas_cumprod[0])
        return 1.0

    @property
    def scheduler_class(self) -> str:
        """The diffusers scheduler class the config names (DDPMScheduler when it names none)."""
        return str(self.config.get("_class_name", "DDPMScheduler"))

    def with_config(self, **updates: Any) -> NoiseSchedule:
        """The same schedule with config entries changed (e.g. ``_class_name="LCMScheduler"`` for an export)."""
        return dataclasses.replace(self, config={**self.config, **updates})

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``scheduler_config.json`` (diffusers' layout; DDPMScheduler when the config names no class)."""
        write_scheduler_config(directory, self.config, default_class="DDPMScheduler")

    def alpha_sigma(self, timesteps: torch.Tensor, *, dtype: torch.dtype = torch.float32):
        """``(alpha_t, sigma_t)`` on ``timesteps``' device, computed in float64 then cast."""
        t = torch.as_tensor(timesteps)
        alpha, sigma = alpha_sigma(alphas_cumprod=self.alphas_cumprod.to(t.device), timesteps=t)
        return alpha.to(dtype), sigma.to(dtype)

    def train_times(
        self,
        rng: Any,
        batch: int,
        *,
        density: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
    ) -> torch.Tensor:
        """Training times of ``batch`` samples in the network's own time input (integer timesteps), drawn from
        ``rng`` (``distill.rng``'s interface): uniform over ``[0, num_train_timesteps)``, or ``floor(u T)`` for a
        logit-normal ``u`` (SD3's density, offered for both families)."""
        from teachers.flow import train_time_indices

        return train_time_indices(
            rng,
            batch,
            num_train_timesteps=self.num_train_timesteps,
            density=density,
            logit_mean=logit_mean,
            logit_std=logit_std,
        )

    def skipping_grid(self, original_steps: int) -> torch.Tensor:
        """The increasing solver grid consistency distillation trains on (LCM's skipping-step grid); refuses an
        ``original_steps`` that does not divide ``num_train_timesteps`` (the skipping interval must be whole)."""
        if 1 <= original_steps <= self.num_train_timesteps and self.num_train_timesteps % original_steps:
            raise ValueError(
                f"original_steps={original_steps} does not divide the teacher's {self.num_train_timesteps} "
                f"timesteps, so the skipping interval k is not whole; pick a divisor (e.g. 50 for 1000)"
            )
        return lcm_skipping_timesteps(
            num_train_timesteps=self.num_train_timesteps, original_steps=original_steps
        )

    def progressive_grid(self, teacher_steps: int, *, final_steps: int) -> torch.Tensor:
        """The decreasing ``teacher_steps``-point grid a progressive-distillation round's teacher steps on: the
        trailing grid, which is nested (halving it keeps every other point), so the final student samples on the
        stock trailing grid of its step count."""
        return self.grid(teacher_steps, spacing="trailing")

    def deterministic_export(self) -> NoiseSchedule:
        """The scheduler config a few-step deterministic student samples with: DDIM on trailing spacing."""
        return self.with_config(
            _class_name="DDIMScheduler", timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False
        )

    def consistency_export(
        self, *, original_steps: int, timestep_scaling: float, timesteps: Sequence[int] | None = None
    ) -> NoiseSchedule:
        """The scheduler config a consistency student samples with: LCMScheduler on this run's skipping grid.
        ``timesteps``: the custom times the student was trained at (on that grid), kept under
        :data:`TRAINED_TIMESTEPS_KEY`, which :meth:`consistency_grid` samples at for that many steps."""
        updates: dict[str, Any] = {}
        if timesteps is not None:
            grid = check_consistency_timesteps(
                timesteps=timesteps,
                num_train_timesteps=self.num_train_timesteps,
                original_steps=original_steps,
            )
            updates[TRAINED_TIMESTEPS_KEY] = [int(t) for t in grid]
        config = {k: v for k, v in self.config.items() if k != TRAINED_TIMESTEPS_KEY}
        return dataclasses.replace(
            self,
            config={
                **config,
                "_class_name": "LCMScheduler",
                "original_inference_steps": original_steps,
                "timestep_scaling": timestep_scaling,
                "timestep_spacing": "leading",
                "clip_sample": False,
                **updates,
            },
        )

    def next_times(self, grid: torch.Tensor) -> torch.Tensor:
        """Where each grid point steps to: the next point, and ``-1`` (clean data) after the last."""
        return previous_timesteps(timesteps=grid)

    def end_alpha_sigma(self) -> tuple[float, float]:
        """``(alpha, sigma)`` after a sampler's last step (:attr:`final_alphas_cumprod`)."""
        abar = self.final_alphas_cumprod
        return math.sqrt(abar), math.sqrt(max(0.0, 1.0 - abar))

    def consistency_grid(
        self, num_inference_steps: int, *, original_steps: int | None = None
    ) -> torch.Tensor:
        """Decreasing timesteps a consistency model samples at (LCMScheduler's, from the skipping grid of
        ``original_steps``, default the config's ``original_inference_steps`` or 50). Without ``original_steps``, a
        config that records the times its student was trained at (:data:`TRAINED_TIMESTEPS_KEY`) gives those for
        their step count, as a pipeline passes them (``pipe(..., timesteps=[999, 299])``)."""
        if original_steps is None:
            trained = self.config.get(TRAINED_TIMESTEPS_KEY)
            if trained is not None and len(trained) == num_inference_steps:
                return torch.tensor([int(t) for t in trained], dtype=torch.long)
            original_steps = int(self.config.get("original_inference_steps", 50))
        return lcm_timesteps(
            num_train_timesteps=self.num_train_timesteps,
            num_inference_steps=num_inference_steps,
            original_steps=original_steps,
        )

    def consistency_scalings(
        self, t: torch.Tensor, *, sigma_data: float, timestep_scaling: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary scalings ``(c_skip, c_out)`` of a consistency model at network times ``t`` (identity at 0)."""
        from teachers.parameterization import consistency_scalings

        return consistency_scalings(timesteps=t, sigma_data=sigma_data, timestep_scaling=timestep_scaling)

    def grid(self, num_inference_steps: int, *, spacing: str | None = None) -> torch.Tensor:
        """Sampling timesteps with this schedule's (or the given) spacing."""
        return timestep_grid(
            num_inference_steps=num_inference_steps,
            num_train_timesteps=self.num_train_timesteps,
            spacing=spacing or self.timestep_spacing,  # type: ignore[arg-type]
            steps_offset=self.steps_offset,
        )


def write_scheduler_config(directory: str | Path, config: Mapping[str, Any], *, default_class: str) -> None:
    """Write ``directory/scheduler_config.json`` in diffusers' layout (``default_class`` when the config names
    none; diffusers' bookkeeping key ``_use_default_values`` dropped)."""
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    body = {"_class_name": default_class, **{k: v for k, v in config.items() if k != "_use_default_values"}}
    (directory / "scheduler_config.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def schedule_from_config(config: Mapping[str, Any], *, source: str | None = None):
    """The schedule a diffusers scheduler config describes: :class:`teachers.flow.FlowSchedule` for a
    flow-matching config (FlowMatch* classes, or ``use_flow_sigmas``), else the discrete :class:`NoiseSchedule`.
    Refuses a scheduler class neither family knows, naming ``source``."""
    from teachers.flow import FLOW_SCHEDULERS, FlowSchedule, is_flow_config

    name = config.get("_class_name")
    if is_flow_config(config):
        return FlowSchedule.from_scheduler_config(config, source=source)
    if name is not None and name not in DISCRETE_SCHEDULERS:
        where = f"scheduler config {source}" if source else "scheduler config"
        raise ValueError(
            f"{where}: scheduler class {name!r} is not one this library samples; discrete (DDPM-family) classes: "
            f"{sorted(DISCRETE_SCHEDULERS)}; flow-matching classes: {sorted(FLOW_SCHEDULERS)} (or a multistep "
            "solver with use_flow_sigmas: true). Save the teacher's training scheduler with "
            "scheduler.save_pretrained(...)"
        )
    if config.get("prediction_type") == "flow_prediction":
        where = f"scheduler config {source}" if source else "scheduler config"
        raise ValueError(
            f"{where}: prediction_type 'flow_prediction' needs a flow-matching schedule, but {name or 'the config'} "
            "is a discrete (DDPM-family) scheduler; use FlowMatchEulerDiscreteScheduler, or set use_flow_sigmas: "
            "true on a multistep solver (SANA's form)"
        )
    return NoiseSchedule.from_scheduler_config(config, source=source)


def schedule_from_scheduler(scheduler: Any):
    """:func:`schedule_from_config` of a diffusers scheduler instance."""
    import json

    return schedule_from_config(json.loads(scheduler.to_json_string()))


def lcm_skipping_timesteps(*, num_train_timesteps: int, original_steps: int) -> torch.Tensor:
    """The skipping-step grid consistency distillation trains on (LCM): ``k = T // original_steps``, timesteps
    ``k - 1, 2k - 1, ..., original_steps * k - 1`` in increasing order (diffusers' LCMScheduler and LCM script)."""
    if not 1 <= original_steps <= num_train_timesteps:
        raise ValueError(
            f"original_steps must be in [1, {num_train_timesteps}] (num_train_timesteps), got {original_steps}"
        )
    k = num_train_timesteps // original_steps
    return torch.arange(1, original_steps + 1, dtype=torch.long) * k - 1


def check_consistency_timesteps(
    *, timesteps: Sequence[int], num_train_timesteps: int, original_steps: int, key: str = "timesteps"
) -> torch.Tensor:
    """``timesteps`` as a decreasing long tensor, refused (naming ``key``) unless they are distinct points of the
    ``original_steps`` skipping grid in decreasing order: the custom times diffusers' LCMScheduler accepts
    (``set_timesteps(timesteps=...)``), e.g. ``[999, 299]`` on the grid of 50 over 1000 (``19, 39, ..., 999``)."""
    if isinstance(timesteps, str | bytes) or not isinstance(timesteps, Sequence) or not timesteps:
        raise ValueError(
            f"{key} must be a non-empty list of whole timesteps, e.g. [999, 299]; got {timesteps!r}"
        )
    if any(isinstance(t, bool) or not isinstance(t, int | np.integer) for t in timesteps):
        raise ValueError(f"{key} must be whole numbers (training timesteps), got {list(timesteps)!r}")
    values = [int(t) for t in timesteps]
    if any(a <= b for a, b in itertools.pairwise(values)):
        raise ValueError(
            f"{key} must be strictly decreasing (the first step at the highest noise), got {values}"
        )
    grid = set(
        lcm_skipping_timesteps(
            num_train_timesteps=num_train_timesteps, original_steps=original_steps
        ).tolist()
    )
    off = [t for t in values if t not in grid]
    if off:
        k = num_train_timesteps // original_steps
        raise ValueError(
            f"{key}: {off} not on the consistency grid of original_steps={original_steps} ({k - 1}, {2 * k - 1}, ..., "
            f"{original_steps * k - 1}), which diffusers' LCMScheduler requires of custom timesteps; pick points of "
            "that grid or change original_steps"
        )
    return torch.tensor(values, dtype=torch.long)


def lcm_timesteps(
    *, num_train_timesteps: int, num_inference_steps: int, original_steps: int = 50
) -> torch.Tensor:
    """Decreasing sampling timesteps of a consistency model, as diffusers' LCMScheduler picks them: evenly spaced
    indices into the reversed skipping grid (1 step: ``[T - 1]``; 4 of 50 over 1000: ``[999, 759, 499, 259]``)."""
    if not 1 <= num_inference_steps <= original_steps:
        raise ValueError(
            f"num_inference_steps must be in [1, {original_steps}] (original_steps), got {num_inference_steps}"
        )
    grid = lcm_skipping_timesteps(num_train_timesteps=num_train_timesteps, original_steps=original_steps)
    grid = grid.flip(0)
    index = np.floor(np.linspace(0, len(grid), num=num_inference_steps, endpoint=False)).astype(np.int64)
    return grid[torch.from_numpy(index)]
