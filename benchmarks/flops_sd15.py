"""MACs of the Stable Diffusion v1.x UNet at 512x512, counted offline from its known config (random weights).

Run:  OMP_NUM_THREADS=1 python benchmarks/flops_sd15.py [--output benchmarks/results/flops_sd15.json] [--no-check]

Also counts the BK-SDM students built from it (``bk_small``, ``bk_tiny``); docs/cost.md renders the result and
``benchmarks/teacher_reuse.py`` reads its MACs.

Latent 64x64x4, 77x768 text embeddings, batch 1. The SD-v1.4 and v1.5 UNets share this architecture
(CompVis/stable-diffusion-v1-4 and runwayml/stable-diffusion-v1-5, ``unet/config.json``).

Sanity check: BK-SDM (Kim et al. 2023, "BK-SDM: A Lightweight, Fast, and Cheap Version of Stable Diffusion",
arXiv:2305.15798, Table 1) reports 339G MACs per forward for the SD-v1.4 UNet at 512x512, measured with thop at
batch 1 (Nota-NetsPresso/BK-SDM : src/count_macs_params.py). thop counts MACs of hooked nn.Module layers (conv,
linear, ...) and none of the functional attention products, so it should sit near our conv + linear count.

"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from distill.flops import (
    FlopReport,
    count_macs,
    example_inputs,
    flop_counter_macs,
    fmt_count,
    network_cost,
)
from distill.provenance import provenance
from students.bk import bk_small, bk_tiny

SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "act_fn": "silu",
}
BK_SDM_SD14_MACS = 339e9
ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="sampling steps for MACs per sample")
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "results" / "flops_sd15.json",
        help="write the report as JSON here",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the FlopCounterMode cross-check")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    torch.manual_seed(0)
    net = UNet2DConditionModel(**SD15_UNET).eval()
    built = time.perf_counter() - start
    inputs = example_inputs(net, text_len=77)
    assert inputs.encoder_hidden_states is not None and inputs.encoder_hidden_states.shape == (1, 77, 768)

    start = time.perf_counter()
    cost = network_cost(net, role="sd15_unet", inputs=inputs, steps=args.steps, cfg_factor=2)
    counted = time.perf_counter() - start
    macs = cost.macs
    summary = {
        "config": SD15_UNET,
        "inputs": {"sample": [1, 4, 64, 64], "encoder_hidden_states": [1, 77, 768]},
        "parameters": macs.parameters,
        "macs_per_forward": macs.total,
        "macs_per_forward_without_attention": macs.dense,
        "conv_plus_linear": macs.by_category["conv"] + macs.by_category["linear"],
        "by_category": macs.by_category,
        "macs_per_sample": cost.macs_per_sample,
        "steps": args.steps,
        "cfg_factor": 2,
        "bk_sdm_reported_sd14": BK_SDM_SD14_MACS,
        "ratio_to_bk_sdm": macs.total / BK_SDM_SD14_MACS,
        "ratio_without_attention_to_bk_sdm": macs.dense / BK_SDM_SD14_MACS,
        "uncounted_ops": macs.uncounted,
        "seconds": {"build": round(built, 1), "count": round(counted, 1)},
        "torch_threads": torch.get_num_threads(),
    }
    if not args.no_check:
        start = time.perf_counter()
        summary["flop_counter_mode"] = flop_counter_macs(net, inputs)
        summary["seconds"]["check"] = round(time.perf_counter() - start, 1)
        ref = summary["flop_counter_mode"]
        summary["flop_counter_agrees"] = (
            ref["conv"] == macs.by_category["conv"]
            and ref["linear+matmul"] == macs.by_category["linear"] + macs.by_category["matmul"]
            and ref["attention"] == macs.attention
        )

    summary["students"] = {}
    for name, build in (("bk_small", bk_small), ("bk_tiny", bk_tiny)):
        student = build(net).eval()
        counted_student = count_macs(student, example_inputs(student, text_len=77))
        summary["students"][name] = {
            "parameters": counted_student.parameters,
            "macs_per_forward": counted_student.total,
        }
        del student

    note = (
        f"BK-SDM (arXiv:2305.15798) reports {fmt_count(BK_SDM_SD14_MACS)} MACs per SD-v1.4 UNet forward at 512px "
        f"(thop, batch 1); ours: {fmt_count(macs.total)} with attention, {fmt_count(macs.dense)} without."
    )
    report = FlopReport(networks=(cost,), module_depth=1, notes=(note,))
    print(report.to_markdown())
    print()
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    if args.output is not None:
        record = {"summary": summary, "report": report.to_dict(), "meta": provenance()}
        args.output.write_text(json.dumps(record, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
