"""Int8 on digits: the shipped 4-step consistency student in fp32, quantized post-training (PTQ) and by
quantization-aware distillation (QAD: students/weights/digits_consistency_qad), each int8 program run through
ExecuTorch's own runtime (XNNPACK) and scored by the protocol (configs/digits/teacher_eval.yaml: 2,000 samples x
seeds 0/1/2 at 1, 2 and 4 steps); file sizes; the share of MACs in int8 kernels counted on the ONNX QDQ graph and on
the ops the .pte delegates; latency per forward (batch 1) of PyTorch, onnxruntime (fp32, QDQ int8) and ExecuTorch
(fp32, int8) measured side by side, interleaved, in one process; and each int8 graph's distance to the fp32 network
along the fp32 student's own 1/2/4-step trajectories (mean squared output error, 500 fixed draws), beside a
quantization-aware graph calibrated by QAT's moving-average observers instead of post-training quantization's.

Run:  OMP_NUM_THREADS=2 python benchmarks/deploy_digits.py   (about 20 minutes on 2 idle cores)
Writes ``benchmarks/results/deploy_digits.json``; docs/deployment.md's table is generated from it
(``python benchmarks/update_docs.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from digits_runs import evaluate

from distill import quantization as Q
from distill.deploy import (
    PTE_INT8_NAME,
    PTE_NAME,
    ExecuTorchDenoiser,
    export_executorch,
    export_onnx_qdq,
    int8_macs_onnx,
    runtime_latency,
)
from distill.onnx_export import _Forward, _session, example_inputs, export_onnx, input_spec
from distill.provenance import provenance
from teachers import DiffusionTeacher

ROOT = Path(__file__).resolve().parent
FP32 = ROOT.parent / "students" / "weights" / "digits_consistency"
QAD = ROOT.parent / "students" / "weights" / "digits_consistency_qad"
TEACHER = ROOT.parent / "teachers" / "digits"
STEPS = [1, 2, 4]


def programs(work: Path) -> dict:
    """Write every file (ONNX fp32 / QDQ int8, ExecuTorch fp32 / int8, for PTQ and QAD) and describe each."""
    network = DiffusionTeacher.from_pretrained(FP32).unet.float().eval()
    ptq = Q.quantize_ptq(network, Q.calibration_inputs(FP32))
    qad = Q.load_int8(QAD)
    files: dict[str, dict] = {}
    torch_size = (FP32 / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    files["pytorch fp32"] = {"size_bytes": torch_size}
    files["onnx fp32"] = {"size_bytes": export_onnx(network, work / "model.onnx").size_bytes}
    files["onnx fp32"]["macs"] = int8_macs_onnx(work / "model.onnx").to_dict()
    for label, graph in (("ptq", ptq), ("qad", qad)):
        files[f"onnx int8 {label}"] = export_onnx_qdq(graph, work / f"model_int8_{label}_qdq.onnx")
    files["executorch fp32"] = export_executorch(network, work / "fp32" / "executorch" / PTE_NAME).to_dict()
    for label, graph, folder in (("ptq", ptq, FP32), ("qad", qad, QAD)):
        target = work / label
        shutil.copytree(folder, target, dirs_exist_ok=True)
        files[f"executorch int8 {label}"] = export_executorch(
            graph, target / "executorch" / PTE_INT8_NAME
        ).to_dict()
        # distill.deploy.executorch_model reads the program list from the folder's report
        report = {"fp32": files["executorch fp32"], "int8": files[f"executorch int8 {label}"]}
        shutil.copy(work / "fp32" / "executorch" / PTE_NAME, target / "executorch" / PTE_NAME)
        (target / "executorch" / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    # the same exports of the 10x larger digits teacher (post-training int8): how the int8/fp32 size ratio falls as
    # weights outgrow the program's fixed graph cost
    teacher = DiffusionTeacher.from_pretrained(TEACHER).unet.float().eval()
    teacher_int8 = Q.quantize_ptq(teacher, Q.calibration_inputs(TEACHER, num_images=16))
    files["teacher pytorch fp32"] = {
        "size_bytes": (TEACHER / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size,
        "parameters": sum(p.numel() for p in teacher.parameters()),
    }
    files["teacher onnx fp32"] = {"size_bytes": export_onnx(teacher, work / "teacher.onnx").size_bytes}
    files["teacher onnx int8"] = export_onnx_qdq(teacher_int8, work / "teacher_int8_qdq.onnx")
    files["teacher executorch fp32"] = export_executorch(teacher, work / "teacher" / PTE_NAME).to_dict()
    files["teacher executorch int8"] = export_executorch(
        teacher_int8, work / "teacher" / PTE_INT8_NAME
    ).to_dict()
    files["pytorch fp32"]["parameters"] = sum(p.numel() for p in network.parameters())
    return files, network


def trajectory_distances(network: torch.nn.Module, num: int = 500, seed: int = 123) -> dict:
    """Mean squared output error of each int8 graph against the fp32 network on the inputs the fp32 student's
    sampler produces (:func:`distill.objectives.trajectory.trajectory_matching_loss`, fixed draws)."""
    from distill.objectives.trajectory import TrajectoryOptions, draw_trajectory, trajectory_matching_loss
    from distill.rng import GeneratorRandom

    teacher = DiffusionTeacher.from_pretrained(FP32)
    calibration = Q.calibration_inputs(FP32)
    moving = Q.prepare_qat(DiffusionTeacher.from_pretrained(FP32).unet.float().train())
    moving.set_fake_quant(False)
    with torch.no_grad():
        for inputs in calibration:  # QAT's own observers on the same inputs post-training quantization sees
            moving.graph(*inputs)
    moving.set_fake_quant(True)
    graphs = {
        "ptq": Q.quantize_ptq(network, calibration),
        "qad": Q.load_int8(QAD),
        "qat_moving_average_calibration": Q.convert(moving.eval()),
    }
    options = TrajectoryOptions(steps=tuple(STEPS))
    draws = draw_trajectory(
        GeneratorRandom(torch.Generator().manual_seed(seed)), batch=num, shape=(1, 16, 16), steps=STEPS
    )
    labels = torch.arange(num) % 10
    out = {}
    with torch.no_grad():
        for name, graph in graphs.items():
            losses = trajectory_matching_loss(
                teacher=teacher, student=graph, cond=labels, draws=draws, options=options
            )
            out[name] = {key: float(value) for key, value in losses.items()}
    return {"num_draws": num, "seed": seed, "mse": out}


def latency(work: Path, network: torch.nn.Module, files: dict, repeats: int) -> dict:
    """Median forward time (batch 1) of each runtime, interleaved in one process."""
    names = list(input_spec(network))
    inputs = example_inputs(network, 1, seed=7)
    feeds = [inputs[name] for name in names]
    numpy_feeds = {name: inputs[name].numpy() for name in names}
    forward = _Forward(network, names).eval()
    runners = {"pytorch fp32": lambda: forward(*feeds)}
    for label, path in (("onnx fp32", work / "model.onnx"), ("onnx int8", work / "model_int8_ptq_qdq.onnx")):
        session = _session(path, spin=False)
        runners[label] = lambda session=session: session.run(None, numpy_feeds)
    for label, path in (
        ("executorch fp32", work / "fp32" / "executorch" / PTE_NAME),
        ("executorch int8", work / "ptq" / "executorch" / PTE_INT8_NAME),
    ):
        program = ExecuTorchDenoiser(path, network.config, names=names, max_batch=16)
        runners[label] = lambda program=program: program.method.execute(feeds)
    return runtime_latency(runners, repeats=repeats, warmup=5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "deploy_digits.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deploy_digits."))
    files, network = programs(work)
    timing = latency(work, network, files, args.repeats)
    distances = trajectory_distances(network)
    quality = {}
    (work / "evals").mkdir()
    for tag, overrides in (
        ("pytorch_fp32", [f"--model.init_args.model.init_args.path={FP32}"]),
        (
            "executorch_int8_ptq",
            [
                "--model.init_args.model.class_path=distill.deploy.executorch_model",
                f"--model.init_args.model.init_args.directory={work / 'ptq'}",
                "--model.init_args.model.init_args.int8=true",
            ],
        ),
        (
            "executorch_int8_qad",
            [
                "--model.init_args.model.class_path=distill.deploy.executorch_model",
                f"--model.init_args.model.init_args.directory={work / 'qad'}",
                "--model.init_args.model.init_args.int8=true",
            ],
        ),
    ):
        quality[tag] = evaluate(
            None,
            out=work / "evals",
            tag=tag,
            name=tag.replace("_", " "),
            seeds=args.seeds,
            num_samples=args.num_samples,
            eval_steps=STEPS,
            model_overrides=overrides,
        )
    result = {
        "files": files,
        "latency_batch1": timing,
        "quality": quality,
        "trajectory": distances,
        "steps": STEPS,
        "meta": provenance(
            configs=["configs/digits/teacher_eval.yaml", "configs/digits/consistency_qad.yaml"]
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
