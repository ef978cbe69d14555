"""Build the shipped digits assets from training runs: the teacher, the classifier, the teacher reference.

    python -m distill.assets teacher    --config RUN/config.yaml --ckpt CKPT --out teachers/digits
    python -m distill.assets student    --config RUN/config.yaml --ckpt CKPT --out DIR   (EMA student + schedule;
                                        --average CKPT ...: the mean of these checkpoints' EMA weights and CKPT's)
    python -m distill.assets classifier --config RUN/config.yaml --ckpt CKPT --out distill/assets/digits_classifier
    python -m distill.assets sweep      --teacher builtin:digits --guidance 1 1.5 2 3 --steps 50 --num-samples 300
    python -m distill.assets reference  --teacher builtin:digits --guidance SCALE --steps 50 --out distill/assets/digits_reference
    python -m distill.assets floors     --eval RUN/eval.json --steps 50 --out distill/assets/digits_reference
    python -m distill.assets grid       --teacher builtin:digits --guidance SCALE --out docs/digits_teacher.png

Each writes only to ``--out`` and refuses to overwrite an existing asset unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"{out} already holds files; pass --overwrite to replace them")


def export_teacher(args) -> None:
    from distill.lightning_cli import module_from_run

    _check_out(args.out, args.overwrite)
    module, state = module_from_run(args.config, args.ckpt)
    what = f"step {state['global_step']}"
    if getattr(args, "average", None):
        from distill.export import average_checkpoints

        steps = average_checkpoints(module, args.ckpt, args.average, loaded=state)
        what = f"the mean of steps {', '.join(map(str, steps))}"
    module.save_pretrained(args.out, use_ema=True)
    print(f"wrote the EMA weights of {what} to {args.out}")


def export_classifier(args) -> None:
    from distill.lightning_cli import module_from_run

    _check_out(args.out, args.overwrite)
    module, state = module_from_run(args.config, args.ckpt)
    module.classifier.save_pretrained(args.out)
    from distill.metrics import DigitsEvaluator

    acc = DigitsEvaluator(classifier=args.out, reference=None).real_accuracy()
    print(f"wrote the classifier of step {state['global_step']} to {args.out}; held-out accuracy {acc:.4f}")


def _generate_features(teacher, evaluator, *, steps, guidance, seed, num_samples, batch_size=500):
    from distill.methods.evaluation import GenerativeEvaluation

    gen = GenerativeEvaluation(teacher, evaluator, steps=[steps], guidance_scale=guidance)
    feats, labels, metric = [], [], evaluator.accumulator()
    for start in range(0, num_samples, batch_size):
        idx = torch.arange(start, min(start + batch_size, num_samples))
        lab = idx % 10
        images = gen.generate(torch.full_like(idx, seed), idx, lab, steps)
        metric.update(images, lab)
        feats.append(metric.features[-1])
        labels.append(lab)
    return torch.cat(feats), torch.cat(labels), metric


def sweep(args) -> None:
    from distill.metrics import DigitsEvaluator
    from teachers import DiffusionTeacher

    teacher = DiffusionTeacher.from_pretrained(args.teacher)
    evaluator = DigitsEvaluator(reference=None, kid_subset_size=min(300, args.num_samples))
    print("| guidance | FID vs real | accuracy (%) | seconds |")
    print("| ---: | ---: | ---: | ---: |")
    for w in args.guidance:
        start = time.perf_counter()
        _, _, metric = _generate_features(
            teacher, evaluator, steps=args.steps, guidance=w, seed=args.seed, num_samples=args.num_samples
        )
        result = metric.compute()
        print(
            f"| {w} | {result['fid_real']:.2f} | {100 * result['accuracy']:.1f} | "
            f"{time.perf_counter() - start:.0f} |",
            flush=True,
        )


def reference(args) -> None:
    from safetensors.torch import save_file

    from distill.classifier import DEFAULT_CLASSIFIER
    from distill.metrics import DigitsEvaluator
    from teachers import DiffusionTeacher

    _check_out(args.out, args.overwrite)
    teacher = DiffusionTeacher.from_pretrained(args.teacher)
    evaluator = DigitsEvaluator(reference=None)
    start = time.perf_counter()
    feats, labels, metric = _generate_features(
        teacher,
        evaluator,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        num_samples=args.num_samples,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"features": feats.contiguous(), "labels": labels.contiguous()}, args.out / "features.safetensors"
    )
    unet_file = next(Path(teacher.weights_dir).rglob("*.safetensors"))
    sampler = (
        "euler on FlowMatchEulerDiscreteScheduler's grid (no clipping)"
        if teacher.schedule.family == "flow"
        else "ddim (eta=0), trailing spacing, x0 clipped to [-1, 1]"
    )
    meta = {
        "teacher": args.teacher,
        "teacher_sha256": _sha256(unet_file),
        "classifier_sha256": _sha256(DEFAULT_CLASSIFIER / "model.safetensors"),
        "sampler": sampler,
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
        "num_samples": args.num_samples,
        "labels": "balanced: sample i has label i % 10",
        "accuracy": metric.compute()["accuracy"],
        "seconds": round(time.perf_counter() - start, 1),
        "noise_floor": {},
    }
    (args.out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


def floors(args) -> None:
    results = json.loads(args.eval.read_text())
    row = next(r for r in results["rows"] if r["steps"] == args.steps)
    s = row["summary"]
    meta_path = args.out / "reference.json"
    meta = json.loads(meta_path.read_text())
    meta["noise_floor"] = {
        "definition": "the reference teacher at the reference settings, evaluation seeds vs other seeds",
        "fid_ref": s["fid_ref"],
        "kid_ref": s["kid_ref"],
        "fid_real": s["fid_self_real_size"],
        "fid_self": s["fid_self"],
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["noise_floor"], indent=2))


def grid(args) -> None:
    from torchvision.utils import save_image

    from distill.metrics import DigitsEvaluator
    from teachers import DiffusionTeacher

    teacher = DiffusionTeacher.from_pretrained(args.teacher)
    rows = []
    for steps in args.steps:
        from distill.methods.evaluation import GenerativeEvaluation

        gen = GenerativeEvaluation(
            teacher, DigitsEvaluator(reference=None), steps=[steps], guidance_scale=args.guidance
        )
        idx = torch.arange(10 * args.rows)
        rows.append(gen.generate(torch.full_like(idx, args.seed), idx, idx % 10, steps))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    images = torch.cat(rows).add(1).div(2).clamp(0, 1)
    images = torch.nn.functional.interpolate(images, scale_factor=args.scale, mode="nearest")
    save_image(images, args.out, nrow=10, padding=2, pad_value=1.0)
    print(f"wrote {args.out}: rows of 10 classes, {args.rows} row(s) per step count {args.steps}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (
        ("teacher", export_teacher),
        ("student", export_teacher),
        ("classifier", export_classifier),
    ):
        p = sub.add_parser(name)
        p.add_argument("--config", type=Path, required=True)
        p.add_argument("--ckpt", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--overwrite", action="store_true")
        if name == "student":
            p.add_argument(
                "--average",
                type=Path,
                nargs="+",
                default=[],
                metavar="CKPT",
                help="more checkpoints of the run: write the uniform mean of their EMA weights and --ckpt's",
            )
        p.set_defaults(fn=fn)
    p = sub.add_parser("sweep")
    p.add_argument("--teacher", default="builtin:digits")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--seed", type=int, default=500)
    p.set_defaults(fn=sweep)
    p = sub.add_parser("reference")
    p.add_argument("--teacher", default="builtin:digits")
    p.add_argument("--guidance", type=float, required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=reference)
    p = sub.add_parser("floors")
    p.add_argument("--eval", type=Path, required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(fn=floors)
    p = sub.add_parser("grid")
    p.add_argument("--teacher", default="builtin:digits")
    p.add_argument("--guidance", type=float, required=True)
    p.add_argument("--steps", type=int, nargs="+", default=[50, 8, 4, 2, 1])
    p.add_argument("--rows", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(fn=grid)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
