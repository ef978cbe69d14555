"""The base of every distillation method: a frozen teacher, a trained student, an optional EMA copy.

The contract it keeps: the teacher is frozen at construction, never in the optimizer, never synchronised by DDP
and never written to checkpoints; everything student-sized that the method owns (student, EMA, projections,
target networks) is saved, and loading checks that the only missing keys are the teacher's. Every method answers
the one sampling contract, :meth:`DistillationModule.sample`, and declares only its own options: the options
below reach subclasses through ``**kwargs`` (jsonargparse follows them, so config keys stay flat).
Evaluation (sample grids, generative metrics) is callbacks over the sampling contract (:mod:`distill.validation`),
configured from the ``eval_*`` options here.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from distill.diffusers_folder import save_student_folder
from distill.ema import EMA, copy_buffers
from distill.methods.checks import (
    check_data_matches,
    check_transformer_student,
    null_class_of,
    other_teacher,
)
from distill.methods.optim import check_optimizer, configure
from distill.methods.ranges import (
    check_at_least,
    check_finite,
    check_probability,
    check_step_count,
    check_step_counts,
)
from distill.metrics import GenerativeEvaluator
from distill.quantization import (
    Int8QAT,
    QuantizedDenoiser,
    float_network,
    histogram_calibration,
    save_int8_state,
)
from distill.rng import GeneratorRandom, KeyedRandom, global_sample_indices
from distill.search.robust import UnitDropping
from teachers.conditioning import Cond, cond_from_tensors
from teachers.network import guided_denoiser
from teachers.sampling import keyed_step_noise
from teachers.sampling import sample as sample_loop
from teachers.teacher import DiffusionTeacher

TEACHER_PREFIX = "teacher."
NONFINITE = ("stop", "skip")


class DistillationModule(L.LightningModule):
    """Teacher + student + optional EMA; subclasses implement :meth:`training_losses`.

    Args:
        teacher: the frozen teacher (``teachers.DiffusionTeacher``).
        student: the network to train; called like the teacher's network (diffusers signature).
        optimizer: optimizer factory over :meth:`trainable_parameters`.
        lr_scheduler: optional LR scheduler factory, stepped every optimizer step.
        ema_decay: decay of the student's EMA copy (None: no EMA).
        nonfinite: what a non-finite training loss does: "stop" (raise, naming the step and the loss terms) or
            "skip" (no optimizer, EMA or target update for that batch; counted in ``train/nonfinite_steps``
            and in checkpoints). All processes agree, so DDP never deadlocks on one rank's skip. Deciding
            needs the loss on the host: one sync per step, as the progress bar's loss display already makes.
        seed: the seed of the training draws (noise, timesteps, guidance scales, label dropout), each sample's
            keyed on (seed, global step, position in the global batch) so that results do not depend on the
            number of processes (:mod:`distill.rng`). None: the run's ``seed_everything`` value (0 if unset).
        gradient_checkpointing: recompute the student's activations in the backward pass (diffusers students):
            less memory, about a third more compute.
        channels_last: hold the student's weights in channels-last memory format (faster convolutions on
            tensor-core GPUs and some CPUs; measured in ``benchmarks/speed_features.py``).
        compile_student: ``torch.compile`` the student in place at fit start (``nn.Module.compile``: parameter
            names, checkpoints and feature hooks unchanged); the first steps pay the compilation.
        evaluator: generative metrics at each validation (the digits evaluator: FID/KID vs real and teacher
            references, class accuracy); None: none.
        eval_num_samples: samples per evaluated step count (balanced labels, noise keyed on (eval_seed, index)).
        eval_steps: the student's sampling step counts evaluated and shown in the grid (None: the method's).
        eval_guidance_scale: the classifier-free guidance scale of validation samples, teacher and student alike
            (1: none; None: the method's default).
        samples_per_class: rows of the validation grid, each holding every class (0: no grid); unconditional
            teachers: rows of 8 images.
        eval_prompts: prompts of a text teacher's validation grid (teacher row above the student's).
        eval_teacher_steps: the teacher's DDIM steps in the grid (None: no teacher row).
        eval_clip: a local CLIP folder: a text teacher's prompt grid is also scored by CLIP score.
        eval_seed: seed of the validation noise and draws (the same at every validation).
        check_student_teacher: warn when the student was loaded from a folder recording another teacher than this
            run's (``unet/distilled_from.json``, compared by weights fingerprint, :mod:`teachers.provenance`),
            naming both; false: no check.
        quantize: quantization-aware distillation (``distill.quantization.Int8QAT``): the student trains through
            int8 fake-quantization (XNNPACK's scheme) while the fp teacher supervises it; exports write the float
            weights and, with ``--quantize int8``, the int8 graph with the trained scales. None: fp32 training.
        unit_dropping: robust training (``distill.search.UnitDropping``): each removable unit of the student
            (resnet, attention, mid block) is skipped at random at every training step, the set keyed on the seed
            and the global step; what makes a network's per-unit importance measurable (``distill prune``).
            Under DDP the skipped units' parameters get no gradient: use ``ddp_find_unused_parameters_true``.
    """

    #: the method's defaults where the ``eval_*`` options say None
    default_eval_steps: tuple[int, ...] = (25,)
    default_eval_guidance_scale: float = 1.0

    def __init__(
        self,
        teacher: DiffusionTeacher,
        student: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema_decay: float | None = 0.999,
        nonfinite: str = "stop",
        seed: int | None = None,
        gradient_checkpointing: bool = False,
        channels_last: bool = False,
        compile_student: bool = False,
        evaluator: GenerativeEvaluator | None = None,
        eval_num_samples: int = 500,
        eval_steps: list[int] | None = None,
        eval_guidance_scale: float | None = None,
        samples_per_class: int = 2,
        eval_prompts: list[str] | None = None,
        eval_teacher_steps: int | None = 25,
        eval_clip: str | None = None,
        eval_seed: int = 0,
        check_student_teacher: bool = True,
        quantize: Int8QAT | None = None,
        unit_dropping: UnitDropping | None = None,
    ) -> None:
        super().__init__()
        check_probability(ema_decay, key="ema_decay", example=0.999, open_above=True)
        check_finite({"eval_guidance_scale": eval_guidance_scale})
        check_at_least(eval_num_samples, key="eval_num_samples", minimum=0)
        check_at_least(samples_per_class, key="samples_per_class", minimum=0)
        check_optimizer(optimizer)
        self.seed = seed
        self.compile_student = compile_student
        if channels_last:
            student.to(memory_format=torch.channels_last)
        if gradient_checkpointing:
            if not hasattr(student, "enable_gradient_checkpointing"):
                raise ValueError(
                    f"gradient_checkpointing: the student ({type(student).__name__}) has no "
                    "enable_gradient_checkpointing(); use a diffusers-based student or set it false"
                )
            student.enable_gradient_checkpointing()
        self._batch_idx = 0
        self._teacher_samples: dict[tuple, torch.Tensor] = {}
        self._skipped = False
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.nonfinite_steps = 0
        if not isinstance(teacher, DiffusionTeacher):
            raise TypeError(
                f"teacher must be a teachers.DiffusionTeacher (e.g. DiffusionTeacher.from_pretrained(path)), "
                f"got {type(teacher).__name__}"
            )
        trained = getattr(student, "trained_prediction_type", None)
        if trained is not None and trained != teacher.prediction_type:

            def family(prediction: str) -> str:
                return (
                    "flow matching"
                    if prediction == "flow_prediction"
                    else "a discrete (DDPM-family) schedule"
                )

            raise ValueError(
                f"student: its weights were trained to predict {trained!r} with {family(trained)} "
                f"({getattr(student, 'trained_prediction_source', 'its scheduler config')}) but the teacher "
                f"predicts {teacher.prediction_type!r} with {family(teacher.prediction_type)}; a student must start "
                "from weights of its teacher's family and parameterisation. Start from a student exported from this "
                "teacher, or from scratch / the teacher's weights (a students.* builder)"
            )
        check_transformer_student(teacher, student)
        mismatch = other_teacher(student, teacher) if check_student_teacher else None
        if mismatch is not None:
            rank_zero_warn(mismatch)
        if student is teacher.unet:
            raise ValueError("student must be a separate network, not the teacher's own (copy it first)")
        self.quantize = quantize
        if quantize is not None:
            clashes = [
                name
                for name, on in (
                    ("compile_student", compile_student),
                    ("gradient_checkpointing", gradient_checkpointing),
                    ("channels_last", channels_last),
                )
                if on
            ]
            if clashes:
                raise ValueError(
                    f"quantize: a fake-quantized student is a captured graph; {clashes} do not apply to it "
                    "(set them false)"
                )
            student = quantize.prepare(student)
        self.unit_dropping = unit_dropping
        if unit_dropping is not None:
            clashes = [
                name
                for name, on in (("quantize", quantize is not None), ("compile_student", compile_student))
                if on
            ]
            if clashes:
                raise ValueError(
                    f"unit_dropping skips units of the student's eager modules; {clashes} do not combine with it "
                    "(robust training runs in float, uncompiled)"
                )
            unit_dropping.bind(student)
        self.teacher = teacher
        self.student = student
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.ema = EMA(student, decay=ema_decay) if ema_decay is not None else None
        ignore = [TEACHER_PREFIX + k for k in teacher.state_dict()]
        if self.ema is not None:
            ignore += [f"ema.{k}" for k in self.ema.state_dict()]
        self._ddp_params_and_buffers_to_ignore = ignore
        self.null_class = null_class_of(student, teacher.num_classes, argument="student")
        self.evaluator = evaluator
        self.eval_num_samples = eval_num_samples
        max_steps = teacher.schedule.num_train_timesteps
        self._eval_steps = check_step_counts(eval_steps, key="eval_steps", max_steps=max_steps)
        if eval_teacher_steps:  # None or 0: no teacher row
            check_step_count(eval_teacher_steps, key="eval_teacher_steps", max_steps=max_steps)
        self.eval_guidance_scale = (
            self.default_eval_guidance_scale if eval_guidance_scale is None else float(eval_guidance_scale)
        )
        if self.eval_guidance_scale != 1.0 and self.teacher.cond_kind is None:
            raise ValueError(
                f"eval_guidance_scale={self.eval_guidance_scale} needs a conditional teacher (a null class or "
                "empty-prompt embeddings); set eval_guidance_scale: 1"
            )
        self.samples_per_class = samples_per_class
        self.eval_prompts = list(eval_prompts) if eval_prompts else []
        self.eval_teacher_steps = eval_teacher_steps
        self.eval_clip = eval_clip
        self.eval_seed = eval_seed

    # -- what subclasses provide --------------------------------------------------------------------------
    def training_losses(self, batch: Any) -> dict[str, torch.Tensor]:
        """Loss terms of one batch; the key ``loss`` is the total that is optimised."""
        raise NotImplementedError

    def extra_trainable_modules(self) -> list[nn.Module]:
        """Method-owned trainable modules besides the student (e.g. KD projections)."""
        return []

    # -- data and conditions ------------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        """Whether the teacher takes a condition (class labels or text)."""
        return self.teacher.cond_kind is not None

    @property
    def quantized(self) -> bool:
        """Whether the student trains through int8 fake-quantization (the ``quantize`` option)."""
        return isinstance(self.student, QuantizedDenoiser)

    def on_train_start(self) -> None:
        """Quantization-aware runs: before the first step, ``calibration_batches`` training batches pass through
        the method's losses with fake-quantization off, so the activation ranges start from the data (through
        post-training quantization's histogram observers unless ``Int8QAT(calibration="moving_average")``; not on
        resume: the checkpoint holds them)."""
        if not self.quantized or self.global_step > 0 or not self.quantize.calibration_batches:
            return
        loader = self.trainer.train_dataloader
        if loader is None:
            return
        histogram = self.quantize.calibration == "histogram"
        observing = histogram_calibration(self.student) if histogram else contextlib.nullcontext()
        self.student.set_fake_quant(False)
        try:
            with torch.no_grad(), observing:
                for i, batch in enumerate(loader):
                    if i >= self.quantize.calibration_batches:
                        break
                    self.training_losses(self.trainer.strategy.batch_to_device(batch))
        finally:
            self.student.set_fake_quant(True)
        if self.quantize.freeze_observers_after == 0:
            self.student.freeze_observers()  # train against the calibrated scales from the first step
        if self.ema is not None:  # the EMA copy starts from the calibrated ranges too
            copy_buffers(self.ema.module, self.student)

    def configure_model(self) -> None:
        if self.compile_student and not getattr(self, "_compiled", False):
            self.student.compile()
            self._compiled = True

    def setup(self, stage: str) -> None:
        """Precomputed text embeddings carry the empty-prompt condition: hand it to a teacher loaded without its
        text encoder, so guidance and condition dropout work."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        uncond = getattr(datamodule, "uncond_cond", None)
        if callable(uncond) and not self.teacher.text_encoders and self.teacher.cond_kind != "class":
            self.teacher.set_uncond(uncond())
        check_data_matches(self.student, datamodule, argument="student", teacher=self.teacher)

    def prepare_batch(self, batch: Any) -> tuple[torch.Tensor, Cond]:
        """``(x0, cond)`` from any data module's batch: ``(images, labels)`` (pixel space, class labels); a
        caption-folder dict ``{"images", "captions"}`` (encoded here by the teacher's VAE and text encoder); or a
        precomputed-shard dict ``{"latents", "prompt_embeds"[, "text_embeds", "time_ids" | "pooled_projections"]}``
        (the fast path)."""
        if isinstance(batch, dict):
            if "latents" in batch:
                return batch["latents"].float(), cond_from_tensors(batch)
            images = batch["images"]
            x0 = self.teacher.encode_images(images) if self.teacher.is_latent else images
            return x0, self.teacher.encode_prompt(list(batch["captions"]))
        images, labels = batch
        return images, (labels if self.conditional else None)

    def eval_random(self, batch_idx: int) -> GeneratorRandom:
        """Fixed draws for validation batch ``batch_idx`` (the same at every validation)."""
        eval_seed = int(self.eval_seed)
        gen = torch.Generator(self.device).manual_seed(eval_seed * 100_003 + batch_idx)
        return GeneratorRandom(gen, device=self.device)

    def teacher_samples(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Teacher output reuse for validation: the frozen teacher's samples from the fixed validation noise and
        labels are the same at every validation, so ``make()`` runs once per ``key`` (with the device and the
        teacher's dtype added) and later validations reuse its result. Not written to checkpoints."""
        key = (*key, str(self.device), self.teacher.dtype)
        if key not in self._teacher_samples:
            self._teacher_samples[key] = make().detach()
        return self._teacher_samples[key]

    # -- training -----------------------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.student.parameters()
        for module in self.extra_trainable_modules():
            yield from module.parameters()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        self._batch_idx = batch_idx
        self._skipped = False
        dropped: list[str] = []
        dropping = (
            self.unit_dropping.applied(self.student, seed=self.training_seed(), step=self.global_step)
            if self.unit_dropping is not None
            else contextlib.nullcontext(dropped)
        )
        with dropping as dropped:
            losses = self.training_losses(batch)
        if self.unit_dropping is not None:
            self.log("train/units_dropped", float(len(dropped)))
        if not self._all_finite(losses["loss"]):
            return self._nonfinite(losses, batch_idx)
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", sync_dist=self._distributed())
        if self.nonfinite_steps:
            self.log("train/nonfinite_steps", float(self.nonfinite_steps))
        return losses["loss"]

    def training_seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def train_random(self, batch_size: int) -> KeyedRandom | GeneratorRandom:
        """The draws for this process's training micro-batch, keyed on (seed, global step, global index).

        Outside a trainer (a bare call), the global RNG."""
        trainer = self._trainer
        if trainer is None:
            return GeneratorRandom(None, device=self.device)
        accumulate = max(int(getattr(trainer, "accumulate_grad_batches", 1)), 1)
        indices = global_sample_indices(
            batch_size=batch_size,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            micro_batch=self._batch_idx % accumulate,
        )
        return KeyedRandom(
            seed=self.training_seed(), step=self.global_step, indices=indices, device=self.device
        )

    def _distributed(self) -> bool:
        return self._trainer is not None and self._trainer.world_size > 1

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(loss.detach()).all())
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every rank skips, or none does
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        return finite

    def _nonfinite(self, losses: dict[str, torch.Tensor], batch_idx: int) -> None:
        terms = {name: float(value.detach().float().mean()) for name, value in losses.items()}
        bad = [name for name, value in terms.items() if not math.isfinite(value)] or ["loss (another rank)"]
        message = (
            f"non-finite training loss at global step {self.global_step} (batch {batch_idx}): {bad} "
            f"(terms: {terms})"
        )
        if self.nonfinite == "stop":
            raise FloatingPointError(
                message + ". Lower the learning rate or use fp32/bf16 instead of fp16, or set "
                "`nonfinite: skip` to skip such batches (counted in train/nonfinite_steps)."
            )
        self.nonfinite_steps += 1
        self._skipped = True
        rank_zero_warn(message + f"; batch skipped ({self.nonfinite_steps} so far)")
        self.log("train/nonfinite_steps", float(self.nonfinite_steps))
        return None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then :meth:`after_step` (unless the batch was skipped).

        Here rather than in ``on_train_batch_end``: callbacks' batch-end hooks (``ModelCheckpoint``) run before the
        module's, so a checkpoint would hold a student one EMA/target/round update ahead of its copies, and a
        run resumed from it would differ. This also updates once per optimizer step under gradient accumulation.
        """
        super().optimizer_step(*args, **kwargs)
        if not self._skipped:  # a skipped batch changes nothing
            # Lightning counts the step once this hook returns: ``global_step + 1`` steps are done
            self.after_step(steps_done=self.global_step + 1)

    def after_step(self, steps_done: int) -> None:
        """After every applied optimizer step (``steps_done`` of them, this one included): the EMA update
        (subclasses add target and round updates)."""
        if self.ema is not None:
            self.ema.update(self.student)
        after = self.quantize.freeze_observers_after if self.quantize is not None else None
        if after is not None and steps_done >= after and not bool(self.student.observers_frozen):
            self.student.freeze_observers()

    def configure_optimizers(self):
        return configure(self.trainable_parameters(), self.optimizer, self.lr_scheduler)

    def eval_student(self) -> nn.Module:
        """The weights to evaluate: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.student

    # -- the sampling contract and evaluation -----------------------------------------------------------
    @property
    def eval_steps(self) -> list[int]:
        """The student's step counts that validation evaluates (the option, else the method's default)."""
        return list(self._eval_steps) if self._eval_steps is not None else list(self.default_eval_steps)

    def sampling_schedule(self):
        """The schedule (with its scheduler config) the student samples with: :meth:`export_schedule`'s."""
        return self.export_schedule()

    def sampler_options(self) -> dict[str, Any]:
        """Extra keyword arguments of the sampling loop (consistency: its ``sigma_data``)."""
        return {}

    @torch.no_grad()
    def sample(
        self,
        cond: Cond,
        noise: torch.Tensor,
        *,
        steps: int | None = None,
        guidance_scale: float | None = 1.0,
        seeds: torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """The student's samples from ``noise`` (EMA weights unless ``net``): the sampling contract teachers share.

        ``guidance_scale`` is the classifier-free guidance scale (1 or None: off): a guidance-distilled student
        takes ``scale - 1`` through ``timestep_cond`` in one forward per step, any other runs CFG. ``steps``
        defaults to the first of :attr:`eval_steps`. Re-noising between multistep consistency steps is keyed per
        image and per step on ``(seeds, indices)`` (default: ``eval_seed`` and the position in ``noise``), exactly
        as the exported folder samples (:func:`distill.pipelines.sample_images`).
        """
        net = self.eval_student() if net is None else net
        schedule = self.sampling_schedule()
        n = noise.shape[0]
        seeds = torch.full((n,), int(self.eval_seed), dtype=torch.long) if seeds is None else seeds
        indices = torch.arange(n) if indices is None else indices
        denoiser = guided_denoiser(
            net, schedule, cond=cond, guidance_scale=guidance_scale, uncond=self.teacher.null_cond
        )
        return sample_loop(
            denoiser=denoiser,
            schedule=schedule,
            noise=noise,
            steps=self.eval_steps[0] if steps is None else steps,
            clip_x0=1.0 if schedule.clip_pixels and not self.teacher.is_latent else None,
            step_noise=keyed_step_noise(
                seeds=seeds, indices=indices, shape=tuple(noise.shape[1:]), device=noise.device
            ),
            **self.sampler_options(),
        )

    def configure_callbacks(self) -> list[L.Callback]:
        """The validation sample grid and generative metrics (:mod:`distill.validation`), from the ``eval_*``
        options. Lightning lets these replace trainer callbacks of the same class; to configure the callbacks
        under ``trainer.callbacks`` instead, set ``samples_per_class: 0`` and ``evaluator: null`` here."""
        from distill.validation import GenerativeMetrics, SampleGrid

        callbacks: list[L.Callback] = []
        if self.samples_per_class > 0 or self.eval_prompts:
            callbacks.append(
                SampleGrid(
                    samples_per_class=self.samples_per_class,
                    prompts=self.eval_prompts or None,
                    steps=None,
                    guidance_scale=None,
                    teacher_steps=self.eval_teacher_steps,
                    seed=self.eval_seed,
                    clip=self.eval_clip,
                )
            )
        if self.evaluator is not None and self.eval_num_samples > 0:
            callbacks.append(
                GenerativeMetrics(
                    self.evaluator,
                    num_samples=self.eval_num_samples,
                    steps=None,
                    guidance_scale=None,
                    seed=self.eval_seed,
                )
            )
        return callbacks

    def save_pretrained(self, directory: str | Path, *, use_ema: bool = True) -> None:
        """Write the student (EMA weights by default) as ``unet/`` with :meth:`export_schedule` as ``scheduler/``:
        a folder that ``DiffusionTeacher.from_pretrained`` (and so ``distill test``) loads."""
        student = self.eval_student() if use_ema else self.student
        # a quantization-aware student: its float weights, and its int8 state beside them (quantization/)
        save_student_folder(
            directory, student=float_network(student), schedule=self.export_schedule(), teacher=self.teacher
        )
        if isinstance(student, QuantizedDenoiser):
            save_int8_state(student, directory)

    def export_schedule(self):
        """The scheduler config an export carries: the teacher's (methods that change how the student samples,
        e.g. consistency or progressive distillation, return their own)."""
        return self.teacher.schedule

    # -- checkpoints: never the frozen teacher --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]
        checkpoint["teacher_source"] = self.teacher.source
        checkpoint["nonfinite_steps"] = self.nonfinite_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the checkpoint holds exactly the non-teacher state, then fill in the live teacher's tensors.

        Filling in (instead of ``strict=False``) keeps Lightning's strict load, so any other missing or
        unexpected key still fails, naming the keys.
        """
        state = checkpoint["state_dict"]
        expected = set(self.state_dict())
        teacher_keys = {k for k in expected if k.startswith(TEACHER_PREFIX)}
        missing = sorted(expected - teacher_keys - set(state))
        unexpected = sorted(set(state) - expected)
        stray_teacher = sorted(k for k in state if k.startswith(TEACHER_PREFIX))
        if missing or unexpected or stray_teacher:
            raise RuntimeError(
                "checkpoint does not match this method: "
                f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
                + (
                    f", teacher tensors that should never be saved {stray_teacher[:4]}"
                    if stray_teacher
                    else ""
                )
                + ". Was it written by the same config (student architecture, method)?"
            )
        for key, value in self.teacher.state_dict(prefix=TEACHER_PREFIX, keep_vars=False).items():
            state[key] = value
        self.nonfinite_steps = int(checkpoint.get("nonfinite_steps", 0))
