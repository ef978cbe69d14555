"""Do the on-device files of every shipped digits student sample the digits PyTorch samples?

For each shipped student (students/weights/digits_*): `distill convert` writes its ONNX file and its ExecuTorch
program (fp32; the quantization-aware student also its int8 program from its own scales), then `distill sample`
draws the same 50 images (labels 0-9 x 5, seed 0, the folder's default step count) with `--runtime pytorch`,
`onnx` and `executorch`, each to PNG files. Recorded per runtime: the largest difference of any pixel from the
PyTorch PNGs (in 8-bit levels), the share of pixels that differ at all, and how many images the shipped digits
classifier reads as another digit than the PyTorch image. The stated tolerance for fp32 files: every pixel within
one 8-bit level (float differences of ~1e-5 can still round a pixel to the next level) and no image classified
differently. int8 programs (the quantization-aware student's) and the 4-bit-weight program of the consistency
student (with the share of MACs its 4-bit linears cover) are reported beside, not held to it (quantization changes
the samples).

Run:  OMP_NUM_THREADS=2 python benchmarks/runtime_parity.py   (about 25 minutes on 2 cores: ExecuTorch lowering
      takes about a minute per program)
      ... --only digits_consistency digits_flow_kd   (some students; the others' entries are kept)
Writes ``benchmarks/results/runtime_parity.json``; docs/deployment.md's parity table is generated from it
(``python benchmarks/update_docs.py``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image

from distill.convert import main as convert
from distill.metrics import DigitsEvaluator
from distill.provenance import provenance
from distill.sample import main as sample
from students.common import list_builtins

ROOT = Path(__file__).resolve().parent
LABELS = [c for _ in range(5) for c in range(10)]
#: the tolerance an fp32 file is held to (see the module docstring)
MAX_LEVELS = 1
QAD = "digits_consistency_qad"
#: the student whose 4-bit-weight program is measured too (--quantize int4w)
INT4W = "digits_consistency"


def read_pngs(folder: Path) -> torch.Tensor:
    """The PNG files ``distill sample --files`` wrote, in order, as uint8 (N, 1, H, W)."""
    files = sorted(folder.glob("*.png"))
    return torch.stack([decode_image(str(f), mode=ImageReadMode.GRAY) for f in files])


def draw(folder: Path, out: Path, runtime: str, *flags: str) -> torch.Tensor:
    args = ["--model", str(folder), "--runtime", runtime, "--labels", *map(str, LABELS), "--seed", "0"]
    sample([*args, *flags, "--out", str(out / "grid.png"), "--files", str(out / "files")])
    return read_pngs(out / "files")


def compare(images: torch.Tensor, reference: torch.Tensor, classifier) -> dict:
    diff = (images.int() - reference.int()).abs()
    with torch.no_grad():
        got = classifier(images.float() / 127.5 - 1).argmax(1)  # the classifier reads [-1, 1]
        ref = classifier(reference.float() / 127.5 - 1).argmax(1)
    return {
        "max_levels": int(diff.max()),
        "pixels_differing": float((diff > 0).float().mean()),
        "class_changes": int((got != ref).sum()),
        "images": len(images),
    }


def student(name: str, work: Path, classifier) -> dict:
    source = f"builtin:{name}"
    onnx_dir, et_dir = work / f"{name}_onnx", work / f"{name}_executorch"
    convert(["--model", source, "--out", str(onnx_dir), "--format", "onnx", "--eval-samples", "0"])
    quantize = ["--quantize", "int8"] if name == QAD else []
    convert(
        ["--model", source, "--out", str(et_dir), "--format", "executorch", "--eval-samples", "0", *quantize]
    )
    reference = draw(onnx_dir, work / name / "pytorch", "pytorch")
    rows = {
        "onnx fp32": compare(draw(onnx_dir, work / name / "onnx", "onnx"), reference, classifier),
        "executorch fp32": compare(draw(et_dir, work / name / "et", "executorch"), reference, classifier),
    }
    if quantize:
        rows["executorch int8"] = compare(
            draw(et_dir, work / name / "et8", "executorch", "--int8"), reference, classifier
        )
    entry = {"runtimes": rows}
    if name == INT4W:
        int4w_dir = work / f"{name}_int4w"
        flags = ["--format", "executorch", "--eval-samples", "0", "--quantize", "int4w"]
        convert(["--model", source, "--out", str(int4w_dir), *flags])
        rows["executorch int4w"] = compare(
            draw(int4w_dir, work / name / "et4", "executorch", "--int4w"), reference, classifier
        )
        report = json.loads((int4w_dir / "executorch" / "report.json").read_text())
        keys = ("macs", "size_bytes", "group_size", "quantized_layers", "float_layers", "parity")
        entry["int4w"] = {key: report["int4w"][key] for key in keys}
        entry["int4w"]["fp32_size_bytes"] = report["fp32"]["size_bytes"]
    for label, row in rows.items():
        if label.endswith("fp32"):  # quantized programs are reported, not held to the tolerance
            row["within_tolerance"] = row["max_levels"] <= MAX_LEVELS and row["class_changes"] == 0
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", default=None, help="shipped students to (re)measure")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "runtime_parity.json")
    args = parser.parse_args()
    names = [n for n in list_builtins("student") if n.startswith("digits_")]
    unknown = set(args.only or []) - set(names)
    if unknown:
        parser.error(f"--only names no shipped digits student: {sorted(unknown)} (they are {names})")
    result = json.loads(args.output.read_text()) if args.output.is_file() and args.only else {"students": {}}
    classifier = DigitsEvaluator().classifier.eval()
    work = Path(tempfile.mkdtemp(prefix="runtime_parity."))
    for name in args.only or names:
        result["students"][name] = student(name, work, classifier)
        print(name, json.dumps(result["students"][name]["runtimes"]), flush=True)
    result["labels"] = LABELS
    result["seed"] = 0
    result["tolerance"] = {"max_levels": MAX_LEVELS, "class_changes": 0}
    result["meta"] = provenance(configs=[])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
