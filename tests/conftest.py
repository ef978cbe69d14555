"""Shared fixtures: tiny seeded diffusers models built from config, saved as real teacher folders."""

from __future__ import annotations

import os

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

os.environ.setdefault("PYTHONHASHSEED", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` and `make test-slow` run in parallel workers (pytest-xdist), which already use every core: one
    # intra-op thread each (and in the commands they start), since OpenMP threads spinning against another
    # worker's make tiny-model calls many times slower
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
elif "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_COND_UNET = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "cross_attention_dim": 16,
    "num_class_embeds": 11,
}

TINY_UNET2D = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "num_class_embeds": 11,
}

SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
    "clip_sample": False,
}


def tiny_cond_unet(seed: int = 0, **overrides) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**TINY_COND_UNET, **overrides})


def tiny_unet2d(seed: int = 0, **overrides) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY_UNET2D, **overrides})


def save_teacher_folder(path, unet, scheduler_config=None) -> None:
    unet.save_pretrained(path / "unet")
    DDPMScheduler(**(scheduler_config or SCHEDULER)).save_pretrained(path / "scheduler")


@pytest.fixture
def tiny_teacher_dir(tmp_path):
    """A pipeline-style folder (unet/ + scheduler/) holding a tiny seeded class-conditional teacher."""
    path = tmp_path / "teacher"
    save_teacher_folder(path, tiny_cond_unet(seed=0))
    return path


def random_digits_loader(n: int = 32, batch_size: int = 8):
    """Seeded random 8x8 'images' in [-1, 1] with labels 0..9: enough data for a method's training step."""
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 8, 8, generator=gen) * 2 - 1
    return DataLoader(TensorDataset(images, torch.arange(n) % 10), batch_size=batch_size)


def fit_config_one_step(config: str, tmp_path):
    """``distill fit -c configs/digits/CONFIG`` for one step into ``tmp_path``; returns (run folder, checkpoint)."""
    import shutil
    from pathlib import Path

    from distill.cli import main

    path = Path(__file__).resolve().parents[1] / "configs" / "digits" / config
    main(
        [
            "fit",
            "-c",
            str(path),
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.logger.init_args.name=fit",
            "--trainer.logger.init_args.version=0",
            "--trainer.enable_progress_bar=false",
        ]
    )
    run = tmp_path / "fit" / "version_0"
    ckpt = tmp_path / "one.ckpt"
    shutil.copy(next((run / "checkpoints").glob("*.ckpt")), ckpt)
    return run, ckpt


def cpu_trainer(max_steps: int, **overrides):
    """A quiet CPU Trainer for method tests: no logger, checkpoints, progress bar or validation."""
    import lightning as L

    options = dict(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    options.update(overrides)
    return L.Trainer(**options)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny SD-1.x-shaped pipeline folder and a 24-image caption folder, built offline once per session."""
    from distill.tiny_pipeline import build_tiny_sd, write_caption_folder

    root = tmp_path_factory.mktemp("tiny_sd")
    return build_tiny_sd(root / "pipeline"), write_caption_folder(root / "captions")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-model tests (restored after): these models are a few hundred kB, so
    threads only add synchronisation, and on a shared 2-core machine two spinning OpenMP threads made each tiny
    pipeline call tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory, tiny_sd):
    """A tiny SD3-shaped pipeline folder (two CLIPs + T5) and the caption folder of ``tiny_sd``."""
    from distill.tiny_pipeline import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("tiny_sd3") / "pipeline"), tiny_sd[1]


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory, tiny_sd):
    """A tiny FLUX-dev-shaped pipeline folder (CLIP + T5, guidance embedding) and the caption folder of ``tiny_sd``."""
    from distill.tiny_pipeline import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("tiny_flux") / "pipeline"), tiny_sd[1]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny offline CLIPModel folder (32 px images, 16-d embeddings) for CLIP score and CLIP-feature FID."""
    from distill.tiny_pipeline import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "clip")
