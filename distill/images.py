"""Image files as tensors, without the trainer: the suffixes read, one file as (3, H, W) in [-1, 1], and the
resize + center crop that puts reference and generated images on the same grid before any metric sees them."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursively, by suffix), sorted by path."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as RGB (3, H, W) float32 in [-1, 1] (PIL decodes; greyscale and RGBA become RGB)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as handle:
        image = handle.convert("RGB")
    array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
    return array.div(127.5).sub(1.0)


def resize_center_crop(
    images: torch.Tensor, size: int, *, value_range: tuple[float, float] = (-1.0, 1.0)
) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size) float32 clamped to ``value_range``: the shorter side resized to ``size``
    (bicubic, antialiased), then the center crop. Images already ``size`` square are only clamped."""
    images = images.float()
    h, w = images.shape[-2:]
    if h == w == size:
        return images.clamp(*value_range)
    scale = size / min(h, w)
    resized = F.interpolate(
        images,
        size=(max(size, round(h * scale)), max(size, round(w * scale))),
        mode="bicubic",
        align_corners=False,
        antialias=True,
    ).clamp(*value_range)
    top, left = (resized.shape[-2] - size) // 2, (resized.shape[-1] - size) // 2
    return resized[..., top : top + size, left : left + size]
