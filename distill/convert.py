"""``distill convert``: on-device files (ONNX, ExecuTorch; fp32, int8, 4-bit weights) for an export folder or a
shipped student, without its training run.

distill convert --model builtin:digits_consistency --out exports/consistency_et --format executorch --quantize int8
distill sample --model exports/consistency_et --runtime executorch --int8 --out grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from distill.export import FORMATS, QUANTIZE
    from distill.sample import positive_int

    parser = argparse.ArgumentParser(
        prog="distill convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        required=True,
        help="an export folder (unet/ + scheduler/) or builtin:NAME (a shipped student)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the folder to write (a copy plus the new files)"
    )
    parser.add_argument("--format", choices=[f for f in FORMATS if f != "diffusers"], required=True)
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default=None,
        help="int8: static int8 weights and activations (the folder's quantization-aware scales, else calibrated "
        "post-training); int4w: 4-bit linear weights (ExecuTorch only)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=1000,
        help="digits students: samples for the FID/accuracy of each file in the card (0 skips it)",
    )
    parser.add_argument(
        "--max-batch", type=positive_int, default=16, help="the ExecuTorch programs' largest batch"
    )
    parser.add_argument("--onnx-opset", type=positive_int, default=18)
    parser.add_argument(
        "--int4w-group-size",
        type=int,
        default=32,
        help="inputs sharing one 4-bit weight scale (0: one per output channel)",
    )
    args = parser.parse_args(argv)
    if args.eval_samples < 0:
        parser.error(f"--eval-samples must be >= 0, got {args.eval_samples}")
    if args.int4w_group_size < 0:
        parser.error(f"--int4w-group-size must be >= 0 (0: per output channel), got {args.int4w_group_size}")
    from distill.export import convert_folder

    try:
        path = convert_folder(
            args.model,
            args.out,
            format=args.format,
            quantize=args.quantize,
            overwrite=args.overwrite,
            onnx_opset=args.onnx_opset,
            eval_samples=args.eval_samples,
            max_batch=args.max_batch,
            int4w_group_size=args.int4w_group_size,
        )
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as error:
        parser.error(str(error))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
