"""`distill test` of a text-to-image model on the tiny offline SD pipeline: prompts in, FID/KID against a folder of
reference images (on a local CLIP's image features) and CLIP score out; the evaluator, the prompt data and the
refusals of mismatched evaluator, model and data."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from distill.data import GenerationDataModule
from distill.data_prompts import PromptDataModule
from distill.images import list_images, read_image
from distill.methods.evaluation import GenerativeEvaluation
from distill.metrics import DigitsEvaluator
from distill.metrics_t2i import TextToImageEvaluator
from distill.tiny_pipeline import write_caption_folder
from teachers import DiffusionTeacher

PROMPTS = "a red square\n\na blue circle\n  a photo of digit one  \na blue square\n"


class ColourStatistics(nn.Module):
    """A user's feature network: per-channel mean and standard deviation of images in [-1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)


def colour_statistics() -> nn.Module:  # the factory named as "test_t2i_eval:colour_statistics"
    return ColourStatistics()


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    return write_caption_folder(tmp_path_factory.mktemp("refs") / "images", num_images=12, seed=1)


@pytest.fixture(scope="module")
def text_teacher(tiny_sd):
    return DiffusionTeacher.from_pretrained(tiny_sd[0])


def _evaluator(references, tiny_clip, **overrides):
    options = dict(
        reference_images=references,
        feature_network=str(tiny_clip),
        clip=tiny_clip,
        image_size=16,
        kid_subset_size=6,
        kid_subsets=5,
    )
    options.update(overrides)
    return TextToImageEvaluator(**options)


def test_distill_test_scores_a_text_model_from_prompts(tiny_sd, tiny_clip, references, tmp_path, monkeypatch):
    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text(PROMPTS)
    config = tmp_path / "t2i_test.yaml"
    config.write_text(
        f"""
trainer: {{accelerator: cpu, devices: 1, logger: false, enable_progress_bar: false, enable_model_summary: false}}
model:
  class_path: distill.methods.evaluation.GenerativeEvaluation
  init_args:
    model:
      class_path: teachers.DiffusionTeacher.from_pretrained
      init_args: {{path: {tiny_sd[0]}}}
    evaluator:
      class_path: distill.metrics_t2i.TextToImageEvaluator
      init_args:
        reference_images: {references}
        feature_network: {tiny_clip}
        clip: {tiny_clip}
        image_size: 16
        kid_subset_size: 4
        kid_subsets: 5
    steps: [2, 1]
    guidance_scale: 2.0
    name: tiny
    output: {tmp_path / "eval.json"}
data:
  class_path: distill.data_prompts.PromptDataModule
  init_args: {{prompt_file: {tmp_path / "prompts.txt"}, num_samples: 6, seeds: [0, 1], batch_size: 4}}
"""
    )
    main(["test", "-c", str(config)])
    results = json.loads((tmp_path / "eval.json").read_text())
    assert [row["steps"] for row in results["rows"]] == [2, 1]
    for row in results["rows"]:
        assert [r["seed"] for r in row["per_seed"]] == [0, 1]
        for result in row["per_seed"]:
            assert result["num_samples"] == 6
            assert all(math.isfinite(result[k]) for k in ("fid", "kid", "clip_score"))
            assert result["fid"] > 0 and 0 <= result["clip_score"] <= 100
        assert set(row["summary"]) == {"fid", "kid", "clip_score"}
    table = results["table"].splitlines()
    assert table[0].startswith("| model | steps | CFG | FID (CLIP clip) | KID (x1e3) | CLIP score |")
    assert [line.split("|")[1:4] for line in table[2:]] == [
        [" tiny ", " 2 ", " 2.0 "],
        [" tiny ", " 1 ", " 2.0 "],
    ]
    assert results["evaluator"]["num_reference_images"] == 12 and results["evaluator"]["num_features"] == 16


def test_prompt_samples_do_not_depend_on_the_batch(text_teacher, references, tiny_clip):
    module = GenerativeEvaluation(
        text_teacher, _evaluator(references, tiny_clip), steps=[2], guidance_scale=2.0
    )
    prompts = ["a red square", "a blue circle", "a blue square", "a red circle"]
    seeds, indices = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 2])
    images = module.generate(seeds, indices, prompts, 2)
    order = [
        2,
        0,
        3,
        1,
    ]  # the same rows in other batch positions (same batch size: no new CPU kernels to build)
    shuffled = module.generate(seeds[order], indices[order], [prompts[i] for i in order], 2)
    assert images.shape == (4, 3, 16, 16) and float(images.abs().max()) <= 1
    torch.testing.assert_close(shuffled, images[order], rtol=0, atol=1e-5)


def test_identical_sets_score_near_zero_and_other_sets_higher(references, tiny_clip):
    images = torch.stack([read_image(p) for p in list_images(references)])
    prompts = ["a red square"] * images.shape[0]
    evaluator = _evaluator(references, tiny_clip)
    same = evaluator.accumulator()
    same.update(images, prompts)
    other = evaluator.accumulator()
    other.update(-images, prompts)  # colours inverted
    same, other = same.compute(), other.compute()
    assert abs(same["fid"]) < 1e-3 and other["fid"] > 100 * max(abs(same["fid"]), 1e-3)
    assert other["kid"] > same["kid"] and same["num_samples"] == 12
    torch.testing.assert_close(
        torch.tensor(same["clip_score"]), evaluator.clip.per_sample((images + 1) / 2, prompts).mean()
    )
    # a user's network by "module:factory", images resized to image_size first; no clip folder, no CLIP score
    user = _evaluator(references, tiny_clip, feature_network="test_t2i_eval:colour_statistics", clip=None)
    scores = user.accumulator()
    scores.update(torch.nn.functional.interpolate(images, size=24), None)
    result = scores.compute()
    assert user.reference_features.shape == (12, 6) and "clip_score" not in result
    assert result["fid"] < 0.05  # bicubic 16 -> 24 -> 16 barely moves colour statistics


def test_evaluator_errors_name_the_argument(references, tiny_clip, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"reference_images=.*not a folder"):
        _evaluator(tmp_path / "missing", tiny_clip)
    (tmp_path / "one").mkdir()
    read = list_images(references)[0]
    (tmp_path / "one" / read.name).write_bytes(read.read_bytes())
    with pytest.raises(ValueError, match=r"holds 1 image\(s\)"):
        _evaluator(tmp_path / "one", tiny_clip)
    with pytest.raises(ValueError, match="clip is not set"):
        _evaluator(references, tiny_clip, feature_network="clip", clip=None)
    with pytest.raises(FileNotFoundError, match="none of: 'inception', 'clip'"):
        _evaluator(references, tiny_clip, feature_network="no/such/folder")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        _evaluator(references, tiny_clip, feature_network="no_such_module_xyz:factory")
    with pytest.raises(ValueError, match=r"must map images .* to \(N, D\) features"):
        _evaluator(references, None, feature_network="torch.nn:Identity", clip=None).prepare()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        _evaluator(references, None, feature_network="inception", clip=None)
    (tmp_path / "one" / "broken.png").write_bytes(b"\x89PNG not really")
    broken = _evaluator(tmp_path / "one", tiny_clip)
    with pytest.raises(ValueError, match=r"1 unreadable image\(s\).*broken.png"):
        broken.prepare()


def test_mismatched_evaluator_model_or_data_is_refused_up_front(
    text_teacher, tiny_sd, tiny_teacher_dir, references, tiny_clip, tmp_path
):
    import lightning as L

    with pytest.raises(ValueError, match=r"model is text-to-image; use evaluator: .*TextToImageEvaluator"):
        GenerativeEvaluation(text_teacher, DigitsEvaluator.__new__(DigitsEvaluator))
    class_teacher = DiffusionTeacher.from_pretrained(tiny_teacher_dir)
    with pytest.raises(ValueError, match=r"scores text-to-image samples, but the model is class-conditional"):
        GenerativeEvaluation(class_teacher, _evaluator(references, tiny_clip))
    no_text = DiffusionTeacher.from_pretrained(tiny_sd[0], latent_parts=False)
    with pytest.raises(ValueError, match=r"no text encoder.*latent_parts: true"):
        GenerativeEvaluation(no_text, _evaluator(references, tiny_clip))
    module = GenerativeEvaluation(text_teacher, _evaluator(references, tiny_clip), steps=[1])
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    with pytest.raises(
        ValueError, match=r"gives no prompts: use data: distill.data_prompts.PromptDataModule"
    ):
        trainer.test(module, datamodule=GenerationDataModule(num_samples=4, seeds=[0], num_classes=None))
    (tmp_path / "p.txt").write_text("a red square\n")
    digits = GenerativeEvaluation(class_teacher, DigitsEvaluator.__new__(DigitsEvaluator), steps=[1])
    with pytest.raises(ValueError, match=r"not text-conditioned but data: PromptDataModule gives prompts"):
        trainer.test(digits, datamodule=PromptDataModule(tmp_path / "p.txt"))
    # validation during fit draws no prompts: a text evaluator there is refused, pointing at `distill test`
    from types import SimpleNamespace

    from distill.validation import GenerativeMetrics

    with pytest.raises(ValueError, match=r"set evaluator: null and score the export with `distill test"):
        GenerativeMetrics(_evaluator(references, tiny_clip)).setup(
            None, SimpleNamespace(teacher=text_teacher), "fit"
        )


def test_prompt_data_module_batches_and_errors(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(PROMPTS)
    dm = PromptDataModule(path, num_samples=5, seeds=[3, 4], batch_size=4)
    assert dm.prompts == ["a red square", "a blue circle", "a photo of digit one", "a blue square"]
    rows = [
        (int(s), int(i), p)
        for seeds, indices, prompts in dm.test_dataloader()
        for s, i, p in zip(seeds, indices, prompts, strict=True)
    ]
    assert rows[:5] == [(3, i, dm.prompts[i % 4]) for i in range(5)] and rows[5:] == [
        (4, i, p) for _, i, p in rows[:5]
    ]
    assert len(dm.val_dataloader()) == 3 and PromptDataModule(path).num_samples == 4
    with pytest.raises(FileNotFoundError, match=r"prompt_file=.*does not exist.*one prompt per line"):
        PromptDataModule(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n   \n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        PromptDataModule(tmp_path / "blank.txt")
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        PromptDataModule(path, num_samples=0)
    with pytest.raises(ValueError, match="distinct seeds"):
        PromptDataModule(path, seeds=[0, 0])
