"""The digits evaluator: a small CNN whose predictions judge class accuracy and whose penultimate features
feed FID/KID (the digits analogue of Inception features / CLIP score)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_CLASSIFIER = ASSETS / "digits_classifier"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
    )


class DigitsClassifier(nn.Module):
    """Conv net for (N, 1, 16, 16) digits in [-1, 1]: ``features`` (N, num_features) and ``forward`` logits.

    Args:
        widths: channels of the three conv stages (16 -> 8 -> 4 pixels).
        num_features: width of the penultimate layer (the FID/KID feature space).
        num_classes: output classes.
        dropout: dropout before the last layer while training.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (32, 64, 128),
        num_features: int = 64,
        num_classes: int = 10,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.config = {
            "widths": list(widths),
            "num_features": num_features,
            "num_classes": num_classes,
            "dropout": dropout,
        }
        self.num_features = num_features
        self.stages = nn.Sequential(
            _block(1, widths[0]),
            nn.AvgPool2d(2),
            _block(widths[0], widths[1]),
            nn.AvgPool2d(2),
            _block(widths[1], widths[2]),
        )
        self.embed = nn.Sequential(nn.Linear(widths[2], num_features), nn.SiLU())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.stages(images).mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))

    # -- a diffusers-like folder: config.json + model.safetensors ------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")

    @classmethod
    def from_pretrained(cls, directory: str | Path = DEFAULT_CLASSIFIER) -> DigitsClassifier:
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"no digits classifier at {directory} (config.json + model.safetensors); train one with "
                f"`distill fit -c configs/digits/classifier.yaml` and save it with scripts in its README"
            )
        config = json.loads((directory / "config.json").read_text())
        model = cls(
            widths=tuple(config["widths"]),
            num_features=config["num_features"],
            num_classes=config["num_classes"],
            dropout=config["dropout"],
        )
        model.load_state_dict(load_file(directory / "model.safetensors"))
        return model.eval().requires_grad_(False)
