"""Slow reliability tests (make test-slow), through the ``distill`` console script on the shipped digits configs:

* two processes (DDP over gloo) against one with the same global batch, for KD, progressive, consistency and
  distribution-matching (DMD2) distillation, on the DDPM-family digits teacher and on the flow-matching one (configs/digits_flow): per-step losses and final weights agree within 1e-4 relative;
* a run killed mid-training (SIGKILL, and SIGTERM) resumes from its last checkpoint and ends with exactly the
  uninterrupted run's weights, EMA, target network, optimizer state and progressive round (bit-exact on CPU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DISTILL = str(Path(sys.executable).parent / "distill")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
CONFIGS = {
    "kd": "digits/kd_efficient.yaml",
    "progressive": "digits/progressive.yaml",
    "consistency": "digits/consistency.yaml",
    # the same methods on the flow-matching teacher (builtin:digits_flow)
    "flow_kd": "digits_flow/kd.yaml",
    "flow_progressive": "digits_flow/progressive.yaml",
    "flow_consistency": "digits_flow/consistency.yaml",
    # distribution matching: two optimizers under manual optimisation (both players, counters, critic head)
    "dmd2": "digits/dmd2.yaml",
    "flow_dmd2": "digits_flow/dmd2.yaml",
}


def _args(method: str, tmp_path: Path, name: str, *extra: str) -> list[str]:
    args = [
        "fit",
        "-c",
        str(ROOT / "configs" / CONFIGS[method]),
        "--trainer.limit_val_batches=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.logger.init_args.version=0",
        *extra,
    ]
    if method.endswith("progressive"):  # short rounds so the runs cross round boundaries
        args.append("--model.init_args.round_steps=4")
    return args


def _run(args: list[str], cwd: Path) -> None:
    out = subprocess.run([DISTILL, *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=ENV)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def _losses(run: Path) -> dict[int, float]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("train/loss")}


def _trained_state(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_two_processes_match_one_with_the_same_global_batch(method, tmp_path):
    common = ["--trainer.max_steps=4"]
    _run(_args(method, tmp_path, "one", *common, "--data.init_args.batch_size=16"), tmp_path)
    _run(
        _args(
            method,
            tmp_path,
            "two",
            *common,
            "--data.init_args.batch_size=8",
            # DMD2's backward passes each reach one player's parameters: DDP must find the unused ones
            "--trainer.strategy=" + ("ddp_find_unused_parameters_true" if method.endswith("dmd2") else "ddp"),
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",
        ),
        tmp_path,
    )
    one, two = tmp_path / "one" / "version_0", tmp_path / "two" / "version_0"
    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) and len(l1) == 4, (l1, l2)
    for step in l1:
        assert abs(l1[step] - l2[step]) <= 1e-4 * abs(l1[step]), (step, l1[step], l2[step])
    s1 = _trained_state(one / "checkpoints" / "last.ckpt")
    s2 = _trained_state(two / "checkpoints" / "last.ckpt")
    assert s1.keys() == s2.keys()
    assert not [k for k in s1 if k.startswith("teacher.")]
    trained = [k for k in s1 if k.startswith("student.") and s1[k].is_floating_point()]
    assert trained
    worst = max(_relative(s2[k], s1[k]) for k in s1 if s1[k].is_floating_point())
    assert worst <= 1e-4, worst


CHECKPOINTS = (
    "trainer:\n"
    "  callbacks:\n"
    "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
    "      init_args: {save_last: true, every_n_train_steps: 5, save_top_k: -1, save_on_exception: true}\n"
)
MAX_STEPS = 30


def _reference(method: str, tmp_path: Path) -> Path:
    _run(_args(method, tmp_path, "reference", *_resume_common(tmp_path)), tmp_path)
    return tmp_path / "reference" / "version_0" / "checkpoints" / "last.ckpt"


def _resume_common(tmp_path: Path) -> list[str]:
    override = tmp_path / "checkpoints.yaml"
    override.write_text(CHECKPOINTS)
    return ["-c", str(override), f"--trainer.max_steps={MAX_STEPS}", "--data.init_args.batch_size=16"]


def _interrupt(method: str, tmp_path: Path, sig: signal.Signals) -> Path:
    """Start a run, send ``sig`` once its step-10 checkpoint exists, and return its last checkpoint (step 5 if
    the signal landed between the two files of step 10, which is the point: last.ckpt is never half-written)."""
    args = _args(method, tmp_path, "interrupted", *_resume_common(tmp_path))
    folder = tmp_path / "interrupted" / "version_0" / "checkpoints"
    proc = subprocess.Popen(
        [DISTILL, *args], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600
    while not list(folder.glob("*step=10.ckpt")):
        assert proc.poll() is None, (
            f"the run ended before its step-10 checkpoint: {proc.stderr.read()[-3000:]}"
        )
        assert time.monotonic() < deadline, "no step-10 checkpoint in 10 minutes"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=300)
    last = folder / "last.ckpt"
    step = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    assert 5 <= step < MAX_STEPS, f"the run was not interrupted mid-training (last checkpoint at {step})"
    return last


def _assert_same_final_state(resumed: Path, reference: Path) -> None:
    a = torch.load(resumed, weights_only=True, map_location="cpu")
    b = torch.load(reference, weights_only=True, map_location="cpu")
    assert a["global_step"] == b["global_step"] == MAX_STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in b["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:5]}"
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for key, value in sb["state"].items():
            for name, tensor in value.items():
                assert torch.equal(torch.as_tensor(sa["state"][key][name]), torch.as_tensor(tensor)), (
                    key,
                    name,
                )
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for key in ("progressive_round", "nonfinite_steps", "distribution_matching"):
        assert a.get(key) == b.get(key), key


@pytest.mark.parametrize(
    "method, sig",
    [
        ("kd", signal.SIGKILL),
        ("progressive", signal.SIGKILL),
        ("consistency", signal.SIGKILL),
        ("consistency", signal.SIGTERM),
        ("flow_kd", signal.SIGKILL),
        ("flow_progressive", signal.SIGKILL),
        ("flow_consistency", signal.SIGKILL),
        ("dmd2", signal.SIGKILL),
        ("flow_dmd2", signal.SIGKILL),
    ],
)
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(method, sig, tmp_path):
    reference = _reference(method, tmp_path)
    last = _interrupt(method, tmp_path, sig)
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert not [k for k in state["state_dict"] if k.startswith("teacher.")], (
        "a checkpoint holds teacher tensors"
    )
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"], (
        "the data position is not in the checkpoint"
    )
    assert any("RNGStateCallback" in str(k) for k in state["callbacks"]), (
        "the RNG state is not in the checkpoint"
    )
    _run(
        _args(method, tmp_path, "resumed", *_resume_common(tmp_path), f"--ckpt_path={last}"),
        tmp_path,
    )
    _assert_same_final_state(tmp_path / "resumed" / "version_0" / "checkpoints" / "last.ckpt", reference)
