"""Sample grids enlarged for viewing: an integer factor, nearest neighbour (every pixel an exact block), to at
least 512 px on the long side and 64 px per image, in the PNGs written and the TensorBoard images."""

from __future__ import annotations

import numpy
import pytest
import torch
from PIL import Image
from torchvision.utils import make_grid

from distill.images import upscale_nearest, view_factor, viewable_grid
from distill.validation import image_grid


@pytest.mark.parametrize(
    ("long_side", "tile", "factor"),
    [
        (171, 16, 4),  # the demo's grid of 16 px digits: 684 px, 64 px digits
        (52, 16, 10),  # three digits: 520 px
        (512, 512, 1),  # a 512 px image stays as it is
        (1000, 8, 2),  # many tiny images: the cap (2048 px) wins over 64 px tiles
        (3000, 16, 1),  # already past the cap
        (1, None, 512),
    ],
)
def test_view_factor(long_side, tile, factor):
    assert view_factor(long_side, tile) == factor


def test_upscale_nearest_makes_exact_blocks():
    image = torch.rand(3, 5, 7)
    big = upscale_nearest(image, 4)
    assert big.shape == (3, 20, 28)
    blocks = big.reshape(3, 5, 4, 7, 4)
    assert torch.equal(blocks, image[:, :, None, :, None].expand(3, 5, 4, 7, 4))
    assert upscale_nearest(image, 1) is image
    with pytest.raises(ValueError, match="positive integer"):
        upscale_nearest(image, 0)


def test_image_grid_for_tensorboard_is_the_native_grid_enlarged():
    images = torch.rand(40, 1, 16, 16) * 2 - 1  # SampleGrid's digits: 4 rows of 10
    grid = image_grid(images, nrow=10)
    native = make_grid(images.add(1).div(2), nrow=10, padding=1, pad_value=1.0)
    assert native.shape[-2:] == (69, 171)
    assert grid.shape == (3, 4 * 69, 4 * 171)
    assert max(grid.shape[-2:]) >= 512
    assert torch.equal(grid, upscale_nearest(native, 4))


def test_demo_grid_png_is_enlarged_with_exact_pixels(tmp_path):
    from distill import demo
    from teachers import DiffusionTeacher

    teacher = DiffusionTeacher.from_pretrained("builtin:digits").eval()
    rows = [("teacher, DDIM 1 step", "teacher", 1), ("again", "teacher", 1)]
    path = tmp_path / "samples.png"
    demo.grid({"teacher": teacher}, rows, path=path)
    png = numpy.asarray(Image.open(path).convert("RGB"))
    assert png.shape == (4 * 35, 4 * 171, 3)  # two rows of ten 16 px digits (171 x 35), 4x
    blocks = png.reshape(35, 4, 171, 4, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # every 4x4 block is one pixel's colour
    assert (png[:4] == 255).all()  # the white gap at the top, 4 px tall
    assert max(png.shape[:2]) >= 512


def test_viewable_grid_keeps_large_images_as_they_are():
    images = torch.rand(2, 3, 512, 512)
    assert torch.equal(viewable_grid(images, nrow=2), make_grid(images, nrow=2, padding=1, pad_value=1.0))
