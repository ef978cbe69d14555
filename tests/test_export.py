"""Export: diffusers folders with the method's scheduler and a model card, exact reproduction through the
pipeline, refusal to overwrite, safe checkpoint loading, and the `distill export` / `distill sample` commands."""

from __future__ import annotations

import os
import pickle

import numpy
import pytest
import torch
from conftest import cpu_trainer, fit_config_one_step, random_digits_loader, tiny_cond_unet

from distill.export import export_module, load_checkpoint
from distill.methods.consistency import ConsistencyDistillation
from distill.methods.knowledge import KnowledgeDistillation
from distill.pipelines import ClassConditionalPipeline
from teachers import DiffusionTeacher, teacher_fingerprint
from teachers.sampling import per_sample_noise


def _loader(n=32):
    return random_digits_loader(n)


def _train(module, tmp_path, steps=2, name="run.ckpt"):
    trainer = cpu_trainer(steps)
    trainer.fit(module, train_dataloaders=_loader())
    path = tmp_path / name
    trainer.save_checkpoint(path)
    return path


def _kd(teacher_dir):
    return KnowledgeDistillation(
        DiffusionTeacher.from_pretrained(teacher_dir),
        tiny_cond_unet(seed=4, block_out_channels=[16, 16]),
        samples_per_class=0,
    )


def test_kd_export_reproduces_the_checkpoints_samples_exactly(tiny_teacher_dir, tmp_path):
    ckpt = _train(_kd(tiny_teacher_dir), tmp_path)
    fresh = _kd(tiny_teacher_dir)  # built from the config, weights from the checkpoint
    out = export_module(fresh, ckpt_path=ckpt, output=tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {"unet", "scheduler", "model_index.json", "README.md"}
    card = (out / "README.md").read_text()
    assert "KnowledgeDistillation" in card and "trained 2 steps" in card and "MACs per forward" in card
    assert f"sha256 `{teacher_fingerprint(tiny_teacher_dir)}`" in card  # the teacher it was distilled from
    assert (out / "unet" / "distilled_from.json").is_file()
    pipe = ClassConditionalPipeline.from_pretrained(out)
    labels = torch.tensor([0, 3, 9])
    images = pipe(class_labels=labels, num_inference_steps=4, seed=7).images
    noise = per_sample_noise(seeds=torch.full((3,), 7), indices=torch.arange(3), shape=(1, 8, 8))
    expected = fresh.sample(
        labels, noise, steps=4, guidance_scale=None
    )  # the module's EMA student, same noise
    assert torch.equal(images, expected.add(1).div(2).clamp(0, 1))
    raw = export_module(_kd(tiny_teacher_dir), ckpt_path=ckpt, output=tmp_path / "raw", weights="raw")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    from safetensors.torch import load_file

    exported = load_file(raw / "unet" / "diffusion_pytorch_model.safetensors")
    for key, value in exported.items():
        assert torch.equal(value, state[f"student.{key}"])


def test_consistency_export_is_an_lcm_folder_sampled_by_the_pipeline(tiny_teacher_dir, tmp_path):
    def make():
        teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
        return ConsistencyDistillation(
            teacher, tiny_cond_unet(seed=3, time_cond_proj_dim=8), guidance_max=2.0, samples_per_class=0
        )

    ckpt = _train(make(), tmp_path)
    fresh = make()
    out = export_module(fresh, ckpt_path=ckpt, output=tmp_path / "lcm")
    pipe = ClassConditionalPipeline.from_pretrained(out)
    assert pipe.sampler == "consistency" and pipe.default_steps == 4
    labels = torch.tensor([1, 2])
    one = pipe(class_labels=labels, num_inference_steps=1, guidance_scale=1.5, seed=3).images
    noise = per_sample_noise(seeds=torch.full((2,), 3), indices=torch.arange(2), shape=(1, 8, 8))
    assert torch.equal(
        one, fresh.sample(labels, noise, steps=1, guidance_scale=1.5).add(1).div(2).clamp(0, 1)
    )
    four = pipe(
        class_labels=labels, seed=3
    ).images  # 4 steps, re-noised per image and step as the method does
    seeds, indices = torch.full((2,), 3), torch.arange(2)
    expected = fresh.sample(labels, noise, steps=4, seeds=seeds, indices=indices)
    assert torch.equal(four, expected.add(1).div(2).clamp(0, 1))


def test_existing_output_is_never_touched_unless_asked(tiny_teacher_dir, tmp_path):
    ckpt = _train(_kd(tiny_teacher_dir), tmp_path, steps=1)
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists; choose another folder or pass --overwrite"):
        export_module(_kd(tiny_teacher_dir), ckpt_path=ckpt, output=out)
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    with pytest.raises(ValueError, match="weights must be one of"):
        export_module(_kd(tiny_teacher_dir), ckpt_path=ckpt, output=tmp_path / "x", weights="best")
    export_module(_kd(tiny_teacher_dir), ckpt_path=ckpt, output=out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "unet").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export.")]  # no staging left behind


def test_export_averages_checkpoints_of_one_run_and_refuses_others(tiny_teacher_dir, tmp_path):
    from safetensors.torch import load_file

    module = _kd(tiny_teacher_dir)
    first = _train(module, tmp_path, steps=1, name="a.ckpt")
    second = _train(module, tmp_path, steps=2, name="b.ckpt")  # the same run, one step on
    states = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (first, second)]
    for weights, prefix in (("ema", "ema.module."), ("raw", "student.")):
        out = export_module(
            _kd(tiny_teacher_dir),
            ckpt_path=second,
            output=tmp_path / weights,
            weights=weights,
            average=[first],
        )
        exported = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
        moved = 0
        for key, value in exported.items():
            a, b = (state[prefix + key] for state in states)
            assert torch.allclose(value, (a.double() + b.double()).div(2).float(), rtol=0, atol=1e-7), key
            moved += not torch.equal(a, b)
        assert moved > 0  # the two checkpoints differ, so the mean is neither of them
        assert "the uniform mean of 2 checkpoints' weights, at steps 2, 1" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="is given twice"):
        export_module(_kd(tiny_teacher_dir), ckpt_path=second, output=tmp_path / "x", average=[first, second])
    other = KnowledgeDistillation(
        DiffusionTeacher.from_pretrained(tiny_teacher_dir),
        tiny_cond_unet(seed=4, block_out_channels=[16, 32]),
        samples_per_class=0,
    )
    foreign = _train(other, tmp_path, steps=1, name="other.ckpt")
    with pytest.raises(
        ValueError, match=r"average: .*other.ckpt does not hold this run's EMA student .* of another shape"
    ):
        export_module(_kd(tiny_teacher_dir), ckpt_path=second, output=tmp_path / "y", average=[foreign])
    with pytest.raises(FileNotFoundError, match=r"average .*missing\.ckpt does not exist"):
        export_module(
            _kd(tiny_teacher_dir),
            ckpt_path=second,
            output=tmp_path / "z",
            average=[tmp_path / "missing.ckpt"],
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_carrying_code_is_refused_and_not_run(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.ckpt"
    with bad.open("wb") as handle:
        pickle.dump({"state_dict": {}, "x": _Payload()}, handle)
    with pytest.raises(ValueError, match="cannot be read as a checkpoint of tensors"):
        load_checkpoint(_kd(tiny_teacher_dir), bad)
    assert not (tmp_path / "pwned").exists()
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(ValueError, match="is not a Lightning checkpoint"):
        load_checkpoint(_kd(tiny_teacher_dir), foreign)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(_kd(tiny_teacher_dir), tmp_path / "missing.ckpt")


def test_distill_export_and_sample_commands(tmp_path, monkeypatch):

    from PIL import Image

    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    run, ckpt = fit_config_one_step("kd.yaml", tmp_path)
    export = ["export", "-c", str(run / "config.yaml"), "--ckpt_path", str(ckpt), "--output"]
    main([*export, str(tmp_path / "export")])
    assert (tmp_path / "export" / "unet" / "config.json").is_file()
    twin = tmp_path / "twin.ckpt"  # a second file with the same weights: their mean is those weights
    twin.write_bytes(ckpt.read_bytes())
    mean = tmp_path / "mean"
    main([*export, str(mean), "--average", f"[{twin}]"])
    assert "the uniform mean of 2 checkpoints' weights" in (mean / "README.md").read_text()
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (mean / weights).read_bytes() == (tmp_path / "export" / weights).read_bytes()
    main(
        [
            "sample",
            "--model",
            str(tmp_path / "export"),
            "--labels",
            "1",
            "2",
            "3",
            "--steps",
            "2",
            "--out",
            "grid.png",
            "--files",
            "png",
        ]
    )
    # three 16x16 images with 1 px gaps (52 x 18), enlarged 10x for viewing; the files keep the native size
    grid = torch.from_numpy(numpy.asarray(Image.open(tmp_path / "grid.png").convert("RGB")).copy())
    assert tuple(grid.shape) == (10 * 18, 10 * (3 * 17 + 1), 3)
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    for i in range(3):
        tile = torch.from_numpy(
            numpy.asarray(Image.open(tmp_path / "png" / f"{i:05d}.png").convert("RGB")).copy()
        )
        assert tile.shape[:2] == (16, 16)
        top, left = 10, 10 * (1 + 17 * i)
        block = grid[top : top + 160, left : left + 160]
        assert torch.equal(block, tile.repeat_interleave(10, 0).repeat_interleave(10, 1))
