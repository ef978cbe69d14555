"""Text-to-image evaluation: FID/KID of generated images against a local folder of reference images, in the
feature space of a network the user names, and CLIP score against the prompts they were generated from.

The feature network (``feature_network``) is one of:

* ``"inception"``: torchmetrics' Inception-v3 pool features (2048-d), the standard FID; its weights must already
  be on disk (:func:`distill.clip_score.inception_fid`) and torch-fidelity installed. Nothing is downloaded.
* ``"clip"``: the image tower of the ``clip`` folder (its projected image embeddings, ``get_image_features``).
* a path to a local CLIP folder (``CLIPModel.save_pretrained`` layout): that model's image tower.
* ``"package.module:factory"``: a callable, called with no arguments, returning an ``nn.Module`` that maps images
  (N, 3, S, S) in [-1, 1] (S = ``image_size``) to (N, D) features.

FIDs on different feature networks are different numbers: the table and the JSON name the one used. Reference
and generated images both go through the same resize (shorter side to ``image_size``, bicubic) and center crop
before the feature network; the reference features are computed once per evaluator (:meth:`prepare`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from distill.clip_score import CLIPScore
from distill.images import list_images, read_image, resize_center_crop
from distill.metrics import GenerativeEvaluator, format_cell

METRICS = ("fid", "kid", "clip_score")
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class ImageFeatures(nn.Module):
    """torchmetrics feature network: images (N, 3, H, W) in [-1, 1] -> (N, D) float features; an (N, D) tensor is
    taken as features already computed (the reference's, or ones shared between FID and KID)."""

    def __init__(self, network: nn.Module, name: str) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.name = name
        self.num_features: int | None = None  # known once the reference features are computed

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            if self.num_features is not None and x.shape[1] != self.num_features:
                raise ValueError(f"expected (N, {self.num_features}) features, got {tuple(x.shape)}")
            return x
        out = self.network(x.float().clamp(-1, 1))
        if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(
                f"feature_network {self.name!r} must map images (N, 3, H, W) to (N, D) features, got {shape}"
            )
        return out.float()


class CLIPImageTower(nn.Module):
    """A CLIP model's image embeddings (``get_image_features``) of images in [-1, 1], with CLIP's preprocessing."""

    def __init__(self, clip: CLIPScore) -> None:
        super().__init__()
        self.clip = clip
        self.model = clip.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.image_features(x.add(1).div(2))


class UInt8Images(nn.Module):
    """Images in [-1, 1] -> uint8 [0, 255] for a network that takes bytes (torchmetrics' Inception-v3)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8))


def _factory_network(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"feature_network={spec!r}: cannot import module {module_name!r} ({error}); give 'package.module:factory' "
            "of an importable module, 'inception', 'clip' or a local CLIP folder"
        ) from error
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"feature_network={spec!r}: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"feature_network={spec!r} is not callable: give a factory returning an nn.Module")
    network = target()
    if not isinstance(network, nn.Module):
        raise TypeError(
            f"feature_network={spec!r} returned a {type(network).__name__}, not a torch.nn.Module mapping images "
            "(N, 3, H, W) in [-1, 1] to (N, D) features"
        )
    return network


class TextToImageEvaluator(GenerativeEvaluator):
    """FID and KID against a folder of reference images, and CLIP score, of text-to-image samples.

    Args:
        reference_images: a local folder of reference images (png, jpg, jpeg, webp, bmp; searched recursively),
            e.g. the real images the prompts describe.
        feature_network: what FID/KID are computed on: ``"inception"`` (Inception-v3 weights on disk),
            ``"clip"`` (the ``clip`` folder's image tower), a local CLIP folder, or ``"package.module:factory"``
            (see the module docstring).
        clip: a local CLIP folder for the CLIP score (None: no CLIP score).
        image_size: reference and generated images are resized (shorter side) and center-cropped to this size
            before the feature network.
        max_reference_images: use only the first N reference images (sorted by path; None: all).
        kid_subset_size, kid_subsets: KID's subsets (the size is capped at the smaller of the two sets).
        batch_size: images per feature-network batch when reading the reference folder.
    """

    conditioning = "text"

    def __init__(
        self,
        reference_images: str | Path,
        feature_network: str = "inception",
        clip: str | Path | None = None,
        image_size: int = 512,
        max_reference_images: int | None = None,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        batch_size: int = 32,
    ) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if kid_subset_size < 2 or kid_subsets < 1 or batch_size < 1:
            raise ValueError(
                "need kid_subset_size >= 2, kid_subsets >= 1 and batch_size >= 1, got "
                f"{kid_subset_size}, {kid_subsets} and {batch_size}"
            )
        root = Path(reference_images).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"reference_images={str(root)!r} is not a folder: pass a local folder of reference images "
                "(png/jpg), e.g. the real images the prompts describe"
            )
        files = list_images(root)
        if max_reference_images is not None:
            if max_reference_images < 2:
                raise ValueError(f"max_reference_images must be >= 2 (or null), got {max_reference_images}")
            files = files[:max_reference_images]
        if len(files) < 2:
            raise ValueError(
                f"reference_images={str(root)!r} holds {len(files)} image(s) (png/jpg/jpeg/webp/bmp); FID needs at "
                "least 2, and a few thousand for a stable number"
            )
        self.reference_root, self.reference_files = root, files
        self.image_size = image_size
        self.kid_subset_size, self.kid_subsets, self.batch_size = kid_subset_size, kid_subsets, batch_size
        self.device = torch.device("cpu")
        self.clip_folder = None if clip is None else Path(clip).expanduser()
        self.clip = CLIPScore(self.clip_folder) if self.clip_folder is not None else None
        self.feature_network = feature_network
        self._feature_clip: CLIPScore | None = None
        self.feature_net = ImageFeatures(self._network(feature_network), self._label(feature_network))
        self.reference_features: torch.Tensor | None = None

    def _network(self, spec: str) -> nn.Module:
        if spec == "inception":
            from distill.clip_score import inception_fid

            return UInt8Images(inception_fid().inception)
        if spec == "clip":
            if self.clip is None:
                raise ValueError(
                    "feature_network='clip' takes the image tower of the `clip` folder, but clip is not set: set "
                    "clip to a local CLIP folder, or feature_network to 'inception', a CLIP folder or "
                    "'module:factory'"
                )
            self._feature_clip = self.clip
            return CLIPImageTower(self.clip)
        path = Path(spec).expanduser()
        if path.is_dir():
            self._feature_clip = CLIPScore(path)
            return CLIPImageTower(self._feature_clip)
        if FACTORY.match(spec):
            return _factory_network(spec)
        raise FileNotFoundError(
            f"feature_network={spec!r} is none of: 'inception', 'clip', an existing local CLIP folder, "
            "'package.module:factory'"
        )

    def _label(self, spec: str) -> str:
        if spec == "inception":
            return "Inception-v3"
        if spec == "clip" or Path(spec).expanduser().is_dir():
            folder = self.clip_folder if spec == "clip" else Path(spec).expanduser()
            return f"CLIP {Path(str(folder)).name}"
        return spec

    def to(self, device: torch.device | str) -> TextToImageEvaluator:
        self.device = torch.device(device)
        self.feature_net.to(self.device)
        for clip in (self.clip, self._feature_clip):
            if clip is not None:
                clip.to(self.device)
        return self

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, D) on the CPU of images (N, 3, H, W) in [-1, 1], resized and cropped to ``image_size``."""
        images = resize_center_crop(images.to(self.device).float().clamp(-1, 1), self.image_size)
        return self.feature_net(images).cpu()

    @torch.no_grad()
    def prepare(self) -> None:
        """Read the reference folder in batches and keep its features (once); unreadable files are named."""
        if self.reference_features is not None:
            return
        chunks, problems, batch = [], [], []
        for i, path in enumerate(self.reference_files):
            try:
                batch.append(resize_center_crop(read_image(path)[None], self.image_size))
            except Exception as error:  # PIL raises many types for broken files
                problems.append(f"{path.relative_to(self.reference_root)} ({type(error).__name__}: {error})")
            if batch and (len(batch) == self.batch_size or i == len(self.reference_files) - 1):
                chunks.append(self.features(torch.cat(batch)))
                batch = []
        if problems:
            listing = "; ".join(problems[:10]) + (
                f"; ... ({len(problems) - 10} more)" if len(problems) > 10 else ""
            )
            raise ValueError(
                f"{len(problems)} unreadable image(s) in reference_images={str(self.reference_root)!r}: {listing}. "
                "Fix or remove them"
            )
        self.reference_features = torch.cat(chunks)
        self.feature_net.num_features = int(self.reference_features.shape[1])

    def accumulator(self) -> TextToImageMetrics:
        self.prepare()
        return TextToImageMetrics(self)

    def describe(self) -> dict:
        """What the numbers were measured against (for the results file)."""
        return {
            "reference_images": str(self.reference_root),
            "num_reference_images": len(self.reference_files),
            "feature_network": self.feature_network,
            "features": self.feature_net.name,
            "num_features": self.feature_net.num_features,
            "image_size": self.image_size,
            "clip": None if self.clip_folder is None else str(self.clip_folder),
        }


class TextToImageMetrics:
    """Accumulates one evaluation (one step count, one seed): FID and KID vs the reference, CLIP score."""

    def __init__(self, evaluator: TextToImageEvaluator) -> None:
        self.evaluator = evaluator
        reference = evaluator.reference_features
        assert reference is not None, "call evaluator.prepare() first"
        feat = evaluator.feature_net
        self.fid = FrechetInceptionDistance(feature=feat, reset_real_features=False)
        self.kid = KernelInceptionDistance(
            feature=feat,
            subsets=evaluator.kid_subsets,
            subset_size=min(evaluator.kid_subset_size, reference.shape[0]),
            reset_real_features=False,
        )
        self.fid.update(reference, real=True)
        self.kid.update(reference, real=True)
        self.clip_scores: list[torch.Tensor] = []
        self.count = 0

    @torch.no_grad()
    def update(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> None:
        """Add generated images (N, 3, H, W) in [-1, 1] and the prompts they were generated from."""
        features = self.evaluator.features(images)
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)
        clip = self.evaluator.clip
        if clip is not None:
            if prompts is None:
                raise ValueError("the CLIP score needs the prompts of the images: update(images, prompts)")
            self.clip_scores.append(
                clip.per_sample(images.float().clamp(-1, 1).add(1).div(2), list(prompts)).cpu()
            )
        self.count += images.shape[0]

    def compute(self) -> dict[str, float]:
        if self.count < 2:
            raise ValueError(f"FID/KID need at least 2 generated images, got {self.count}")
        self.kid.subset_size = min(self.kid.subset_size, self.count)  # KID's subsets fit the smaller set
        out = {"fid": float(self.fid.compute())}
        with torch.random.fork_rng():  # KID draws random subsets: fixed so reruns agree exactly
            torch.manual_seed(0)
            out["kid"] = float(self.kid.compute()[0])
        if self.clip_scores:
            out["clip_score"] = float(torch.cat(self.clip_scores).mean())
        out["num_samples"] = self.count
        return out


def format_table(rows: Sequence[dict], features: str) -> str:
    """Markdown table of summarized rows ({"name", "steps", "guidance", "summary"}), FID on ``features``."""
    lines = [
        f"| model | steps | CFG | FID ({features}) | KID (x1e3) | CLIP score |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        s = row["summary"]
        lines.append(
            f"| {row['name']} | {row['steps']} | {row['guidance']} | {format_cell(s, 'fid')} | "
            f"{format_cell(s, 'kid', 1e3)} | {format_cell(s, 'clip_score')} |"
        )
    return "\n".join(lines)
