"""Latent text-to-image pieces on the tiny offline SD pipeline: the teacher's VAE/text side, caption data with
its error reporting, precompute and the shard data module, CLIP score, and one step of each method."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cpu_trainer

from distill.data_t2i import CaptionFolderDataModule, LatentShardDataModule, precompute
from distill.methods.consistency import ConsistencyDistillation
from distill.methods.knowledge import KnowledgeDistillation
from distill.methods.progressive import ProgressiveDistillation
from students.bk import bk_small
from teachers import DiffusionTeacher
from teachers.conditioning import cat_cond, where_cond


@pytest.fixture(scope="module")
def teacher(tiny_sd):
    return DiffusionTeacher.from_pretrained(tiny_sd[0])


def test_latent_teacher_encodes_prompts_images_and_guides(teacher):
    assert teacher.cond_kind == "text" and teacher.is_latent and teacher.vae_scale_factor == 2
    assert teacher.image_size == 16 and teacher.null_class is None
    cond = teacher.encode_prompt(["a red square", "a blue circle"])
    assert cond.shape == (2, 16, 32) and cond.dtype == torch.float32
    torch.testing.assert_close(teacher.null_cond(cond), teacher.encode_prompt(["", ""]))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    latents = teacher.encode_images(images)
    assert latents.shape == (2, 4, 8, 8)
    scale = teacher.vae.config.scaling_factor
    mean = teacher.vae.encode(images).latent_dist.mean
    torch.testing.assert_close(latents, mean * scale)
    assert teacher.decode_latents(latents).shape == (2, 3, 16, 16)
    # classifier-free guidance on text: uncond + w (cond - uncond), in one batched forward
    t = torch.tensor([100, 700])
    guided = teacher.predict(latents, t, cond, guidance_scale=4.0)
    c = teacher.predict(latents, t, cond)
    u = teacher.predict(latents, t, teacher.null_cond(cond))
    torch.testing.assert_close(guided.eps, u.eps + 4.0 * (c.eps - u.eps), rtol=1e-4, atol=1e-5)


def test_condition_helpers_handle_sdxl_dicts():
    a = {
        "encoder_hidden_states": torch.ones(2, 3, 4),
        "text_embeds": torch.ones(2, 5),
        "time_ids": torch.ones(2, 6),
    }
    b = {k: torch.zeros_like(v) for k, v in a.items()}
    both = cat_cond(a, b)
    assert both["encoder_hidden_states"].shape == (4, 3, 4) and both["time_ids"].shape == (4, 6)
    picked = where_cond(torch.tensor([True, False]), a, b)
    assert picked["text_embeds"][0].sum() == 5 and picked["text_embeds"][1].sum() == 0


def _write_bad_folder(root, good_from):
    import shutil

    root.mkdir()
    lines = []
    for name in sorted(p.name for p in good_from.glob("*.png"))[:4]:
        shutil.copy(good_from / name, root / name)
        lines.append(json.dumps({"file_name": name, "text": "a red square"}))
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    lines += [
        json.dumps({"file_name": "broken.png", "text": "x"}),
        json.dumps({"file_name": "gone.png", "text": "x"}),
        json.dumps({"file_name": lines and "0000.png"}),
        "{not json",
    ]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_caption_folder_names_every_bad_file_and_skips_only_when_asked(tiny_sd, tmp_path):
    root = tmp_path / "bad"
    _write_bad_folder(root, tiny_sd[1])
    with pytest.raises(ValueError) as info:
        CaptionFolderDataModule(root, image_size=16, batch_size=2).setup("fit")
    message = str(info.value)
    for fragment in (
        "4 problem(s)",
        "broken.png: unreadable image",
        "gone.png: file missing",
        "no 'text' caption",
        "line 8: not JSON",
        "on_error=skip",
    ):
        assert fragment in message, message
    with pytest.warns(UserWarning, match="skipping 4 file"):
        dm = CaptionFolderDataModule(root, image_size=16, batch_size=2, on_error="skip")
        dm.setup("fit")
    assert len(dm.pairs) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 16, 16) and len(batch["captions"]) == 2
    assert float(batch["images"].min()) >= -1 and float(batch["images"].max()) <= 1


def test_side_car_captions_and_empty_folders(tmp_path):
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no usable image-caption pairs"):
        CaptionFolderDataModule(empty, image_size=16).setup("fit")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        CaptionFolderDataModule(tmp_path / "missing", image_size=16)
    side = tmp_path / "side"
    side.mkdir()
    Image.new("RGB", (24, 20), (200, 10, 10)).save(side / "a.png")
    (side / "a.txt").write_text("a red square\n")
    Image.new("RGB", (20, 20)).save(side / "b.jpg")  # no caption
    dm = CaptionFolderDataModule(side, image_size=16, batch_size=1, on_error="skip")
    with pytest.warns(UserWarning, match="b.jpg: no caption"):
        dm.setup("fit")
    item = dm.dataset()[0]
    assert item["captions"] == "a red square" and item["images"].shape == (3, 16, 16)


def test_precompute_writes_shards_that_train_like_the_folder(teacher, tiny_sd, tmp_path):
    dm = CaptionFolderDataModule(tiny_sd[1], image_size=16, batch_size=4)
    out = precompute(teacher, dm, tmp_path / "shards", shard_size=10, batch_size=7, dtype="float32")
    index = json.loads((out / "index.json").read_text())
    assert index["num_samples"] == 24 and [s["count"] for s in index["shards"]] == [10, 10, 4]
    assert index["latent_shape"] == [4, 8, 8]
    with pytest.raises(FileExistsError, match="--overwrite true"):
        precompute(teacher, dm, out)
    shards = LatentShardDataModule(out, batch_size=4)
    assert shards.is_latent and shards.latent_size == 8 and shards.image_size == 16
    row = shards.dataset()[13]
    item = dm.dataset()[13]
    torch.testing.assert_close(row["latents"], teacher.encode_images(item["images"][None])[0])
    torch.testing.assert_close(row["prompt_embeds"], teacher.encode_prompt([item["captions"]])[0])
    torch.testing.assert_close(shards.uncond_cond(), teacher.encode_prompt([""]))
    with pytest.raises(FileNotFoundError, match="distill precompute"):
        LatentShardDataModule(tmp_path)


def test_clip_score_is_100_times_the_clamped_cosine(tmp_path):
    from distill.clip_score import CLIPScore
    from distill.tiny_pipeline import build_tiny_clip

    clip = CLIPScore(build_tiny_clip(tmp_path / "clip"))
    images = torch.rand(3, 3, 20, 24)
    prompts = ["a red square", "a blue circle", "one"]
    scores = clip.per_sample(images, prompts)
    tokens = clip.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = clip.model(**tokens, pixel_values=clip.preprocess(images))
    cos = out.logits_per_image.diagonal() / clip.model.logit_scale.exp()
    torch.testing.assert_close(scores, 100 * cos.clamp(min=0), rtol=1e-4, atol=1e-4)
    assert clip(images, prompts) == pytest.approx(float(scores.mean()))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        CLIPScore(tmp_path / "nothing")


def test_inception_fid_without_local_weights_says_what_to_do(monkeypatch, tmp_path):
    from distill.clip_score import inception_fid

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"never downloaded.*feature="):
        inception_fid()


def _batch(dm):
    return next(iter(dm.train_dataloader()))


METHODS = {
    "kd": lambda t, p: KnowledgeDistillation(
        t, bk_small(p), samples_per_class=0, evaluator=None, cond_drop_prob=0.2
    ),
    "progressive": lambda t, p: ProgressiveDistillation(
        t,
        bk_small(p, time_cond_proj_dim=8),
        teacher_steps=8,
        final_steps=1,
        round_steps=1,
        guidance_min=2.0,
        guidance_max=4.0,
        samples_per_class=0,
        evaluator=None,
    ),
    "consistency": lambda t, p: ConsistencyDistillation(
        t,
        bk_small(p, time_cond_proj_dim=8),
        guidance_min=2.0,
        guidance_max=4.0,
        samples_per_class=0,
        evaluator=None,
        cond_drop_prob=0.1,
    ),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("data", ["folder", "shards"])
def test_each_method_trains_on_captions_and_on_shards(method, data, teacher, tiny_sd, tmp_path):
    folder = CaptionFolderDataModule(tiny_sd[1], image_size=16, batch_size=4)
    dm = folder
    if data == "shards":
        dm = LatentShardDataModule(
            precompute(teacher, folder, tmp_path / "shards", dtype="float32"), batch_size=4
        )
    module = METHODS[method](teacher, tiny_sd[0])
    before = [p.detach().clone() for p in module.student.parameters()]
    cpu_trainer(2).fit(module, datamodule=dm)
    moved = [not torch.equal(p, b) for p, b in zip(module.student.parameters(), before, strict=True)]
    assert any(moved)
    losses = module.training_losses(_batch(dm))
    assert torch.isfinite(losses["loss"])


def test_a_text_to_image_run_logs_a_prompt_grid(teacher, tiny_sd, tmp_path):
    """Validation of a text teacher logs a grid: the teacher row above the student's, one column per prompt, and
    each row's CLIP score against the prompts when a local CLIP folder is given."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from distill.tiny_pipeline import build_tiny_clip

    prompts = ["a red square", "a blue circle", "a green cross"]
    module = KnowledgeDistillation(
        teacher,
        bk_small(tiny_sd[0]),
        evaluator=None,
        samples_per_class=0,
        eval_prompts=prompts,
        eval_steps=[2],
        eval_teacher_steps=2,
        eval_clip=str(build_tiny_clip(tmp_path / "clip")),
    )
    dm = CaptionFolderDataModule(tiny_sd[1], image_size=16, batch_size=4, num_val=4)
    trainer = cpu_trainer(
        2,
        logger=TensorBoardLogger(tmp_path, name="t2i"),
        limit_val_batches=1,
        val_check_interval=2,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    acc = EventAccumulator(str(tmp_path / "t2i" / "version_0"), size_guidance={"images": 0})
    acc.Reload()
    tag = "samples/teacher_2ddim_then_student_2step"
    assert acc.Tags()["images"] == [tag]
    (image,) = acc.Images(tag)
    # two rows (teacher, student) of three 16-px images with 1-px gaps, enlarged by a whole factor to be seen
    factor = image.height // (2 * 17 + 1)
    assert factor >= 1 and (image.height, image.width) == (factor * (2 * 17 + 1), factor * (3 * 17 + 1))
    scores = {tag: acc.Scalars(tag)[0].value for tag in ("val/teacher/clip_score", "val/2step/clip_score")}
    assert all(0.0 <= v <= 100.0 for v in scores.values()), scores
