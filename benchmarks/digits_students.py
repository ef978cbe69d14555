"""Train every digits student preset by knowledge distillation and measure it by the teacher's protocol.

For each config (BK-Tiny-style block removal, efficient UNet, timm MobileNetV3 UNet) this trains the full
config, exports the EMA student, evaluates it (2,000 samples per seed, seeds 0/1/2, DDIM 50 steps, trailing
spacing) and counts its MACs and parameters against the teacher's.

Run:  python benchmarks/digits_students.py [--only kd_timm ...] [--out runs/digits_students]
Writes ``OUT/digits_students.json`` and ``OUT/digits_students.md`` (the table README quotes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from digits_runs import ROOT, cell, fresh_dir, train_export_evaluate

PRESETS = {
    "kd_bk_tiny": "BK-Tiny-style (mid block + inner stage removed, 16/48 ch)",
    "kd_efficient": "efficient UNet (separable convs, attention at 4x4)",
    "kd_timm": "timm MobileNetV3-Small encoder UNet",
}


def network_costs(path: str) -> dict:
    """MACs per forward (batch 1) and parameters of the denoiser in ``path`` (a folder or builtin:digits)."""
    from distill.flops import count_macs, example_inputs
    from teachers import DiffusionTeacher

    net = DiffusionTeacher.from_pretrained(path).unet
    macs = count_macs(net, example_inputs(net))
    return {"macs_per_forward": macs.total // macs.batch_size, "parameters": macs.parameters}


def costs(student_dir: Path) -> dict:
    return {"teacher": network_costs("builtin:digits"), "student": network_costs(str(student_dir))}


def to_markdown(results: list[dict]) -> str:
    lines = [
        "| student | params | MACs / forward | steps | FID vs real | FID vs teacher ref | accuracy (%) | train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        t, s = r["costs"]["teacher"], r["costs"]["student"]
        for row in r["rows"]:
            sm = row["summary"]
            lines.append(
                f"| {r['label']} | {s['parameters'] / 1e6:.2f}M ({s['parameters'] / t['parameters']:.2f}x) | "
                f"{s['macs_per_forward'] / 1e6:.1f}M ({s['macs_per_forward'] / t['macs_per_forward']:.2f}x) | "
                f"{row['steps']} | {cell(sm, 'fid_real')} | {cell(sm, 'fid_ref')} | "
                f"{cell(sm, 'accuracy', 100.0, 1)} | {r['fit_minutes']:.0f} min |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=None, help="override the configs' max_steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--eval-steps", type=int, nargs="+", default=[50])
    parser.add_argument("--out", type=Path, default=Path("runs/digits_students"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else ROOT / args.out
    results = []
    for name in args.only:
        print(f"[digits_students] {name}: training, exporting, evaluating", flush=True)
        overrides = ["--trainer.limit_val_batches=0"]
        if args.steps is not None:
            overrides.append(f"--trainer.max_steps={args.steps}")
        result = train_export_evaluate(
            config=f"configs/digits/{name}.yaml",
            overrides=overrides,
            out=fresh_dir(out / name, args.overwrite),
            name=PRESETS[name],
            seeds=args.seeds,
            num_samples=args.num_samples,
            eval_steps=args.eval_steps,
        )
        result.update(
            config=f"configs/digits/{name}.yaml", label=PRESETS[name], costs=costs(Path(result["student"]))
        )
        results.append(result)
        (out / "digits_students.json").write_text(json.dumps(results, indent=2) + "\n")
    table = to_markdown(results)
    (out / "digits_students.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
