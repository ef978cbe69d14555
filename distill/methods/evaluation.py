"""`distill test` for generators: the evaluation protocol over several step counts, mean ± std over seeds.

Class-conditional (and unconditional) models are scored by a class evaluator (:class:`distill.metrics.DigitsEvaluator`)
over :class:`distill.data.GenerationDataModule`'s (seed, index, label) batches; text-to-image models by a text
evaluator (:class:`distill.metrics_t2i.TextToImageEvaluator`) over :class:`distill.data_prompts.PromptDataModule`'s
(seed, index, prompt) batches: prompts encoded by the model's text encoder, latents decoded by its VAE."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch

from distill.metrics import GenerativeEvaluator, format_table, self_fid, summarize
from distill.pipelines import resolve_sampler, sample_images
from teachers.teacher import DiffusionTeacher


class GenerativeEvaluation(L.LightningModule):
    """Evaluate a frozen denoiser (a teacher, or an exported student loaded as one) with DDIM at several step
    counts, trailing spacing, and print the protocol's table.

    Args:
        model: the denoiser adapter (``DiffusionTeacher.from_pretrained(...)``); a text-to-image pipeline folder
            needs its text encoder (and VAE, for a latent model).
        evaluator: what scores the samples, matching the model's conditioning: the digits evaluator with its
            references for class-conditional models, ``distill.metrics_t2i.TextToImageEvaluator`` for
            text-to-image ones.
        steps: DDIM step counts to evaluate (trailing spacing).
        guidance_scale: classifier-free guidance scale (None or 1: no guidance).
        name: the row label in the table.
        output: JSON file for the results (default: ``<log_dir>/eval.json``).
        clip_x0: clamp x0-predictions while sampling ("auto": to [-1, 1] for pixel models, not for latents).
        sampler: "ddim", "consistency" (multistep, LCM timesteps) or "auto" (consistency when the folder's
            scheduler is an LCMScheduler). A network with ``time_cond_proj_dim`` takes the guidance scale as
            ``timestep_cond`` (``w = scale - 1``, as diffusers' LCM pipeline) instead of running CFG.
    """

    def __init__(
        self,
        model: DiffusionTeacher,
        evaluator: GenerativeEvaluator,
        steps: list[int] | None = None,
        guidance_scale: float | None = 2.0,
        name: str = "teacher",
        output: str | None = None,
        clip_x0: float | str | None = "auto",
        sampler: str = "auto",
    ) -> None:
        super().__init__()
        check_conditioning(model, evaluator)
        if isinstance(clip_x0, str) and clip_x0 != "auto":
            raise ValueError(f"clip_x0 must be a number, null or 'auto', got {clip_x0!r}")
        self.model = model
        self.evaluator = evaluator
        self.steps = [50, 8, 4, 2, 1] if steps is None else list(steps)
        self.guidance_scale = guidance_scale
        self.name = name
        self.output = output
        self.clip_x0 = clip_x0
        resolve_sampler(model, sampler)  # checks the name
        self.sampler = sampler
        self._metrics: dict[tuple[int, int], object] = {}
        self.results: dict | None = None

    @property
    def is_text(self) -> bool:
        return self.model.cond_kind == "text"

    def setup(self, stage: str) -> None:
        """Refuse data of the wrong kind before anything is loaded or sampled."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        gives_prompts = hasattr(datamodule, "prompts")
        if self.is_text and not gives_prompts:
            raise ValueError(
                f"the model is text-to-image but data: {type(datamodule).__name__} gives no prompts: use data: "
                "distill.data_prompts.PromptDataModule (one prompt per line in prompt_file)"
            )
        if not self.is_text and gives_prompts:
            raise ValueError(
                f"the model is not text-conditioned but data: {type(datamodule).__name__} gives prompts: use data: "
                "distill.data.GenerationDataModule (seeds, num_samples, num_classes)"
            )

    def on_test_start(self) -> None:
        self.evaluator.to(self.device)
        self.evaluator.prepare()
        self._metrics = {}

    @property
    def resolved_sampler(self) -> str:
        return resolve_sampler(self.model, self.sampler)

    @torch.no_grad()
    def generate(
        self, seeds: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor | list[str], steps: int
    ) -> torch.Tensor:
        """Images in [-1, 1] for ``labels`` (class labels, -1 for none) or prompts, image ``i`` from noise keyed on
        ``(seeds[i], indices[i])``; a latent model's samples decoded by its VAE."""
        if self.is_text:
            return self.generate_from_prompts(seeds, indices, list(labels), steps)
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

    @torch.no_grad()
    def generate_from_prompts(
        self, seeds: torch.Tensor, indices: torch.Tensor, prompts: list[str], steps: int
    ) -> torch.Tensor:
        samples = sample_images(
            self.model,
            labels=self.model.encode_prompt(prompts),
            seeds=seeds,
            indices=indices,
            steps=steps,
            guidance_scale=self.guidance_scale,
            sampler=self.sampler,
            spacing="trailing",
            clip_x0=self.clip_x0,
        )
        return self.model.decode_latents(samples) if self.model.is_latent else samples

    def test_step(self, batch, batch_idx: int) -> None:
        seeds, indices, labels = batch
        check_batch(self.model, labels)
        if self.is_text:
            self._text_step(seeds, indices, list(labels))
            return
        for steps in self.steps:
            images = self.generate(seeds, indices, labels, steps)
            for s in seeds.unique().tolist():
                mask = seeds == s
                key = (steps, int(s))
                if key not in self._metrics:
                    self._metrics[key] = self.evaluator.accumulator()
                self._metrics[key].update(images[mask], labels[mask] if (labels >= 0).all() else None)

    def _text_step(self, seeds: torch.Tensor, indices: torch.Tensor, prompts: list[str]) -> None:
        for steps in self.steps:
            images = self.generate_from_prompts(seeds, indices, prompts, steps)
            for s in seeds.unique().tolist():
                rows = (seeds == s).nonzero().flatten().tolist()
                key = (steps, int(s))
                if key not in self._metrics:
                    self._metrics[key] = self.evaluator.accumulator()
                self._metrics[key].update(images[rows], [prompts[i] for i in rows])

    def _text_results(self) -> dict:
        from distill.metrics_t2i import METRICS
        from distill.metrics_t2i import format_table as format_t2i_table

        by_steps = defaultdict(list)
        for (steps, seed), metric in sorted(self._metrics.items()):
            by_steps[steps].append({"seed": seed, **metric.compute()})
        rows = [
            {
                "name": self.name,
                "steps": steps,
                "guidance": self.guidance_scale,
                "summary": summarize(by_steps[steps], METRICS),
                "per_seed": by_steps[steps],
            }
            for steps in self.steps
        ]
        describe = getattr(self.evaluator, "describe", dict)()
        table = format_t2i_table(rows, describe.get("features", "features"))
        return {"rows": rows, "table": table, "evaluator": describe}

    def _class_results(self) -> dict:
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
        rows = [
            {
                "name": self.name,
                "steps": steps,
                "guidance": self.guidance_scale,
                "summary": summarize(by_steps[steps]),
                "per_seed": by_steps[steps],
            }
            for steps in self.steps
        ]
        floors = self.evaluator.floors
        return {
            "rows": rows,
            "noise_floor": floors,
            "table": format_table(rows, floors),
            "real_heldout_accuracy": self.evaluator.real_accuracy(),
        }

    def on_test_epoch_end(self) -> None:
        self.results = self._text_results() if self.is_text else self._class_results()
        for row in self.results["rows"]:
            for key, value in row["summary"].items():
                self.log(f"test/{row['steps']}steps/{key}", value["mean"])
        if self.trainer.is_global_zero:  # once, on stdout, whatever the logging setup
            print("\n" + self.results["table"] + "\n", flush=True)
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


def check_conditioning(model: DiffusionTeacher, evaluator: GenerativeEvaluator) -> None:
    """Refuse an evaluator that scores other conditions than the model takes (before anything is sampled)."""
    wanted = getattr(evaluator, "conditioning", "class")
    kind = model.cond_kind
    name = type(evaluator).__name__
    if kind == "text" and wanted != "text":
        raise ValueError(
            f"evaluator: {name} scores {wanted or 'unconditional'} samples, but the model is text-to-image; use "
            "evaluator: distill.metrics_t2i.TextToImageEvaluator with data: distill.data_prompts.PromptDataModule "
            "(see configs/sd15/test.yaml)"
        )
    if wanted == "text" and kind != "text":
        raise ValueError(
            f"evaluator: {name} scores text-to-image samples, but the model is "
            f"{'class-conditional' if kind == 'class' else 'unconditional'}; use a class evaluator "
            "(distill.metrics.DigitsEvaluator) with data: distill.data.GenerationDataModule "
            "(see configs/digits/teacher_eval.yaml)"
        )
    if kind == "text" and not getattr(model, "text_encoders", None):
        raise ValueError(
            "the text-to-image model has no text encoder to encode the prompts: load the pipeline folder with its "
            "text_encoder/ and tokenizer/ (model.init_args.model.init_args.latent_parts: true)"
        )


def check_batch(model: DiffusionTeacher, cond) -> None:
    """Refuse data of the wrong kind: prompts for a class model, labels for a text model."""
    prompts = isinstance(cond, list | tuple) and all(isinstance(p, str) for p in cond)
    if model.cond_kind == "text" and not prompts:
        raise ValueError(
            "the model is text-to-image but the data gives class labels: use data: "
            "distill.data_prompts.PromptDataModule (one prompt per line in prompt_file)"
        )
    if model.cond_kind != "text" and not torch.is_tensor(cond):
        raise ValueError(
            "the model is not text-conditioned but the data gives prompts: use data: "
            "distill.data.GenerationDataModule (seeds, num_samples, num_classes)"
        )
