"""Text-to-image metrics that need weights from a local folder: CLIP score, and FID with Inception when its weights
are on disk.

``CLIPScore`` follows torchmetrics' definition (Hessel et al. 2021): ``100 * max(cos(image, text), 0)`` per pair,
averaged. It is computed here rather than through ``torchmetrics.multimodal.CLIPScore`` because torchmetrics 1.9
expects ``get_text_features``/``get_image_features`` to return tensors, and transformers 5 returns model outputs;
this works with both. Nothing is downloaded: the CLIP folder must be local (``save_pretrained`` layout).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from distill.images import resize_center_crop

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


def _features(output) -> torch.Tensor:
    """The projected embedding from ``get_*_features`` (a tensor in transformers 4, a model output in 5)."""
    if torch.is_tensor(output):
        return output
    for key in ("text_embeds", "image_embeds", "pooler_output"):
        value = getattr(output, key, None)
        if value is not None:
            return value
    raise TypeError(f"cannot find the projected features in {type(output).__name__}")


class CLIPScore:
    """CLIP score of images against prompts with a local CLIP model.

    Args:
        path: a local folder with a ``CLIPModel`` (``config.json`` + weights) and its tokenizer files; image
            preprocessing comes from ``preprocessor_config.json`` when present (else CLIP's 224 px defaults).
        device: where to run it.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        try:
            from transformers import CLIPModel, CLIPTokenizer
        except ImportError as error:  # pragma: no cover - only without the extra
            raise ImportError(
                "CLIP score needs the t2i extra: pip install 'distill-diffusion[t2i]'"
            ) from error
        root = Path(path).expanduser()
        config_file = root / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"no CLIP model at {root} (expected config.json and weights written by CLIPModel.save_pretrained); "
                "CLIP weights are never downloaded: copy a CLIP folder (e.g. openai/clip-vit-large-patch14) there"
            )
        architectures = json.loads(config_file.read_text()).get("architectures") or ["CLIPModel"]
        if architectures[0] != "CLIPModel":
            raise ValueError(f"{root} holds a {architectures[0]!r}, not a CLIPModel")
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(root).to(self.device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(root)
        size = int(self.model.config.vision_config.image_size)
        mean, std = CLIP_MEAN, CLIP_STD
        pre = root / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        self.size = size
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def to(self, device: str | torch.device) -> CLIPScore:
        """Move the model and the normalisation to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (N, 3, H, W): shorter side to the model's size (bicubic), center crop, normalise."""
        cropped = resize_center_crop(images.to(self.device), self.size, value_range=(0.0, 1.0))
        return (cropped - self.mean) / self.std

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The projected image embeddings (N, D) of images in [0, 1] (N, 3, H, W), preprocessed as CLIP's."""
        return _features(self.model.get_image_features(pixel_values=self.preprocess(images)))

    @torch.no_grad()
    def per_sample(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """``100 * max(cos, 0)`` for each (image, prompt) pair."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        tokens = self.tokenizer(
            list(prompts),
            padding=True,
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).to(self.device)
        text = _features(self.model.get_text_features(**tokens))
        image = self.image_features(images)
        cos = F.cosine_similarity(image.float(), text.float(), dim=-1)
        return 100.0 * cos.clamp(min=0)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> float:
        return float(self.per_sample(images, prompts).mean())


def inception_fid(*, reset_real_features: bool = True):
    """torchmetrics' FID with the standard Inception-v3 features, only when its weights are already on disk.

    Otherwise a clear error: nothing is downloaded. Use :class:`distill.metrics.DigitsEvaluator`-style custom
    features (``torchmetrics.image.fid.FrechetInceptionDistance(feature=your_module)``) instead.
    """
    hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS
    if not hub.is_file():
        raise FileNotFoundError(
            f"FID with Inception-v3 needs its weights at {hub} (torch-fidelity's {INCEPTION_WEIGHTS}); they are "
            "never downloaded at run time. Copy them there from a machine with internet access, or compute FID on "
            "another feature network: FrechetInceptionDistance(feature=<an nn.Module returning (N, D) features>)"
        )
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048, reset_real_features=reset_real_features, normalize=True)
    except ModuleNotFoundError as error:  # pragma: no cover - torch-fidelity absent
        raise ImportError("Inception FID needs torch-fidelity: pip install torch-fidelity") from error
