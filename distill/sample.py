"""``distill sample``: a PNG grid (and optionally one PNG per image) from an export folder or a run.

distill sample --model runs/export --labels 0 1 2 3 --steps 4 --seed 0 --out grid.png
distill sample --config RUN/config.yaml --ckpt RUN/checkpoints/last.ckpt --out grid.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _from_run(config: Path, ckpt: Path, work: Path):
    """Export the run's student to a temporary folder and load it as a pipeline (the same code path)."""
    from distill.export import export_module
    from distill.lightning_cli import module_from_config
    from distill.pipelines import ClassConditionalPipeline

    module = module_from_config(config)
    export_module(module, ckpt_path=ckpt, output=work, weights="ema" if module.ema is not None else "raw")
    return ClassConditionalPipeline.from_pretrained(work)


def runtime_model(directory: Path, runtime: str, *, int8: bool = False, int4w: bool = False):
    """The export folder's network in onnxruntime or ExecuTorch, as a model the samplers take; a missing file is
    named with the export command that writes it."""
    from distill.deploy import PTE_INT4W_NAME, PTE_INT8_NAME, PTE_NAME, QDQ_NAME

    if int4w:
        if runtime != "executorch":
            raise SystemExit(
                "distill sample: --int4w runs the ExecuTorch program (pass --runtime executorch)"
            )
        path = directory / "executorch" / PTE_INT4W_NAME
        if not path.is_file():
            raise SystemExit(
                f"distill sample: {path} does not exist; write it with `distill export ... --format executorch "
                "--quantize int4w` (or `distill convert ... --format executorch --quantize int4w`)"
            )
        from distill.deploy import executorch_model

        return executorch_model(directory, int4w=True)
    if runtime == "onnx":
        from distill.onnx_export import ONNX_NAME

        name = QDQ_NAME if int8 else ONNX_NAME
        fix = "--format onnx" + (" --quantize int8" if int8 else "")
        path = directory / "onnx" / name
    else:
        name = PTE_INT8_NAME if int8 else PTE_NAME
        fix = "--format executorch" + (" --quantize int8" if int8 else "")
        path = directory / "executorch" / name
    if not path.is_file():
        raise SystemExit(
            f"distill sample: {path} does not exist; export the run with `distill export ... {fix}`"
        )
    if runtime == "onnx":
        import json

        from distill.onnx_export import OnnxDenoiser
        from teachers import DiffusionTeacher

        config = json.loads((directory / "unet" / "config.json").read_text())
        from types import SimpleNamespace

        scheduler = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
        return DiffusionTeacher(OnnxDenoiser(path, SimpleNamespace(**config)), scheduler)
    from distill.deploy import executorch_model

    return executorch_model(directory, int8=int8)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse names the option when this refuses)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {value} (leave the option out for its default)"
        )
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="distill sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="an export folder (unet/ + scheduler/), or builtin:digits")
    source.add_argument("--config", type=Path, help="a run's config.yaml (with --ckpt)")
    parser.add_argument("--ckpt", type=Path, help="the run's checkpoint (with --config)")
    parser.add_argument(
        "--labels", type=int, nargs="+", help="class labels, one image each (default: 0..9 x 2)"
    )
    parser.add_argument("--num-images", type=positive_int, default=None, help="for unconditional models")
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="sampling steps (default: 4 consistency, 50 DDIM)",
    )
    parser.add_argument(
        "--guidance", type=finite_float, default=1.0, help="classifier-free guidance scale (1 = off)"
    )
    parser.add_argument(
        "--runtime",
        choices=("pytorch", "onnx", "executorch"),
        default="pytorch",
        help="run the export's network in PyTorch (default), onnxruntime (onnx/) or ExecuTorch (executorch/)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="with --runtime onnx|executorch: the static int8 file (onnx/model_int8_qdq.onnx, executorch/model_int8.pte)",
    )
    parser.add_argument(
        "--int4w",
        action="store_true",
        help="with --runtime executorch: the program with 4-bit linear weights (executorch/model_int4w.pte)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nrow", type=positive_int, default=10)
    parser.add_argument("--out", type=Path, required=True, help="the PNG grid to write")
    parser.add_argument(
        "--files", type=Path, default=None, help="also write one PNG per image into this folder"
    )
    args = parser.parse_args(argv)
    if args.config is not None and args.ckpt is None:
        parser.error("--config needs --ckpt")
    if args.runtime != "pytorch" and args.model is None:
        parser.error(
            f"--runtime {args.runtime} runs an export folder: pass --model (export with --format {args.runtime})"
        )
    if args.int8 and args.runtime == "pytorch":
        parser.error("--int8 picks the int8 file of --runtime onnx or executorch")
    if args.int4w and args.runtime != "executorch":
        parser.error("--int4w picks the 4-bit-weight program of --runtime executorch")
    if args.int4w and args.int8:
        parser.error("pass one of --int8 and --int4w")
    from torchvision.utils import save_image

    from distill.images import viewable_grid
    from distill.pipelines import ClassConditionalPipeline

    if args.runtime != "pytorch":
        pipe = ClassConditionalPipeline(
            runtime_model(args.model, args.runtime, int8=args.int8, int4w=args.int4w)
        )
    elif args.model is not None:
        pipe = ClassConditionalPipeline.from_pretrained(str(args.model))
    else:
        import tempfile

        pipe = _from_run(args.config, args.ckpt, Path(tempfile.mkdtemp()) / "export")
    labels = args.labels
    if labels is None and args.num_images is None and pipe.model.num_classes:
        labels = [c for _ in range(2) for c in range(pipe.model.num_classes)]
    out = pipe(
        class_labels=labels,
        num_images=args.num_images,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
    )
    # non-finite samples already raised inside the sampling contract (teachers.sampling.sample): nothing written
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # the grid enlarged for viewing (nearest neighbour, an integer factor); --files keeps the native size
    save_image(viewable_grid(out.images, nrow=args.nrow), args.out)
    if args.files is not None:
        args.files.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(out.images):
            save_image(image, args.files / f"{i:05d}.png")
    steps = pipe.default_steps if args.steps is None else args.steps
    print(f"wrote {len(out.images)} images ({pipe.sampler}, {steps} steps, seed {args.seed}) to {args.out}")
