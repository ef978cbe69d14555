"""`distill test` for generators: the evaluation protocol over several step counts, mean ± std over seeds."""

from __future__ import annotations

import json
from collections import defaultdict
from functools import partial
from pathlib import Path

import lightning as L
import torch

from distill.metrics import DigitsEvaluator, SampleMetrics, format_table, self_fid, summarize
from distill.parameterization import guidance_scale_embedding
from distill.sampling import consistency_sample, ddim_sample_steps, per_sample_noise
from distill.schedule import lcm_timesteps
from teachers.network import denoise
from teachers.teacher import DiffusionTeacher


class GenerativeEvaluation(L.LightningModule):
    """Evaluate a frozen denoiser (a teacher, or an exported student loaded as one) with DDIM at several step
    counts, trailing spacing, and print the protocol's table.

    Args:
        model: the denoiser adapter (``DiffusionTeacher.from_pretrained(...)``).
        evaluator: the digits evaluator with its references.
        steps: DDIM step counts to evaluate (trailing spacing).
        guidance_scale: classifier-free guidance scale (None or 1: no guidance).
        name: the row label in the table.
        output: JSON file for the results (default: ``<log_dir>/eval.json``).
        clip_x0: clamp x0-predictions while sampling.
        sampler: "ddim", "consistency" (multistep, LCM timesteps) or "auto" (consistency when the folder's
            scheduler is an LCMScheduler). A network with ``time_cond_proj_dim`` takes the guidance scale as
            ``timestep_cond`` (``w = scale - 1``, as diffusers' LCM pipeline) instead of running CFG.
    """

    def __init__(
        self,
        model: DiffusionTeacher,
        evaluator: DigitsEvaluator,
        steps: list[int] | None = None,
        guidance_scale: float | None = 2.0,
        name: str = "teacher",
        output: str | None = None,
        clip_x0: float | None = 1.0,
        sampler: str = "auto",
    ) -> None:
        super().__init__()
        self.model = model
        self.evaluator = evaluator
        self.steps = [50, 8, 4, 2, 1] if steps is None else list(steps)
        self.guidance_scale = guidance_scale
        self.name = name
        self.output = output
        self.clip_x0 = clip_x0
        if sampler not in ("auto", "ddim", "consistency"):
            raise ValueError(f"sampler must be 'auto', 'ddim' or 'consistency', got {sampler!r}")
        self.sampler = sampler
        self._metrics: dict[tuple[int, int], SampleMetrics] = {}
        self.results: dict | None = None

    def on_test_start(self) -> None:
        self.evaluator.to(self.device)
        self._metrics = {}

    @property
    def resolved_sampler(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "consistency" if self.model.schedule.scheduler_class == "LCMScheduler" else "ddim"

    @torch.no_grad()
    def generate(
        self, seeds: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor, steps: int
    ) -> torch.Tensor:
        shape = (self.model.in_channels, self.model.sample_size, self.model.sample_size)
        noise = per_sample_noise(seeds=seeds, indices=indices, shape=shape, device=self.device)
        cond = labels if (labels >= 0).all() else None
        schedule = self.model.schedule
        embed_dim = getattr(getattr(self.model.unet, "config", None), "time_cond_proj_dim", None)
        if embed_dim:  # guidance-distilled: the scale goes in as timestep_cond (w = scale - 1), one forward
            w = torch.full((noise.shape[0],), float(self.guidance_scale or 1.0) - 1.0, device=self.device)
            denoiser = partial(
                denoise,
                self.model.unet,
                schedule,
                cond=cond,
                timestep_cond=guidance_scale_embedding(w=w, dim=embed_dim),
            )
        else:
            denoiser = partial(
                self.model.predict,
                cond=cond,
                guidance_scale=self.guidance_scale if cond is not None else None,
            )
        if self.resolved_sampler == "consistency":
            timesteps = lcm_timesteps(
                num_train_timesteps=schedule.num_train_timesteps,
                num_inference_steps=steps,
                original_steps=int(schedule.config.get("original_inference_steps", 50)),
            )
            return consistency_sample(
                denoiser=denoiser,
                noise=noise,
                timesteps=timesteps.to(self.device),
                alphas_cumprod=schedule.alphas_cumprod,
                # re-noising between steps, per sample: independent of batch size and process count
                step_noise=lambda i: per_sample_noise(
                    seeds=seeds + 7919 * (i + 1), indices=indices, shape=shape, device=self.device
                ),
                timestep_scaling=float(schedule.config.get("timestep_scaling", 10.0)),
                clip_x0=self.clip_x0,
            )
        return ddim_sample_steps(
            denoiser=denoiser, noise=noise, schedule=schedule, steps=steps, clip_x0=self.clip_x0
        )

    def test_step(self, batch, batch_idx: int) -> None:
        seeds, indices, labels = batch
        for steps in self.steps:
            images = self.generate(seeds, indices, labels, steps)
            for s in seeds.unique().tolist():
                mask = seeds == s
                key = (steps, int(s))
                if key not in self._metrics:
                    self._metrics[key] = self.evaluator.accumulator()
                self._metrics[key].update(images[mask], labels[mask] if (labels >= 0).all() else None)

    def on_test_epoch_end(self) -> None:
        by_steps = defaultdict(list)
        n_real = self.evaluator.real_features.shape[0]
        for (steps, seed), metric in sorted(self._metrics.items()):
            result = {"seed": seed, **metric.compute()}
            # the same generator with the next seed: FID against a set of the reference's and the real set's size
            seeds = sorted(s for (st, s) in self._metrics if st == steps)
            if len(seeds) > 1:
                other = self._metrics[(steps, seeds[(seeds.index(seed) + 1) % len(seeds)])]
                mine, theirs = torch.cat(metric.features), torch.cat(other.features)
                result["fid_self"] = self_fid(mine, theirs, self.evaluator.feature_net)
                result["fid_self_real_size"] = self_fid(mine, theirs[:n_real], self.evaluator.feature_net)
            by_steps[steps].append(result)
        rows = []
        for steps in self.steps:
            summary = summarize(by_steps[steps])
            rows.append(
                {
                    "name": self.name,
                    "steps": steps,
                    "guidance": self.guidance_scale,
                    "summary": summary,
                    "per_seed": by_steps[steps],
                }
            )
            for key, value in summary.items():
                self.log(f"test/{steps}steps/{key}", value["mean"])
        floors = self.evaluator.floors
        table = format_table(rows, floors)
        if self.trainer.is_global_zero:  # once, on stdout, whatever the logging setup
            print("\n" + table + "\n", flush=True)
        self.results = {
            "rows": rows,
            "noise_floor": floors,
            "table": table,
            "real_heldout_accuracy": self.evaluator.real_accuracy(),
        }
        logger = self.trainer.logger  # no logger, no default file: never write into the working directory
        path = (
            Path(self.output)
            if self.output
            else (Path(logger.log_dir) / "eval.json" if logger is not None and logger.log_dir else None)
        )
        if path is not None and self.trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.results, indent=2) + "\n")

    def configure_optimizers(self):  # evaluation only
        return None
