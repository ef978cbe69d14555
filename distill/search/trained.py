"""Scoring a candidate that skipping cannot score: train it briefly, then measure it.

Removing a unit from a robust-trained network is scored by skipping it (:mod:`distill.search.importance`); a
narrower stage or a separable convolution changes every weight it touches, so the candidate has to learn before it
can be judged. :class:`ShortKD` builds the candidate (:class:`~distill.search.space.Candidate`, the teacher's
weights copied wherever name and shape match), trains it by knowledge distillation from the teacher for a few
hundred steps on the data module, and scores the result with a quality proxy: the same cheap training for every
candidate, so their scores compare (NAS's training-based proxy; SnapFusion's evolution fine-tunes between actions
the same way).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from distill.search.space import Candidate


class ShortKD:
    """Train ``candidate`` by output KD + the denoising loss for ``steps`` steps, then score it with ``proxy``
    (lower is better; a :class:`~distill.search.importance.DigitsFidProxy` on digits).

    Args:
        teacher: the frozen teacher (``teachers.DiffusionTeacher``).
        datamodule_factory: builds the training data (a fresh data module, or a DataLoader, per candidate).
        proxy: the quality proxy of the trained candidate.
        steps: optimizer steps per candidate.
        lr: AdamW learning rate.
        seed: the seed of every candidate's run (same data order and draws for all).
        repeats: runs per candidate, at seeds ``seed, seed + 1, ...``; the score is their mean (a costlier,
            less noisy score, e.g. for the search's finalists).
    """

    def __init__(
        self,
        teacher: Any,
        datamodule_factory: Any,
        proxy: Any,
        *,
        steps: int = 200,
        lr: float = 5e-4,
        seed: int = 0,
        repeats: int = 1,
    ) -> None:
        if steps < 1 or repeats < 1:
            raise ValueError(f"ShortKD needs steps >= 1 and repeats >= 1, got {steps}, {repeats}")
        self.teacher, self.datamodule_factory, self.proxy = teacher, datamodule_factory, proxy
        self.steps, self.lr, self.seed, self.repeats = int(steps), float(lr), int(seed), int(repeats)
        runs = f", mean of {self.repeats} seeds" if self.repeats > 1 else ""
        self.name = f"{proxy.name} after {self.steps} KD steps{runs}"

    def train(self, candidate: Candidate, *, seed: int | None = None) -> torch.nn.Module:
        import lightning as L

        from distill import KnowledgeDistillation

        seed = self.seed if seed is None else int(seed)
        L.seed_everything(seed, verbose=False)
        student = candidate.build(self.teacher.unet)
        module = KnowledgeDistillation(
            teacher=self.teacher,
            student=student,
            feature_weight=0.0,
            init_from_teacher=True,
            ema_decay=None,
            evaluator=None,
            samples_per_class=0,
            seed=seed,
            optimizer=functools.partial(torch.optim.AdamW, lr=self.lr, weight_decay=0.0),
        )
        trainer = L.Trainer(
            max_steps=self.steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        data = self.datamodule_factory()
        if isinstance(data, L.LightningDataModule):
            trainer.fit(module, datamodule=data)
        else:  # a DataLoader
            trainer.fit(module, train_dataloaders=data)
        return module.student.eval()

    def __call__(self, candidate: Candidate) -> float:
        from teachers import DiffusionTeacher

        scores = []
        for seed in range(self.seed, self.seed + self.repeats):
            network = self.train(candidate, seed=seed)
            model = DiffusionTeacher(network, dict(self.teacher.schedule.config))
            with torch.no_grad():
                scores.append(float(self.proxy(model)))
        return sum(scores) / len(scores)
