"""Every method's loss terms and gradient norm on a fixed batch and fixed draws, against committed values.

The values in ``tests/golden/method_losses.json`` were written before the methods' losses moved into pure
objectives (:mod:`distill.objectives`), with guidance then given in LCM's form w (here the CFG scales 1 + w,
which map exactly); any later change to a method's maths shows up here to 1e-6. Rewrite the
file only for an intended change of the maths: ``GOLDEN_WRITE=1 pytest tests/test_golden_losses.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from distill.rng import KeyedRandom
from students.efficient import efficient_unet_digits
from teachers import DiffusionTeacher

GOLDEN = Path(__file__).parent / "golden" / "method_losses.json"
TOL = 1e-6


def _batch():
    gen = torch.Generator().manual_seed(1234)
    images = torch.rand(8, 1, 16, 16, generator=gen) * 2 - 1
    return images, torch.arange(8) % 10


def _teacher():
    return DiffusionTeacher.from_pretrained("builtin:digits")


def _student(seed: int, **kwargs):
    torch.manual_seed(seed)
    return efficient_unet_digits("builtin:digits", **kwargs)


def _kd():
    from distill.methods.knowledge import KnowledgeDistillation

    return KnowledgeDistillation(_teacher(), _student(1), samples_per_class=0)


def _consistency_guided():
    from distill.methods.consistency import ConsistencyDistillation

    return ConsistencyDistillation(
        _teacher(),
        _student(2, time_cond_proj_dim=32),
        guidance_min=1.5,
        guidance_max=4.0,
        samples_per_class=0,
    )


def _consistency_plain():
    from distill.methods.consistency import ConsistencyDistillation

    return ConsistencyDistillation(_teacher(), _student(3), loss="l2", samples_per_class=0)


def _progressive_guided():
    from distill.methods.progressive import ProgressiveDistillation

    return ProgressiveDistillation(
        _teacher(),
        _student(4, time_cond_proj_dim=32),
        teacher_steps=8,
        final_steps=2,
        guidance_min=1.0,
        guidance_max=3.0,
        samples_per_class=0,
    )


def _progressive_round2():
    """The second round: the student of round 1 (here: a perturbed copy) is the frozen teacher."""
    module = _progressive_guided()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(7)
        for p in module.round_teacher.module.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    module.round_index = 1
    return module


CASES = {
    "knowledge": _kd,
    "consistency_guided": _consistency_guided,
    "consistency_plain_l2": _consistency_plain,
    "progressive_guided": _progressive_guided,
    "progressive_round2": _progressive_round2,
}


def _measure(name: str) -> dict[str, float]:
    module = CASES[name]()
    module.train()
    rng = KeyedRandom(seed=11, step=5, indices=list(range(8)))
    losses = module.training_losses(_batch(), rng=rng)
    losses["loss"].backward()
    grads = [p.grad.flatten() for p in module.trainable_parameters() if p.grad is not None]
    out = {k: float(v.detach()) for k, v in losses.items()}
    out["grad_norm"] = float(torch.cat(grads).norm())
    return out


def _diffusion_training() -> dict[str, float]:
    from diffusers import DDPMScheduler

    from distill.methods.training import DiffusionTraining

    teacher = _teacher()
    scheduler = DDPMScheduler.from_config(dict(teacher.schedule.config))
    module = DiffusionTraining(_student(5), scheduler, min_snr_gamma=5.0)
    module.train()
    images, labels = _batch()
    loss = module.diffusion_loss(images, labels, generator=torch.Generator().manual_seed(3))
    loss.backward()
    grads = [p.grad.flatten() for p in module.model.parameters() if p.grad is not None]
    return {"loss": float(loss.detach()), "grad_norm": float(torch.cat(grads).norm())}


def measure_all() -> dict[str, dict[str, float]]:
    results = {name: _measure(name) for name in CASES}
    results["diffusion_training"] = _diffusion_training()
    return results


def test_method_losses_match_the_committed_values():
    results = measure_all()
    if os.environ.get("GOLDEN_WRITE"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(results) == set(golden)
    for case, terms in golden.items():
        assert set(results[case]) == set(terms), case
        for term, value in terms.items():
            got = results[case][term]
            assert abs(got - value) <= TOL * max(1.0, abs(value)), (case, term, got, value)
