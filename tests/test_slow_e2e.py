"""Slow end-to-end runs (make test-slow): the console script, resume from a checkpoint, two-process DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import tiny_cond_unet
from test_methods_base import OutputMatching, _loader

from teachers import DiffusionTeacher

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DISTILL = str(Path(sys.executable).parent / "distill")


def _run(args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([DISTILL, *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_console_script_trains_checkpoints_and_resumes(tmp_path):
    override = tmp_path / "ckpt.yaml"
    override.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true, every_n_train_steps: 10}\n"
    )
    common = [
        "-c",
        str(ROOT / "configs/digits/teacher.yaml"),
        "-c",
        str(override),
        "--model.init_args.samples_per_class=1",
        "--model.init_args.sample_steps=2",
        "--trainer.val_check_interval=20",
        "--trainer.log_every_n_steps=5",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
    ]
    _run(["fit", *common, "--trainer.max_steps=20"], tmp_path)
    version = tmp_path / "digits_teacher" / "version_0"
    assert (version / "config.yaml").is_file()
    last = version / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 20
    assert any(k.startswith("ema.") for k in ckpt["state_dict"])
    events = list(version.glob("events.out.tfevents.*"))
    assert events, "TensorBoard event file missing"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(version), size_guidance={"images": 0})
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and "val/loss" in acc.Tags()["scalars"]
    assert "samples/model_2step" in acc.Tags()["images"]  # the EMA weights at 2 DDIM steps
    # resume to 30 steps from the last checkpoint (a new version folder; the old config is untouched)
    _run(["fit", *common, "--trainer.max_steps=30", f"--ckpt_path={last}"], tmp_path)
    resumed = sorted((tmp_path / "digits_teacher").glob("version_*/checkpoints/last.ckpt"))[-1]
    assert torch.load(resumed, weights_only=False)["global_step"] == 30


class TeacherGuard(L.Callback):
    """Fails the run in any process whose teacher tensors change or end up under DDP."""

    def on_fit_start(self, trainer, pl_module):
        self.before = {k: v.clone() for k, v in pl_module.teacher.state_dict().items()}

    def on_train_end(self, trainer, pl_module):
        for key, value in pl_module.teacher.state_dict().items():
            assert torch.equal(value, self.before[key]), f"teacher tensor {key} changed"
        wrapped = trainer.strategy.model
        ddp_params = {id(p) for p in wrapped.parameters() if p.requires_grad}
        assert not ddp_params & {id(p) for p in pl_module.teacher.parameters()}


def test_two_process_ddp_keeps_the_teacher_out(tiny_teacher_dir, tmp_path):
    teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    module = OutputMatching(teacher, tiny_cond_unet(seed=1), optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[TeacherGuard()],
    )
    trainer.fit(module, _loader(32))
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert ckpts
    state = torch.load(ckpts[0], weights_only=False)["state_dict"]
    assert not [k for k in state if k.startswith("teacher.")]
