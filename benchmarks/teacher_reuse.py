"""Teacher output reuse: what the library computes once from the frozen teacher instead of every time.

Run:  OMP_NUM_THREADS=2 python benchmarks/teacher_reuse.py [--repeats 3] [--steps 6]
Writes ``benchmarks/results/teacher_reuse.{json,md}``.

1. Text-to-image training data: the teacher's VAE latents and text embeddings of a fixed caption folder never
   change, so ``distill precompute`` encodes them once into shards (``LatentShardDataModule``) instead of encoding
   every batch (``CaptionFolderDataModule``). Measured: a KD training step (tiny SD-shaped pipeline from
   ``distill.tiny_pipeline``, 64 px images, BK-Small student, batch 16) on each data module, alternated blocks,
   medians. The tiny VAE and text encoder are far cheaper relative to their UNet than SD's, so the SD-scale
   estimate below (MACs of SD's VAE encoder and CLIP ViT-L text encoder, counted from their configs with random
   weights, against a KD step's UNet work) is what predicts the saving there.
2. Validation sample grids: the teacher's half (fixed noise and labels) is the same at every validation, so it
   is sampled once per run (``DistillationModule.teacher_samples``). Measured: one ``trainer.validate`` of the
   digits KD method (40-image grid, teacher 25 DDIM steps with guidance) with the cache emptied first vs reused,
   alternated; the speed-up is the median of the per-pair ratios.

Where a method allows no reuse: every training step's teacher call sees fresh noise, timesteps and (for
progressive and consistency distillation) the student's own trajectory points, so training-time teacher outputs
are never cached.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import tables
import torch
from overhead import timed_fit
from paired import paired_ratio
from torch import nn

from distill.provenance import provenance

ROOT = Path(__file__).resolve().parent
FLOPS_SD15 = (
    ROOT / "results" / "flops_sd15.json"
)  # benchmarks/flops_sd15.py: SD-1.5 UNet and BK-SDM students, 512 px
SD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
}
CLIP_L_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}


# -- 1. text-to-image data: encoded every batch vs precomputed shards ---------------------------------------
def t2i_step_times(*, steps: int, repeats: int, warmup: int) -> dict:
    from distill.data_t2i import CaptionFolderDataModule, LatentShardDataModule, precompute
    from distill.methods.knowledge import KnowledgeDistillation
    from distill.tiny_pipeline import build_tiny_sd, write_caption_folder
    from students.bk import bk_small
    from teachers import DiffusionTeacher

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipeline = build_tiny_sd(tmp / "pipeline", image_size=64)
        captions = write_caption_folder(tmp / "captions", num_images=64, image_size=64)
        teacher = DiffusionTeacher.from_pretrained(pipeline)
        folder = CaptionFolderDataModule(captions, image_size=64, batch_size=16)
        shards = LatentShardDataModule(
            precompute(teacher, folder, tmp / "shards", dtype="float32"), batch_size=16
        )
        modules = {}
        for name in ("folder", "shards"):
            torch.manual_seed(0)
            modules[name] = KnowledgeDistillation(
                teacher, bk_small(pipeline), samples_per_class=0, evaluator=None
            )
        data = {"folder": folder, "shards": shards}
        times: dict[str, list[float]] = {name: [] for name in data}
        for round_ in range(repeats):
            for name in data:
                t, _ = timed_fit(modules[name], steps, warmup if round_ == 0 else 1, datamodule=data[name])
                times[name] += t
    folder_ms = 1000 * statistics.median(times["folder"])
    shards_ms = 1000 * statistics.median(times["shards"])
    speedup, spread = paired_ratio(times["folder"], times["shards"])
    return {"folder_ms": folder_ms, "shards_ms": shards_ms, "speedup": speedup, "speedup_q1_q3": spread}


class _EncodeOnly(nn.Module):
    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, images):
        return self.vae.encode(images).latent_dist.mean


class _TextOnly(nn.Module):
    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids):
        return self.encoder(ids).last_hidden_state


def sd_scale_estimate() -> dict:
    """MACs per training sample at SD scale: encoding (VAE encoder at 512 px + CLIP ViT-L text encoder) against
    one KD step's UNet work (SD-1.5 teacher forward + BK-Small student forward and backward, taken as 3x its
    forward)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from distill.flops import count_macs

    torch.manual_seed(0)
    vae = AutoencoderKL(**SD_VAE).eval()
    vae_macs = float(count_macs(_EncodeOnly(vae), (torch.zeros(1, 3, 512, 512),)).total)
    del vae
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)).eval()
    text_macs = float(count_macs(_TextOnly(text), (torch.zeros(1, 77, dtype=torch.long),)).total)
    counted = json.loads(FLOPS_SD15.read_text())["summary"]
    unet_macs = counted["macs_per_forward"] + 3 * counted["students"]["bk_small"]["macs_per_forward"]
    encode = vae_macs + text_macs
    return {
        "vae_encoder_macs": vae_macs,
        "text_encoder_macs": text_macs,
        "kd_unet_macs": unet_macs,
        "encode_share": encode / (encode + unet_macs),
        "predicted_speedup": (encode + unet_macs) / unet_macs,
    }


# -- 2. validation grids: teacher sampled every validation vs once ------------------------------------------
def validation_times(*, repeats: int) -> dict:
    from distill.data import DigitsDataModule
    from distill.methods.knowledge import KnowledgeDistillation
    from students.efficient import efficient_unet_digits
    from teachers import DiffusionTeacher

    torch.manual_seed(0)
    teacher = DiffusionTeacher.from_pretrained("builtin:digits")
    module = KnowledgeDistillation(
        teacher, efficient_unet_digits(teacher="builtin:digits"), evaluator=None, samples_per_class=4
    )
    dm = DigitsDataModule(batch_size=64)
    times: dict[str, list[float]] = {"sampled": [], "reused": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu",
            logger=L.pytorch.loggers.TensorBoardLogger(tmp),
            limit_val_batches=1,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.validate(module, datamodule=dm, verbose=False)  # warm-up (fills the cache)
        for _ in range(repeats):
            for name in ("sampled", "reused"):
                if name == "sampled":
                    module._teacher_samples.clear()
                start = time.perf_counter()
                trainer.validate(module, datamodule=dm, verbose=False)
                times[name].append(time.perf_counter() - start)
    sampled, reused = (1000 * statistics.median(times[k]) for k in ("sampled", "reused"))
    paired, spread = paired_ratio(times["sampled"], times["reused"])
    return {"sampled_ms": sampled, "reused_ms": reused, "speedup": paired, "speedup_q1_q3": spread}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="alternated training blocks per data module")
    parser.add_argument("--val-repeats", type=int, default=5, help="alternated validations per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    t2i = t2i_step_times(steps=args.steps, repeats=args.repeats, warmup=args.warmup)
    print(json.dumps(t2i), flush=True)
    val = validation_times(repeats=args.val_repeats)
    print(json.dumps(val), flush=True)
    sd = sd_scale_estimate()
    print(json.dumps(sd), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "threads": torch.get_num_threads(),
        "t2i": t2i,
        "validation": val,
        "sd_scale": sd,
        "meta": provenance(),
    }
    (args.out / "teacher_reuse.json").write_text(json.dumps(result, indent=2) + "\n")
    print(tables.teacher_reuse(result))


if __name__ == "__main__":
    main()
