"""Image files as tensors, without the trainer: the suffixes read, one file as (3, H, W) in [-1, 1], the
resize + center crop that puts reference and generated images on the same grid before any metric sees them, and
sample grids enlarged for viewing (nearest neighbour, an integer factor)."""

from __future__ import annotations

import math
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


# Sample grids are enlarged until their long side reaches VIEW_LONG_SIDE and each image VIEW_TILE pixels, unless
# that would take the long side past VIEW_MAX_LONG_SIDE.
VIEW_LONG_SIDE = 512
VIEW_TILE = 64
VIEW_MAX_LONG_SIDE = 2048


def view_factor(
    long_side: int,
    tile: int | None = None,
    *,
    min_long_side: int = VIEW_LONG_SIDE,
    min_tile: int = VIEW_TILE,
    max_long_side: int = VIEW_MAX_LONG_SIDE,
) -> int:
    """The integer factor that takes a grid of ``long_side`` pixels (images of ``tile`` pixels) to at least
    ``min_long_side`` and ``min_tile``, capped so the long side stays within ``max_long_side``; at least 1."""
    want = math.ceil(min_long_side / max(1, long_side))
    if tile:
        want = max(want, math.ceil(min_tile / tile))
    return max(1, min(want, max_long_side // max(1, long_side)))


def upscale_nearest(image: torch.Tensor, factor: int) -> torch.Tensor:
    """(..., H, W) -> (..., factor H, factor W), every pixel an exact ``factor`` x ``factor`` block (no smoothing)."""
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if factor == 1:
        return image
    return image.repeat_interleave(int(factor), dim=-2).repeat_interleave(int(factor), dim=-1)


def viewable_grid(
    images: torch.Tensor, *, nrow: int, padding: int = 1, pad_value: float = 1.0, **limits: int
) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, H', W') grid (``padding`` pixels between images), enlarged by
    :func:`view_factor` with :func:`upscale_nearest`: 16-pixel digits become visible, 512-pixel images stay as
    they are. ``limits`` are :func:`view_factor`'s keywords."""
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    factor = view_factor(max(grid.shape[-2:]), max(images.shape[-2:]), **limits)
    return upscale_nearest(grid, factor)
