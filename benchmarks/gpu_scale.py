"""GPU evidence at real scale in one short session: step time, samples/s and peak memory of the methods at the
sizes configs/sd15 (and configs/sd3, configs/flux) train at, and Lightning's FSDP strategy through `distill fit`
with checkpoint and resume.

Items, in priority order (each written to the JSON as soon as it finishes; an item that would start after
``--budget-s`` is recorded as skipped, one that fails records its error and the next runs):

1. ``sd15_kd_bk_small``, ``sd15_kd_bk_small_ckpt``: KD of an SD-1.5-shaped teacher (the public UNet config, random
   weights, bf16) into BK-SDM-Small at 512 px, batch 64 as configs/sd15/kd_bk_small.yaml, bf16 autocast, AdamW; gradient
   checkpointing off / on.
2. ``sd15_lcm``, ``sd15_lcm_ckpt``: consistency distillation, the teacher's UNet plus LCM's guidance embedding as the
   student, batch 12 as configs/sd15/lcm.yaml, CFG inside the teacher's solver step.
3. ``sd15_kd_efficient``: KD into the efficient SD UNet (``efficient_unet_sd``), batch 64.
4. ``fsdp_resume``: ``distill fit`` of configs/sd15 KD and LCM on the tiny offline pipeline with
   ``--trainer.strategy=fsdp`` (world size 1 on one GPU: the code path, the teacher kept out of the sharded
   optimizer, checkpointing and resume, not sharding itself), then a resumed fit from its last checkpoint; the
   resumed run must continue from the saved step.
5. ``sd15_dmd2``: one DMD2 generator update and one critic update (fake score = a float32 copy of the teacher's UNet),
   batch 8 as configs/sd15/dmd2.yaml.
6. ``sd3_kd``, ``flux_kd``: KD of SD3-medium- and FLUX.1-dev-shaped transformers (public configs, random bf16
   weights) into their depth-pruned students at 1024 px, batch 1, gradient checkpointing on.

Timings are medians of ``--steps`` timed steps after ``--warmup`` (with their min and max), synchronised;
``torch.cuda.max_memory_allocated`` is reset before each item. ``--smoke`` runs the same items at tiny sizes on the
CPU (make test-slow runs it; Lightning refuses FSDP on a CPU accelerator, so there the fit runs with the default
strategy and says so).

    python benchmarks/gpu_scale.py --out OUT [--budget-s 420] [--only ITEM ...] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

SD15_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
FLOW_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
# --smoke: SD-1.5's block layout (from flops_sd15's config) at toy widths
TINY_SD_OVERRIDES = {
    "sample_size": 8,
    "block_out_channels": [8, 16, 16, 16],
    "cross_attention_dim": 8,
    "attention_head_dim": 4,
    "norm_num_groups": 4,
}


class Context:
    """Where and at what size the items run: the GPU at the configs' sizes, or the CPU at tiny ones (--smoke)."""

    def __init__(self, *, smoke: bool, steps: int, warmup: int, out: Path) -> None:
        self.smoke = smoke
        self.device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
        self.steps, self.warmup, self.out = steps, warmup, out

    def batch(self, configured: int) -> int:
        return 2 if self.smoke else configured

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# -- networks ------------------------------------------------------------------------------------------------------
def sd15_teacher(ctx: Context):
    from diffusers import UNet2DConditionModel
    from flops_sd15 import SD15_UNET

    from teachers import DiffusionTeacher

    config = {**SD15_UNET, **TINY_SD_OVERRIDES} if ctx.smoke else SD15_UNET
    with torch.device(ctx.device):
        unet = UNet2DConditionModel(**config).to(torch.bfloat16)
    teacher = DiffusionTeacher(unet, SD15_SCHEDULER, dtype="bfloat16")
    teacher.set_uncond(torch.zeros(1, 77, int(config["cross_attention_dim"]), device=ctx.device))
    return teacher


def transformer_teacher(ctx: Context, family: str):
    import diffusers
    from flops_transformers import FLUX_DEV, SD3_MEDIUM

    from teachers import DiffusionTeacher

    config = dict(SD3_MEDIUM if family == "sd3" else FLUX_DEV)
    name = config.pop("_class_name")
    if ctx.smoke:
        config.update(num_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32)
        config.update(pooled_projection_dim=16)
        if family == "sd3":
            config.update(caption_projection_dim=32, sample_size=8, pos_embed_max_size=8)
        else:
            config.update(num_single_layers=2, axes_dims_rope=[4, 6, 6])
    with torch.device(ctx.device):
        net = getattr(diffusers, name)(**config).to(torch.bfloat16)
    teacher = DiffusionTeacher(net, FLOW_SCHEDULER, dtype="bfloat16", sample_size=8 if ctx.smoke else 128)
    tokens = text_tokens(ctx, family)
    teacher.set_uncond(  # the empty prompt's shape (caption dropout swaps it in)
        {
            "encoder_hidden_states": torch.zeros(1, tokens, config["joint_attention_dim"], device=ctx.device),
            "pooled_projections": torch.zeros(1, config["pooled_projection_dim"], device=ctx.device),
        }
    )
    return teacher


def text_tokens(ctx: Context, family: str) -> int:
    """Prompt tokens as the pipelines encode them: SD3's 77 CLIP + 256 T5, FLUX's 512 T5 (8 in --smoke)."""
    return 8 if ctx.smoke else (77 + 256 if family == "sd3" else 512)


def latent_batch(ctx: Context, teacher, batch: int) -> dict[str, torch.Tensor]:
    size, channels = teacher.sample_size, teacher.in_channels
    out = {"latents": torch.randn(batch, channels, size, size, device=ctx.device)}
    if teacher.transformer_family is None:
        width = int(teacher.unet.config.cross_attention_dim)
        out["prompt_embeds"] = torch.randn(batch, 77, width, device=ctx.device)
    else:
        cond = teacher.dummy_cond(batch, device=ctx.device)
        tokens = text_tokens(ctx, teacher.transformer_family)
        out["prompt_embeds"] = torch.randn(
            batch, tokens, cond["encoder_hidden_states"].shape[-1], device=ctx.device
        )
        out["pooled_projections"] = torch.randn_like(cond["pooled_projections"])
    return out


# -- timing --------------------------------------------------------------------------------------------------------
def timed_steps(ctx: Context, step: Callable[[], None], batch: int) -> dict:
    """Median, min and max seconds of ``ctx.steps`` calls of ``step`` after ``ctx.warmup``; samples/s; peak memory."""
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(ctx.warmup + ctx.steps):
        ctx.sync()
        start = time.perf_counter()
        step()
        ctx.sync()
        if i >= ctx.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "batch": batch,
        "step_s_median": median,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "samples_per_s": batch / median,
        "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30 if ctx.device.type == "cuda" else None),
        "timed_steps": len(times),
    }


def train_step(method, batch: dict, losses: Callable | None = None) -> Callable[[], None]:
    """One optimizer step of ``method``'s trainable parameters on ``batch`` with bf16 autocast (on the GPU)."""
    params = [p for p in method.trainable_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    device = batch["latents"].device
    losses = losses or method.training_losses

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = losses(batch)["loss"]
        loss.backward()
        optimizer.step()

    return step


# -- items ---------------------------------------------------------------------------------------------------------
def sd15_kd(ctx: Context, *, student_name: str, checkpointing: bool) -> dict:
    import students
    from distill import KnowledgeDistillation

    teacher = sd15_teacher(ctx)
    if student_name == "efficient_unet_sd" and ctx.smoke:
        student = students.create_student(
            student_name,
            teacher=teacher,
            block_out_channels=[8, 16, 16, 16],
            norm_num_groups=4,
            attention_head_dim=4,
        )
    else:
        student = students.create_student(student_name, teacher=teacher)
    method = KnowledgeDistillation(
        teacher, student.to(ctx.device), gradient_checkpointing=checkpointing, init_from_teacher=True
    ).to(ctx.device)
    batch = latent_batch(ctx, teacher, ctx.batch(64))
    result = timed_steps(ctx, train_step(method, batch), batch["latents"].shape[0])
    return {
        **result,
        "student": student_name,
        "student_parameters": sum(p.numel() for p in student.parameters()),
    }


def sd15_lcm(ctx: Context, *, checkpointing: bool) -> dict:
    from distill import ConsistencyDistillation

    teacher = sd15_teacher(ctx)
    # without diffusers' private keys: "_use_default_values" would make from_config drop time_cond_proj_dim
    config = {k: v for k, v in teacher.unet.config.items() if not k.startswith("_")}
    config["time_cond_proj_dim"] = 256
    student = type(teacher.unet).from_config(config).to(ctx.device)
    method = ConsistencyDistillation(
        teacher,
        student,
        guidance_min=6.0,
        guidance_max=16.0,
        gradient_checkpointing=checkpointing,
        init_from_teacher=True,
    ).to(ctx.device)
    batch = latent_batch(ctx, teacher, ctx.batch(12))
    return timed_steps(ctx, train_step(method, batch), batch["latents"].shape[0])


def sd15_dmd2(ctx: Context) -> dict:
    from distill import DistributionMatchingDistillation

    teacher = sd15_teacher(ctx)
    student = copy.deepcopy(teacher.unet).float().requires_grad_(True)
    method = DistributionMatchingDistillation(
        teacher,
        student,
        guidance_scale=1.75,
        update_ratio=10,
        gan_feature="mid_block",
        gradient_checkpointing=True,
    ).to(ctx.device)
    batch = latent_batch(ctx, teacher, ctx.batch(8))
    n = batch["latents"].shape[0]
    generator = timed_steps(ctx, train_step(method, batch, method.generator_losses), n)
    critic_params = [p for p in method.critic_parameters() if p.requires_grad]
    critic_opt = torch.optim.AdamW(critic_params, lr=1e-6)

    def critic_step() -> None:
        critic_opt.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.device.type == "cuda"):
            loss = method.critic_losses(batch)["loss"]
        loss.backward()
        critic_opt.step()

    critic = timed_steps(ctx, critic_step, n)
    return {"generator_update": generator, "critic_update": critic}


def transformer_kd(ctx: Context, *, family: str) -> dict:
    from distill import KnowledgeDistillation
    from students.transformer import depth_pruned_transformer

    teacher = transformer_teacher(ctx, family)
    student = depth_pruned_transformer(teacher, every=2).float()
    kwargs = {"guidance_min": 1.0, "guidance_max": 5.0} if family == "flux" else {}
    method = KnowledgeDistillation(
        teacher, student, gradient_checkpointing=True, init_from_teacher=False, **kwargs
    )
    method = method.to(ctx.device)
    batch = latent_batch(ctx, teacher, 1)
    result = timed_steps(ctx, train_step(method, batch), 1)
    return {**result, "student_parameters": sum(p.numel() for p in student.parameters())}


def fsdp_resume(ctx: Context) -> dict:
    """distill fit with FSDP (the default strategy in --smoke) for 2 steps, then resumed for 2 more."""
    from distill.tiny_pipeline import build_tiny_sd, write_caption_folder

    work = Path(tempfile.mkdtemp(prefix="fsdp_", dir=ctx.out))
    pipeline, captions = build_tiny_sd(work / "pipe"), write_caption_folder(work / "caps")
    strategy = "auto" if ctx.device.type == "cpu" else "fsdp"
    accelerator = "cpu" if ctx.device.type == "cpu" else "gpu"
    out: dict = {"strategy": strategy, "world_size": 1}
    for name, config, student_key in (("kd", "kd_bk_small", "teacher"), ("lcm", "lcm", "path")):
        base = [
            sys.executable, "-m", "distill.cli", "fit",
            "-c", str(ROOT / "configs" / "sd15" / f"{config}.yaml"),
            "-c", str(ROOT / "configs" / "sd15" / "cpu_smoke.yaml"),
            f"--model.init_args.teacher.init_args.path={pipeline}",
            f"--model.init_args.student.init_args.{student_key}={pipeline}",
            f"--data.init_args.root={captions}", "--data.init_args.image_size=16",
            "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
            f"--trainer.accelerator={accelerator}", f"--trainer.strategy={strategy}",
            f"--trainer.logger.init_args.save_dir={work / 'runs'}", f"--trainer.logger.init_args.name={name}",
            "--trainer.enable_progress_bar=false",
        ]  # fmt: skip
        first = subprocess.run(
            [*base, "--trainer.max_steps=2", "--trainer.logger.init_args.version=0"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        ckpts = sorted(glob.glob(str(work / "runs" / name / "version_0" / "checkpoints" / "*.ckpt")))
        entry: dict = {"first_returncode": first.returncode, "checkpoints": [Path(c).name for c in ckpts]}
        if first.returncode != 0 or not ckpts:
            entry["error"] = first.stderr[-3000:]
            out[name] = entry
            continue
        last = next((c for c in ckpts if c.endswith("last.ckpt")), ckpts[-1])
        saved_step = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])
        resumed = subprocess.run(  # a new run folder (version_1) resuming version_0's checkpoint
            [*base, "--trainer.max_steps=4", "--trainer.logger.init_args.version=1", f"--ckpt_path={last}"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        final = sorted(glob.glob(str(work / "runs" / name / "version_1" / "checkpoints" / "last*.ckpt")))
        final_step = (
            int(torch.load(final[-1], map_location="cpu", weights_only=False)["global_step"])
            if final
            else None
        )
        entry.update(
            saved_step=saved_step,
            resumed_returncode=resumed.returncode,
            final_step=final_step,
            resumed_from_saved_step=resumed.returncode == 0 and final_step == 4 and saved_step == 2,
        )
        if resumed.returncode != 0:
            entry["error"] = resumed.stderr[-3000:]
        out[name] = entry
    return out


ITEMS: dict[str, Callable[[Context], dict]] = {
    "sd15_kd_bk_small": lambda ctx: sd15_kd(ctx, student_name="bk_small", checkpointing=False),
    "sd15_kd_bk_small_ckpt": lambda ctx: sd15_kd(ctx, student_name="bk_small", checkpointing=True),
    "sd15_lcm": lambda ctx: sd15_lcm(ctx, checkpointing=False),
    "sd15_lcm_ckpt": lambda ctx: sd15_lcm(ctx, checkpointing=True),
    "sd15_kd_efficient": lambda ctx: sd15_kd(ctx, student_name="efficient_unet_sd", checkpointing=True),
    "fsdp_resume": fsdp_resume,
    "sd15_dmd2": sd15_dmd2,
    "sd3_kd": lambda ctx: transformer_kd(ctx, family="sd3"),
    "flux_kd": lambda ctx: transformer_kd(ctx, family="flux"),
}


def environment(ctx: Context) -> dict:
    info = {"device": str(ctx.device), "torch": torch.__version__, "smoke": ctx.smoke}
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30)
    return info


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_scale.json and the FSDP runs")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no item after this many seconds")
    parser.add_argument(
        "--only", nargs="*", choices=sorted(ITEMS), help="run these items (default: all, in order)"
    )
    parser.add_argument("--smoke", action="store_true", help="the same items at tiny sizes on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per item (default 5; smoke 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; smoke 1)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        smoke=args.smoke,
        steps=args.steps or (2 if args.smoke else 5),
        warmup=args.warmup if args.warmup is not None else (1 if args.smoke else 2),
        out=args.out,
    )
    from distill.provenance import provenance

    start = time.perf_counter()
    report: dict = {"environment": environment(ctx), "items": {}, "meta": provenance()}
    path = args.out / "gpu_scale.json"
    for name in args.only or list(ITEMS):
        elapsed = time.perf_counter() - start
        if elapsed > args.budget_s:
            report["items"][name] = {"skipped": f"budget of {args.budget_s:.0f} s spent ({elapsed:.0f} s)"}
        else:
            began = time.perf_counter()
            try:
                report["items"][name] = ITEMS[name](ctx)
            except Exception as error:  # one item's failure (e.g. out of memory) must not lose the others
                report["items"][name] = {"error": repr(error), "traceback": traceback.format_exc()[-3000:]}
            report["items"][name]["item_s"] = time.perf_counter() - began
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(name, json.dumps(report["items"][name], default=str)[:400], flush=True)
    return report


if __name__ == "__main__":
    main()
