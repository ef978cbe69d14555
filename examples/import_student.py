"""Use a distill-diffusion student architecture in another repository, without the trainer.

    pip install distill-diffusion        # or: pip install -e path/to/distill-diffusion
    python examples/import_student.py

Only torch, diffusers and timm are imported (not lightning, not distill): students/ stands alone.
"""

from __future__ import annotations

import tempfile

import torch

import students

print("registered students:", ", ".join(students.list_students()))

# BK-SDM-Small derived from a teacher config: a diffusers folder, a pipeline folder, a config dict, or a model.
sd_like = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64, 128, 128],
    "layers_per_block": 2,
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
}
bk_small = students.create_student("bk_small", teacher=sd_like)
info = bk_small.student_info
print(
    f"bk_small: {students.count_parameters(bk_small):,} parameters; init mapping {len(info.init_mapping)} prefixes;"
)
print("  feature KD pairs:", info.feature_pairs)

# A mobile UNet with a timm encoder, taking the digits teacher's inputs, and the same call signature as diffusers.
unet = students.create_student("timm_unet_digits").eval()
x = torch.randn(2, 1, 16, 16)
with torch.no_grad():
    out = unet(x, torch.tensor([10, 900]), None, class_labels=torch.tensor([3, 7])).sample
print("timm_unet_digits output:", tuple(out.shape))

# Students save and reload like any diffusers model.
with tempfile.TemporaryDirectory() as folder:
    unet.save_pretrained(folder)
    again = type(unet).from_pretrained(folder)
print("reloaded:", type(again).__name__)


# Your own architecture joins the registry (other packages: the `distill_diffusion.students` entry-point group).
@students.register_student(name="my_tiny_unet")
def my_tiny_unet(**kwargs):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=[16, 32],
        down_block_types=["DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D"],
        layers_per_block=1,
        norm_num_groups=8,
        num_class_embeds=11,
        **kwargs,
    )


print("my_tiny_unet:", students.count_parameters(students.create_student("my_tiny_unet")), "parameters")
