"""Efficient UNets (after SnapFusion, Li et al. 2023, and MobileDiffusion, Zhao et al. 2023): per-stage counts
of residual blocks and attention, attention only at low resolution, narrower channels, and optionally
depthwise-separable 3x3 convolutions in the residual blocks.

Without separable convolutions the student is a plain diffusers ``UNet2DConditionModel`` (it saves with
``save_pretrained`` and drops into any pipeline as ``unet=``). With them it is
:class:`EfficientUNet2DConditionModel`, a subclass that differs only in those convolutions. Its config names its
blocks ``Separable*`` (``SeparableDownBlock2D``, ...), so ``EfficientUNet2DConditionModel.from_pretrained`` (and
``students.load_student``) rebuild it exactly, while diffusers' own ``UNet2DConditionModel.from_pretrained``
refuses the folder ("SeparableDownBlock2D does not exist") instead of building a different network around
weights it cannot place. Folders that spell the blocks the stock way with ``separable_convs: true`` (written
before) still load.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from students.common import StudentInfo, TeacherLike, attach_info, teacher_config
from students.registry import register_student


class SeparableConv2d(nn.Module):
    """Depthwise k x k convolution followed by a pointwise 1x1 (MobileNet's factorisation of a k x k conv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def separate_resnet_convs(model: nn.Module) -> int:
    """Replace the 3x3 ``conv1``/``conv2`` of every diffusers ResnetBlock2D by separable ones; returns how many."""
    replaced = 0
    for module in model.modules():
        if isinstance(module, ResnetBlock2D):
            for name in ("conv1", "conv2"):
                conv = getattr(module, name)
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1):
                    setattr(module, name, SeparableConv2d(conv.in_channels, conv.out_channels))
                    replaced += 1
    return replaced


SEPARABLE_PREFIX = "Separable"
_BLOCK_KEYS = ("down_block_types", "up_block_types", "mid_block_type")


def _strip_block(name: Any) -> Any:
    return (
        name[len(SEPARABLE_PREFIX) :] if isinstance(name, str) and name.startswith(SEPARABLE_PREFIX) else name
    )


def _mark_block(name: Any) -> Any:
    return name if not isinstance(name, str) or name.startswith(SEPARABLE_PREFIX) else SEPARABLE_PREFIX + name


def _map_blocks(config: dict[str, Any], rename) -> dict[str, Any]:
    """``config``'s block-type entries renamed by ``rename`` (lists element-wise, None kept)."""
    out = {}
    for key in _BLOCK_KEYS:
        if key in config:
            value = config[key]
            out[key] = [rename(v) for v in value] if isinstance(value, list | tuple) else rename(value)
    return out


def _names_separable(config: dict[str, Any]) -> bool:
    marked = _map_blocks(config, lambda name: isinstance(name, str) and name.startswith(SEPARABLE_PREFIX))
    return any(any(v) if isinstance(v, list) else v for v in marked.values())


class EfficientUNet2DConditionModel(UNet2DConditionModel):
    """``UNet2DConditionModel`` whose residual blocks may use depthwise-separable 3x3 convolutions.

    Every UNet2DConditionModel argument is accepted unchanged; ``separable_convs`` is the one addition. With it,
    the config's block types read ``Separable<diffusers block>`` (e.g. ``SeparableDownBlock2D``): the names a
    stock ``UNet2DConditionModel`` rejects, so a saved folder never loads there as a different network. Stock
    names with ``separable_convs=True`` (folders written before) are accepted and renamed.
    """

    @register_to_config
    def __init__(self, separable_convs: bool = False, **kwargs: Any) -> None:
        if _names_separable(kwargs) and not separable_convs:
            named = {key: kwargs[key] for key in _BLOCK_KEYS if key in kwargs}
            raise ValueError(
                f"separable_convs=False, but the block types name separable blocks ({named}); set "
                "separable_convs=True or use diffusers' block names"
            )
        super().__init__(**{**kwargs, **_map_blocks(kwargs, _strip_block)})
        if separable_convs:
            separate_resnet_convs(self)
            stock = {key: self.config[key] for key in _BLOCK_KEYS}  # as diffusers' __init__ registered them
            self.register_to_config(**_map_blocks(stock, _mark_block))


# ConfigMixin reads the constructor's signature to know which config keys it takes: advertise the parent's.
_parent = inspect.signature(UNet2DConditionModel.__init__)
EfficientUNet2DConditionModel.__init__.__signature__ = _parent.replace(
    parameters=[
        *_parent.parameters.values(),
        inspect.Parameter("separable_convs", inspect.Parameter.KEYWORD_ONLY, default=False),
    ]
)

# Conditioning and I/O keys a student inherits from its teacher, so it takes the same inputs.
_INHERITED = (
    "sample_size",
    "in_channels",
    "out_channels",
    "num_class_embeds",
    "class_embed_type",
    "projection_class_embeddings_input_dim",
    "addition_embed_type",
    "addition_time_embed_dim",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "time_cond_proj_dim",
    "flip_sin_to_cos",
    "freq_shift",
    "act_fn",
)


def efficient_unet(
    teacher: TeacherLike | None = None,
    *,
    block_out_channels: Sequence[int] = (32, 64, 128),
    resnets_per_stage: int | Sequence[int] = 1,
    attention_per_stage: int | Sequence[int] | None = None,
    attention_max_resolution: int | None = None,
    separable_convs: bool = False,
    mid_block: bool = True,
    attention_head_dim: int = 32,
    norm_num_groups: int = 8,
    recipe: str = "efficient UNet",
    **overrides: Any,
) -> UNet2DConditionModel:
    """A compact UNet with per-stage control, taking the teacher's inputs (size, channels, conditioning).

    Args:
        teacher: where the inputs come from (a UNet, its config, a folder, ``builtin:digits``); None: all from
            ``overrides``.
        block_out_channels: width per stage (stage i works at ``sample_size / 2**i``).
        resnets_per_stage: residual blocks per down stage (up stages get one more, as in diffusers).
        attention_per_stage: attention layers per stage, 0 for none (for text teachers: transformer layers
            per cross-attention block; for class-conditional ones any positive count means self-attention).
            None derives it from ``attention_max_resolution``.
        attention_max_resolution: with ``attention_per_stage=None``, one attention layer in every stage whose
            resolution is at most this (default: ``sample_size // 4``: the two finest stages have none).
        separable_convs: depthwise-separable 3x3 convolutions in residual blocks (EfficientUNet2DConditionModel).
        mid_block: keep the mid block (its attention follows the innermost stage's).
        overrides: any other UNet2DConditionModel argument.
    """
    base = teacher_config(teacher) if teacher is not None else {}
    config = {k: base[k] for k in _INHERITED if k in base}
    config.update({k: v for k, v in overrides.items() if k in _INHERITED})
    sample_size = config.get("sample_size", overrides.get("sample_size", 64))
    sample_size = sample_size[0] if isinstance(sample_size, list | tuple) else int(sample_size)
    channels = [int(c) for c in block_out_channels]
    n = len(channels)
    resnets = [int(resnets_per_stage)] * n if isinstance(resnets_per_stage, int) else list(resnets_per_stage)
    if len(resnets) != n or min(resnets) < 1:
        raise ValueError(
            f"resnets_per_stage needs {n} entries >= 1 (one per stage), got {resnets_per_stage!r}"
        )
    if attention_per_stage is None:
        limit = attention_max_resolution if attention_max_resolution is not None else sample_size // 4
        attention = [1 if sample_size // 2**i <= limit else 0 for i in range(n)]
    else:
        attention = (
            [int(attention_per_stage)] * n
            if isinstance(attention_per_stage, int)
            else list(attention_per_stage)
        )
    if len(attention) != n or min(attention) < 0:
        raise ValueError(
            f"attention_per_stage needs {n} entries >= 0 (one per stage), got {attention_per_stage!r}"
        )
    if any(c % norm_num_groups for c in channels):
        raise ValueError(
            f"every width in block_out_channels {channels} must divide by norm_num_groups={norm_num_groups}"
        )
    text = bool(base.get("cross_attention_dim")) and any(
        "CrossAttn" in t for t in base.get("down_block_types", [])
    )
    text = text or "encoder_hid_dim" in overrides
    cross_dim = (
        base.get("cross_attention_dim") if text else overrides.get("cross_attention_dim", channels[-1])
    )
    if text:
        down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
        up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
        mid = "UNetMidBlock2DCrossAttn"
    else:
        down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention]
        up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
        mid = "UNetMidBlock2D"
    config.update(
        block_out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type=mid if mid_block else None,
        layers_per_block=resnets if len(set(resnets)) > 1 else resnets[0],
        transformer_layers_per_block=[max(a, 1) for a in attention] if text else 1,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
        cross_attention_dim=cross_dim,
    )
    config.update({k: v for k, v in overrides.items() if k not in _INHERITED})
    model = (
        EfficientUNet2DConditionModel(separable_convs=True, **config)
        if separable_convs
        else UNet2DConditionModel(**config)
    )
    # feature KD: where this student's stages line up with the teacher's (same count of stages)
    pairs: list[tuple[str, str]] = []
    if base and len(base.get("block_out_channels", [])) == n:
        pairs = [(f"{g}.{i}", f"{g}.{i}") for g in ("down_blocks", "up_blocks") for i in range(n)]
    return attach_info(model, StudentInfo(feature_pairs=pairs, recipe=recipe))


@register_student
def efficient_unet_digits(
    teacher: TeacherLike = "builtin:digits", time_cond_proj_dim: int | None = None, **overrides: Any
) -> UNet2DConditionModel:
    """The digits preset: 16/32/64 channels, one residual block per stage, self-attention only at 4x4,
    separable convolutions; under a quarter of the digits teacher's MACs per forward. ``time_cond_proj_dim``
    adds the guidance-embedding input of a consistency student."""
    if time_cond_proj_dim is not None:
        overrides["time_cond_proj_dim"] = time_cond_proj_dim
    kwargs: dict[str, Any] = dict(
        block_out_channels=(16, 32, 64),
        resnets_per_stage=1,
        attention_max_resolution=4,
        separable_convs=True,
        attention_head_dim=16,
        norm_num_groups=8,
        recipe="efficient UNet, digits preset",
    )
    kwargs.update(overrides)
    return efficient_unet(teacher, **kwargs)


@register_student
def efficient_unet_sd(teacher: TeacherLike, **overrides: Any) -> UNet2DConditionModel:
    """An SD-v1.x-shaped efficient UNet in SnapFusion's spirit: no cross-attention at the finest stage (64x64
    latents), one residual block per stage, separable convolutions at the two finest stages' widths."""
    kwargs: dict[str, Any] = dict(
        block_out_channels=(320, 640, 1280, 1280),
        resnets_per_stage=(1, 1, 2, 2),
        attention_per_stage=(0, 1, 1, 0),
        separable_convs=True,
        attention_head_dim=8,
        norm_num_groups=32,
        recipe="efficient UNet, SD-v1.x preset (SnapFusion-style)",
    )
    kwargs.update(overrides)
    return efficient_unet(teacher, **kwargs)
