"""Parameters and MACs of the SD3-medium and FLUX.1-dev transformers at 1024x1024, and of their transformer
students, counted from the public configs without materialising a weight (meta device + fake tensors).

Run:  OMP_NUM_THREADS=1 python benchmarks/flops_transformers.py [--output benchmarks/results/flops_transformers.json]

Configs are the ``transformer/config.json`` of stabilityai/stable-diffusion-3-medium-diffusers and
black-forest-labs/FLUX.1-dev, typed here (nothing is downloaded). Inputs as their pipelines give them at their
defaults: a 128x128 latent (1024 px through the 8x VAE; SD3's 16 channels patched 2x2, FLUX's packed 2x2 into 64),
SD3's 77 CLIP + 256 T5 tokens, FLUX's 512 T5 tokens, batch 1. Counted with torch.utils.flop_counter by category
(conv, linear+matmul, attention); ``distill flops``'s fvcore count equals it exactly on these architectures at
small size (tests/test_transformer_teachers.py). docs/students.md renders the result; the SD3/FLUX config
headers quote it.

Sanity check: the parameter counts are the published ones (SD3-medium 2.03B MMDiT parameters, FLUX.1-dev 11.9B).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from distill.flops import config_macs, meta_network
from distill.provenance import provenance

SD3_MEDIUM = {
    "_class_name": "SD3Transformer2DModel",
    "attention_head_dim": 64,
    "caption_projection_dim": 1536,
    "in_channels": 16,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 24,
    "out_channels": 16,
    "patch_size": 2,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
    "sample_size": 128,
}
FLUX_DEV = {
    "_class_name": "FluxTransformer2DModel",
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": True,
    "in_channels": 64,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 19,
    "num_single_layers": 38,
    "patch_size": 1,
    "pooled_projection_dim": 768,
}
TEACHERS = {"sd3_medium": SD3_MEDIUM, "flux_dev": FLUX_DEV}
STUDENTS = {
    "sd3_medium": ("sd3_depth_half", "sd3_narrow_half"),
    "flux_dev": ("flux_depth_half", "flux_narrow_half"),
}
SAMPLE_SIZE = 128  # latent pixels: 1024 px through the 8x VAE
ROOT = Path(__file__).resolve().parent


def _count(net: torch.nn.Module) -> dict:
    return config_macs(net, sample_size=SAMPLE_SIZE)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "flops_transformers.json")
    parser.add_argument(
        "--only", nargs="*", choices=sorted(TEACHERS), help="count these teachers (default: all)"
    )
    args = parser.parse_args(argv)

    import students

    summary: dict = {}
    for name in args.only or sorted(TEACHERS):
        config = TEACHERS[name]
        teacher = meta_network(config["_class_name"], config)
        entry = {"config": config, "teacher": _count(teacher), "students": {}}
        for student_name in STUDENTS[name]:
            with torch.device("meta"):  # the builders' from_config allocates on the default device
                student = students.create_student(student_name, teacher=dict(config))
            counted = _count(student)
            counted["config"] = {k: v for k, v in dict(student.config).items() if not k.startswith("_")}
            counted["recipe"] = student.student_info.recipe
            counted["parameter_ratio"] = counted["parameters"] / entry["teacher"]["parameters"]
            counted["mac_ratio"] = counted["total"] / entry["teacher"]["total"]
            entry["students"][student_name] = counted
        summary[name] = entry
        print(
            name, json.dumps({k: v for k, v in entry.items() if k != "config"}, indent=1, default=str)[:2000]
        )
    record = {
        "summary": summary,
        "inputs": {"sample_size": SAMPLE_SIZE, "batch": 1, "text_tokens": {"sd3": 77 + 256, "flux": 512}},
        "meta": provenance(),
    }
    if args.output is not None:
        existing = json.loads(args.output.read_text()) if args.output.is_file() and args.only else None
        if existing:  # --only refreshes some teachers and keeps the others
            record["summary"] = {**existing["summary"], **summary}
        args.output.write_text(json.dumps(record, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
