"""`distill test` for generators: the evaluation protocol over several step counts, mean ± std over seeds."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch

from distill.metrics import DigitsEvaluator, SampleMetrics, format_table, self_fid, summarize
from distill.pipelines import resolve_sampler, sample_images
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
        resolve_sampler(model, sampler)  # checks the name
        self.sampler = sampler
        self._metrics: dict[tuple[int, int], SampleMetrics] = {}
        self.results: dict | None = None

    def on_test_start(self) -> None:
        self.evaluator.to(self.device)
        self._metrics = {}

    @property
    def resolved_sampler(self) -> str:
        return resolve_sampler(self.model, self.sampler)

    @torch.no_grad()
    def generate(
        self, seeds: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor, steps: int
    ) -> torch.Tensor:
        cond = labels if (labels >= 0).all() else None
        return sample_images(
            self.model,
            labels=cond,
            seeds=seeds,
            indices=indices,
            steps=steps,
            guidance_scale=self.guidance_scale if cond is not None else None,
            sampler=self.sampler,
            spacing="trailing",  # the protocol: few-step grids start at pure noise
            clip_x0=self.clip_x0,
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
