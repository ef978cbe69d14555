"""The evaluation protocol: shipped evaluator, FID/KID plumbing, balanced seeded generation, the table."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SCHEDULER, save_teacher_folder, tiny_cond_unet

from distill.classifier import DigitsClassifier
from distill.data import GenerationDataModule
from distill.methods.classifier import augment
from distill.methods.evaluation import GenerativeEvaluation
from distill.metrics import DigitsEvaluator, FeatureNet, format_table, mean_std, summarize
from teachers import DiffusionTeacher
from teachers.sampling import per_sample_noise


@pytest.fixture(scope="module")
def evaluator():
    return DigitsEvaluator(reference=None, kid_subset_size=100, kid_subsets=20)


def test_shipped_classifier_meets_its_bar(evaluator):
    assert evaluator.real_accuracy() >= 0.97
    clf = evaluator.classifier
    assert not clf.training and not any(p.requires_grad for p in clf.parameters())
    assert evaluator.real_features.shape == (360, clf.num_features)


def test_feature_net_passes_precomputed_features_through(evaluator):
    net = FeatureNet(evaluator.classifier)
    feats = torch.randn(5, net.num_features)
    assert net(feats) is feats
    assert net(evaluator.real_images[:3]).shape == (3, net.num_features)
    with pytest.raises(ValueError, match="features"):
        net(torch.randn(5, 3))


def test_real_digits_score_near_zero_and_noise_scores_badly(evaluator):
    real = evaluator.accumulator()
    real.update(evaluator.real_images, evaluator.real_labels)
    good = real.compute()
    assert abs(good["fid_real"]) < 1e-3 and good["accuracy"] == 1.0
    noise = evaluator.accumulator()
    noise.update(
        torch.rand(360, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1, evaluator.real_labels
    )
    bad = noise.compute()
    assert bad["fid_real"] > 10 and bad["kid_real"] > 10 * abs(
        good["kid_real"]
    )  # KID of equal sets is ~0 +- noise
    assert bad["accuracy"] < 0.5
    # KID's draws are seeded: the same result twice
    assert noise.compute()["kid_real"] == bad["kid_real"]


def test_shifted_real_digits_are_close_but_not_identical(evaluator):
    shifted = evaluator.accumulator()
    shifted.update(
        augment(evaluator.real_images, max_shift=1, generator=torch.Generator().manual_seed(0)),
        evaluator.real_labels,
    )
    result = shifted.compute()
    assert 0 < result["fid_real"] < 5 and result["accuracy"] > 0.95


def test_per_sample_noise_does_not_depend_on_batching():
    seeds = torch.tensor([0, 0, 1, 1])
    idx = torch.tensor([0, 1, 0, 1])
    whole = per_sample_noise(seeds=seeds, indices=idx, shape=(1, 4, 4))
    parts = torch.cat(
        [per_sample_noise(seeds=seeds[i : i + 1], indices=idx[i : i + 1], shape=(1, 4, 4)) for i in range(4)]
    )
    assert torch.equal(whole, parts)
    assert not torch.equal(whole[0], whole[2])  # other seed, other noise


def test_generation_data_is_balanced_and_seeded():
    dm = GenerationDataModule(num_samples=20, seeds=[3, 4], num_classes=10, batch_size=7)
    rows = torch.cat([torch.stack(b, 1) for b in dm.test_dataloader()])
    assert rows.shape == (40, 3)
    assert rows[:, 0].tolist() == [3] * 20 + [4] * 20
    assert torch.bincount(rows[:20, 2]).tolist() == [2] * 10
    with pytest.raises(ValueError, match="multiple of num_classes"):
        GenerationDataModule(num_samples=25)


def test_mean_std_and_table():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    rows = [
        {
            "name": "t",
            "steps": 4,
            "guidance": 2.0,
            "summary": summarize([{"fid_real": 1.0, "accuracy": 0.9}, {"fid_real": 3.0, "accuracy": 1.0}]),
        }
    ]
    table = format_table(rows, {"fid_ref": {"mean": 0.5, "std": 0.1}, "fid_real": {"mean": 2.0, "std": 0.2}})
    assert "| t | 4 | 2.0 | 2.00 ± 1.41 |" in table
    assert "95.0 ± 7.1" in table and "noise floor" in table


def test_generative_evaluation_end_to_end(tmp_path):
    import lightning as L

    path = tmp_path / "teacher"
    save_teacher_folder(path, tiny_cond_unet(sample_size=16), SCHEDULER)
    teacher = DiffusionTeacher.from_pretrained(path)
    evaluator = DigitsEvaluator(reference=None, kid_subset_size=10, kid_subsets=5)
    module = GenerativeEvaluation(
        teacher, evaluator, steps=[2, 1], guidance_scale=2.0, name="tiny", output=str(tmp_path / "eval.json")
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.test(module, GenerationDataModule(num_samples=20, seeds=[0, 1], batch_size=15))
    results = json.loads((tmp_path / "eval.json").read_text())
    assert [r["steps"] for r in results["rows"]] == [2, 1]
    row = results["rows"][0]
    assert len(row["per_seed"]) == 2 and row["per_seed"][0]["num_samples"] == 20
    assert row["summary"]["fid_real"]["mean"] > 0 and "fid_self" in row["summary"]
    assert "| tiny | 2 | 2.0 |" in results["table"]
    # deterministic: the same numbers again, at another batch size (up to float summation order)
    again = GenerativeEvaluation(teacher, evaluator, steps=[2, 1], guidance_scale=2.0, name="tiny")
    trainer.test(again, GenerationDataModule(num_samples=20, seeds=[0, 1], batch_size=20))
    for got, want in zip(again.results["rows"][0]["per_seed"], row["per_seed"], strict=True):
        assert got.keys() == want.keys()
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_classifier_round_trip(tmp_path):
    clf = DigitsClassifier(widths=(8, 8, 8), num_features=16)
    clf.save_pretrained(tmp_path / "c")
    again = DigitsClassifier.from_pretrained(tmp_path / "c")
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(clf.eval()(x), again(x))
    with pytest.raises(FileNotFoundError, match="classifier"):
        DigitsClassifier.from_pretrained(tmp_path / "missing")


def test_shipped_reference_matches_the_shipped_classifier_and_teacher():
    import hashlib

    from teachers.teacher import BUILTIN_TEACHERS

    evaluator = DigitsEvaluator()
    ref = evaluator.reference
    assert ref.features.shape == (2000, evaluator.classifier.num_features)
    assert torch.bincount(ref.labels).tolist() == [200] * 10
    weights = next((BUILTIN_TEACHERS["digits"] / "unet").glob("*.safetensors"))
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == ref.meta["teacher_sha256"]
    assert ref.meta["num_samples"] >= 2000 and ref.meta["accuracy"] >= 0.9


def test_reference_from_another_classifier_is_refused(tmp_path):
    clf = DigitsClassifier()
    clf.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="another classifier"):
        DigitsEvaluator(classifier=tmp_path / "other")


def test_missing_reference_names_the_command_that_builds_it(tmp_path, monkeypatch):
    import re
    import shlex

    import distill.assets
    from distill.metrics import Reference

    missing = tmp_path / "no_reference"
    with pytest.raises(FileNotFoundError, match="no reference statistics") as info:
        Reference.load(missing)
    [command] = re.findall(r"`(python -m [^`]+)`", str(info.value))
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "distill.assets"]
    # The named command parses as it stands and dispatches to the builder of the reference, writing to `missing`.
    calls = []
    monkeypatch.setattr(distill.assets, "reference", calls.append)
    distill.assets.main(argv[3:])
    [args] = calls
    assert args.command == "reference" and args.out == missing and not missing.exists()
