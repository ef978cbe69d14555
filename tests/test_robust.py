"""Robust training (distill.search.UnitDropping): which units a step skips, that the step trains exactly the network
without them, and what the option refuses."""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_trainer, random_digits_loader, save_teacher_folder, tiny_cond_unet

from distill import KnowledgeDistillation
from distill.search import UnitDropping
from students.units import removable_units
from teachers import DiffusionTeacher


def _method(tmp_path, **kwargs):
    if not (tmp_path / "teacher").exists():
        save_teacher_folder(tmp_path / "teacher", tiny_cond_unet(seed=0))
    return KnowledgeDistillation(
        teacher=DiffusionTeacher.from_pretrained(tmp_path / "teacher"),
        student=tiny_cond_unet(seed=0),
        feature_weight=0.0,
        evaluator=None,
        samples_per_class=0,
        **kwargs,
    )


def test_the_draw_depends_on_seed_and_step_alone_at_the_given_rate():
    dropping = UnitDropping(probability=0.25)
    dropping.bind(tiny_cond_unet(seed=0))
    assert len(dropping.units) == len(removable_units(tiny_cond_unet(seed=0)))
    draws = [dropping.draw(seed=3, step=step) for step in range(400)]
    assert draws[17] == dropping.draw(seed=3, step=17)  # a resumed run skips the same units
    assert draws[17] != dropping.draw(seed=4, step=17) or draws[18] != dropping.draw(seed=4, step=18)
    rate = sum(len(d) for d in draws) / (400 * len(dropping.units))
    assert rate == pytest.approx(0.25, abs=0.03)
    assert all(sum(name in d for d in draws) > 50 for name in (u.name for u in dropping.units))  # each unit


def test_a_step_trains_the_network_without_its_skipped_units(tmp_path):
    """The skipped units' parameters get no gradient, the others do, and the loss is the one of the network with
    those units bypassed; outside the step the whole network runs."""
    from students.units import skipping

    method = _method(tmp_path, unit_dropping=UnitDropping(probability=0.3), seed=5)
    step = next(s for s in range(50) if len(method.unit_dropping.draw(seed=5, step=s)) >= 2)
    dropped = method.unit_dropping.draw(seed=5, step=step)
    images, labels = next(iter(random_digits_loader(8, batch_size=8)))
    method._trainer = None
    type(method).global_step = property(lambda self: step)
    try:
        torch.manual_seed(0)
        loss = method.training_step((images, labels), 0)
        loss.backward()
        modules = dict(method.student.named_modules())
        for name in dropped:
            branch = [p for n, p in modules[name].named_parameters() if "conv_shortcut" not in n]
            assert branch and all(p.grad is None for p in branch), name
        kept = [u.name for u in method.unit_dropping.units if u.name not in dropped and "." in u.name]
        assert all(any(p.grad is not None for p in modules[name].parameters()) for name in kept)
        # the same loss from the network with the units bypassed by hand (same global-RNG draws outside a trainer)
        method.unit_dropping = None
        torch.manual_seed(0)
        with skipping(method.student, dropped):
            by_hand = method.training_step((images, labels), 0)
        torch.testing.assert_close(loss, by_hand)
        assert "forward" not in vars(modules[dropped[0]])
    finally:
        del type(method).global_step


def test_fit_logs_the_units_dropped_and_validation_runs_the_whole_network(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    method = _method(tmp_path, unit_dropping=UnitDropping(probability=0.5), ema_decay=None)
    trainer = cpu_trainer(3, logger=CSVLogger(tmp_path / "logs"), log_every_n_steps=1)
    trainer.fit(method, train_dataloaders=random_digits_loader())
    import csv

    with open(next((tmp_path / "logs").rglob("metrics.csv"))) as handle:
        rows = list(csv.DictReader(handle))
    counts = [float(r["train/units_dropped"]) for r in rows if r.get("train/units_dropped")]
    expected = [len(method.unit_dropping.draw(seed=method.training_seed(), step=s)) for s in range(3)]
    assert counts == expected
    assert not any("forward" in vars(m) for m in method.student.modules())


def test_unit_dropping_refuses_what_it_cannot_do(tmp_path):
    from distill.quantization import Int8QAT

    with pytest.raises(ValueError, match=r"probability must be in \(0, 1\)"):
        UnitDropping(probability=1.0)
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        UnitDropping(kinds=["conv"])
    with pytest.raises(ValueError, match=r"exclude: \['nope'\] are not removable units"):
        _method(tmp_path, unit_dropping=UnitDropping(exclude=["nope"]))
    pytest.importorskip("torchao")
    with pytest.raises(ValueError, match=r"\['quantize'\] do not combine"):
        _method(tmp_path, unit_dropping=UnitDropping(), quantize=Int8QAT())
