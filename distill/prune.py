"""``distill prune``: what each removable unit of a network is worth, measured.

distill prune --model exports/robust --out importance.json            # a robust-trained network (configs/digits/robust.yaml)
distill prune --model builtin:digits --proxy distance --latency         # any sampler folder

Every removable unit (resnet, attention, mid block: :mod:`students.units`) is skipped in turn and the sampler
scored by a quality proxy (lower is better): ``fid`` (digits: FID vs the teacher reference of ``--num-samples``
samples), ``distance`` (any teacher: sample distance to the full network's own samples); ``auto`` picks ``fid`` for
digits-shaped networks. Each unit's cost is the MACs its removal saves and, with ``--latency``, its own time inside
a batch-1 forward on this machine. Prints the ranking (least harmful first) and writes it as JSON with ``--out``.
Measure a network robust-trained with ``unit_dropping`` (``configs/digits/robust.yaml``): on a network never
trained without its units, most removals look catastrophic and the ranking is noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROXIES = ("auto", "fid", "distance")


def build_proxy(kind: str, model, *, num_samples: int | None, steps: int | None, seed: int, prompts):
    from distill.onnx_export import is_digits_shaped
    from distill.search.importance import DigitsFidProxy, SampleDistanceProxy

    digits = model.cond_kind == "class" and is_digits_shaped(model.unet.config)
    if kind == "auto":
        kind = "fid" if digits else "distance"
    if kind == "fid":
        if not digits:
            raise ValueError(
                "--proxy fid scores digits samples (16x16, one channel, 10 classes) against the shipped digits "
                "reference; use --proxy distance for this teacher"
            )
        return DigitsFidProxy(num_samples=num_samples or 300, steps=steps or 20, seed=seed)
    return SampleDistanceProxy(num_samples=num_samples or 16, steps=steps or 10, seed=seed, prompts=prompts)


def format_report(report) -> str:
    lines = [
        f"proxy: {report.proxy}; full network {report.base_score:.4f}, {report.total_macs / 1e6:.2f}M MACs per forward",
        "",
        "| unit | kind | proxy change | MACs saved | latency (ms) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    by_name = {u.name: u for u in report.units}
    for name in report.ranking():
        u = by_name[name]
        latency = f"{u.latency_ms:.3f}" if u.latency_ms is not None else "-"
        share = 100 * u.macs_saved / report.total_macs
        lines.append(
            f"| `{u.name}` | {u.kind} | {u.delta:+.4f} | {u.macs_saved / 1e6:.2f}M ({share:.1f}%) | {latency} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from distill.sample import positive_int
    from students.units import KINDS

    parser = argparse.ArgumentParser(
        prog="distill prune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="a sampler folder (unet/ + scheduler/) or builtin:NAME"
    )
    parser.add_argument("--proxy", choices=PROXIES, default="auto")
    parser.add_argument("--num-samples", type=positive_int, default=None, help="fid: 300, distance: 16")
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="sampling steps (fid: 20, distance: 10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the noise seed of the proxy's samples")
    parser.add_argument(
        "--prompts", nargs="+", default=None, help="distance proxy of a text teacher: the prompts"
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="unit kinds measured")
    parser.add_argument("--latency", action="store_true", help="also time each unit inside a batch-1 forward")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; pass a file name (importance.json)")

    from distill.search.importance import measure_importance
    from students.units import removable_units
    from teachers import DiffusionTeacher

    try:
        model = DiffusionTeacher.from_pretrained(args.model)
        proxy = build_proxy(
            args.proxy,
            model,
            num_samples=args.num_samples,
            steps=args.steps,
            seed=args.seed,
            prompts=args.prompts,
        )
        units = [u.name for u in removable_units(model.unet, kinds=args.kinds)]
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    report = measure_importance(model, proxy, units=units, latency=args.latency)
    print(format_report(report))
    if args.out is not None:
        from distill.provenance import provenance

        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {**report.to_dict(), "model": str(args.model), "meta": provenance(module="distill.cli")}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
