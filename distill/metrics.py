"""The evaluation protocol: FID/KID in the digits evaluator's feature space, class accuracy, noise floors.

Fixed by config (``configs/digits/teacher_eval.yaml``): N generated samples with balanced labels and per-sample
seeds, against two references: the held-out real digits (360) and a shipped set of 2,000 teacher samples (its
features, so a run never regenerates them). Every number is the mean and sample standard deviation over the
evaluation seeds. The noise floor is the teacher measured against itself with other seeds, shipped with the
reference and printed beside every FID.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from distill.classifier import ASSETS, DEFAULT_CLASSIFIER, DigitsClassifier

DEFAULT_REFERENCE = ASSETS / "digits_reference"
METRICS = ("fid_real", "kid_real", "fid_ref", "kid_ref", "accuracy", "fid_self", "fid_self_real_size")


class FeatureNet(nn.Module):
    """torchmetrics feature network over the digits classifier.

    Images (N, 1, H, W) in [-1, 1] map to penultimate features (N, num_features); an (N, num_features) tensor is
    taken as features already computed (shipped reference statistics, or features shared between metrics).
    """

    def __init__(self, classifier: DigitsClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = classifier.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            if x.shape[1] != self.num_features:
                raise ValueError(f"expected (N, {self.num_features}) features, got {tuple(x.shape)}")
            return x
        return self.classifier.features(x.float().clamp(-1, 1))


@dataclass
class Reference:
    """Teacher reference features and the noise floors measured against them."""

    features: torch.Tensor
    labels: torch.Tensor
    meta: dict = field(default_factory=dict)

    @classmethod
    def load(cls, directory: str | Path = DEFAULT_REFERENCE) -> Reference:
        directory = Path(directory)
        if not (directory / "features.safetensors").is_file():
            raise FileNotFoundError(
                f"no reference statistics at {directory} (features.safetensors + reference.json); build them "
                f"with `python -m distill.assets reference --guidance 1.0 --out {directory}` "
                "(see distill/assets/digits_reference/README.md)"
            )
        tensors = load_file(directory / "features.safetensors")
        meta = json.loads((directory / "reference.json").read_text())
        return cls(features=tensors["features"], labels=tensors["labels"], meta=meta)


class SampleMetrics:
    """Accumulates one evaluation (one generator setting, one seed): FID/KID vs real and vs reference, accuracy."""

    def __init__(self, evaluator: DigitsEvaluator) -> None:
        self.evaluator = evaluator
        feat = evaluator.feature_net
        n_real = evaluator.real_features.shape[0]
        self.fid_real = FrechetInceptionDistance(feature=feat, reset_real_features=False)
        self.kid_real = KernelInceptionDistance(
            feature=feat, subsets=evaluator.kid_subsets, subset_size=min(evaluator.kid_subset_size, n_real)
        )
        self.fid_real.update(evaluator.real_features, real=True)
        self.kid_real.update(evaluator.real_features, real=True)
        self.fid_ref = self.kid_ref = None
        if evaluator.reference is not None:
            ref = evaluator.reference.features
            self.fid_ref = FrechetInceptionDistance(feature=feat, reset_real_features=False)
            self.kid_ref = KernelInceptionDistance(
                feature=feat,
                subsets=evaluator.kid_subsets,
                subset_size=min(evaluator.kid_subset_size, ref.shape[0]),
            )
            self.fid_ref.update(ref, real=True)
            self.kid_ref.update(ref, real=True)
        self.correct = 0
        self.count = 0
        self.features: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Add generated images (N, 1, H, W) in [-1, 1] and the labels they were asked for."""
        clf = self.evaluator.classifier
        features = clf.features(images.float().clamp(-1, 1).to(next(clf.parameters()).device))
        self.features.append(features.cpu())
        for metric in (self.fid_real, self.kid_real, self.fid_ref, self.kid_ref):
            if metric is not None:
                metric.update(features.cpu(), real=False)
        if labels is not None:
            pred = clf.head(features).argmax(1).cpu()
            self.correct += int((pred == labels.cpu()).sum())
        self.count += images.shape[0]

    def compute(self) -> dict[str, float]:
        if self.count < 2:
            raise ValueError(f"FID/KID need at least 2 generated images, got {self.count}")
        for kid in (self.kid_real, self.kid_ref):  # KID's subsets cannot be larger than the generated set
            if kid is not None:
                kid.subset_size = min(kid.subset_size, self.count)
        out = {"fid_real": float(self.fid_real.compute())}
        with torch.random.fork_rng():  # KID draws random subsets: fixed so reruns agree exactly
            torch.manual_seed(0)
            out["kid_real"] = float(self.kid_real.compute()[0])
            if self.fid_ref is not None:
                out["fid_ref"] = float(self.fid_ref.compute())
                out["kid_ref"] = float(self.kid_ref.compute()[0])
        out["accuracy"] = self.correct / self.count if self.count else float("nan")
        out["num_samples"] = self.count
        return out


class GenerativeEvaluator:
    """What validation's generative metrics (:class:`distill.validation.GenerativeMetrics`) and ``distill test``
    need of an evaluator: :meth:`accumulator` returns an object with ``update(images, cond)`` (images in [-1, 1],
    ``cond`` the class labels or prompts they were asked for) and ``compute() -> {name: value}``; :meth:`to` moves
    its networks; :meth:`prepare` does the one-off work (reference statistics) before the first sample, so a bad
    reference fails before any generation. ``conditioning`` says which conditions it scores ("class", "text" or
    None). Subclass it for other data; :class:`DigitsEvaluator` is the embedded default's,
    :class:`distill.metrics_t2i.TextToImageEvaluator` the text-to-image one."""

    conditioning: str | None = "class"

    def to(self, device: torch.device | str) -> GenerativeEvaluator:
        return self

    def prepare(self) -> None:
        """Compute or load what every accumulator needs (nothing by default)."""

    def accumulator(self):
        raise NotImplementedError


class DigitsEvaluator(GenerativeEvaluator):
    """The frozen digits evaluator with its two references (never part of any checkpoint).

    Args:
        classifier: folder of the shipped classifier (config.json + model.safetensors).
        reference: folder of a teacher's reference statistics, or ``builtin:NAME`` for the one shipped for
            ``builtin:NAME`` (``builtin:digits``, the default, or ``builtin:digits_flow``); None: real digits only.
        image_size, num_heldout, split_seed: the held-out real digits (must match the data the teacher saw).
        kid_subset_size, kid_subsets: KID's subsets (the size is capped at the smaller set, 360 real digits).
    """

    def __init__(
        self,
        classifier: str | Path = DEFAULT_CLASSIFIER,
        reference: str | Path | None = DEFAULT_REFERENCE,
        image_size: int = 16,
        num_heldout: int = 360,
        split_seed: int = 0,
        kid_subset_size: int = 300,
        kid_subsets: int = 100,
    ) -> None:
        from distill.digits import load_digits_tensors, stratified_split

        self.classifier = DigitsClassifier.from_pretrained(classifier)
        self.feature_net = FeatureNet(self.classifier)
        images, labels = load_digits_tensors(image_size=image_size)
        _, held = stratified_split(labels=labels, num_heldout=num_heldout, seed=split_seed)
        self.real_images, self.real_labels = images[held], labels[held]
        with torch.no_grad():
            self.real_features = self.classifier.features(self.real_images)
        if reference is not None and str(reference).startswith("builtin:"):
            reference = ASSETS / f"{str(reference).removeprefix('builtin:')}_reference"
        self.reference = Reference.load(reference) if reference is not None else None
        expected = None if self.reference is None else self.reference.meta.get("classifier_sha256")
        if expected is not None:
            import hashlib

            actual = hashlib.sha256((Path(classifier) / "model.safetensors").read_bytes()).hexdigest()
            if actual != expected:
                raise ValueError(
                    f"the reference at {reference} was built with another classifier (SHA-256 {expected[:12]}..., "
                    f"this one {actual[:12]}...): rebuild it with `python -m distill.assets reference`"
                )
        if self.reference is not None and self.reference.features.shape[1] != self.classifier.num_features:
            raise ValueError(
                f"reference at {reference} has {self.reference.features.shape[1]}-d features but the classifier "
                f"gives {self.classifier.num_features}-d: rebuild the reference with this classifier"
            )
        self.kid_subset_size = kid_subset_size
        self.kid_subsets = kid_subsets

    def to(self, device: torch.device | str) -> DigitsEvaluator:
        self.classifier.to(device)
        return self

    def accumulator(self) -> SampleMetrics:
        return SampleMetrics(self)

    def real_accuracy(self) -> float:
        with torch.no_grad():
            return float((self.classifier(self.real_images).argmax(1) == self.real_labels).float().mean())

    @property
    def floors(self) -> dict[str, dict[str, float]]:
        """Noise floors shipped with the reference: {"fid_ref": {"mean", "std"}, "fid_real": {...}}."""
        return {} if self.reference is None else self.reference.meta.get("noise_floor", {})


def self_fid(features: torch.Tensor, other: torch.Tensor, feature_net: FeatureNet) -> float:
    """FID between two feature sets of the same generator (other seeds): the metric's sampling noise."""
    fid = FrechetInceptionDistance(feature=feature_net)
    fid.update(other, real=True)
    fid.update(features, real=False)
    return float(fid.compute())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summarize(
    per_seed: Sequence[dict[str, float]], keys: Sequence[str] = METRICS
) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std"}} over the seeds' results, for each of ``keys`` they hold."""
    out = {}
    for key in keys:
        values = [r[key] for r in per_seed if key in r]
        if values:
            m, s = mean_std(values)
            out[key] = {"mean": m, "std": s}
    return out


def format_cell(summary: dict[str, dict[str, float]], key: str, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of ``summary[key]`` (times ``scale``), or "-" when the key is absent."""
    if key not in summary:
        return "-"
    return f"{summary[key]['mean'] * scale:.{digits}f} ± {summary[key]['std'] * scale:.{digits}f}"


def format_table(rows: Sequence[dict], floors: dict[str, dict[str, float]] | None = None) -> str:
    """Markdown table of summarized rows ({"name", "steps", "guidance", "summary": summarize(...)})."""
    floors = floors or {}
    header = (
        "| model | steps | CFG | FID vs real | KID vs real (x1e3) | FID vs teacher ref | "
        "KID vs ref (x1e3) | accuracy (%) |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        s = row["summary"]
        lines.append(
            f"| {row['name']} | {row['steps']} | {row['guidance']} | {format_cell(s, 'fid_real')} | "
            f"{format_cell(s, 'kid_real', 1e3)} | {format_cell(s, 'fid_ref')} | {format_cell(s, 'kid_ref', 1e3)} | "
            f"{format_cell(s, 'accuracy', 100, 1)} |"
        )
    if floors:
        lines.append(
            f"| noise floor (teacher vs itself, other seeds) | | | "
            f"{floors.get('fid_real', {}).get('mean', float('nan')):.2f} ± "
            f"{floors.get('fid_real', {}).get('std', float('nan')):.2f} | | "
            f"{floors.get('fid_ref', {}).get('mean', float('nan')):.2f} ± "
            f"{floors.get('fid_ref', {}).get('std', float('nan')):.2f} | | |"
        )
    return "\n".join(lines)
