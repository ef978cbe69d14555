"""Block-removed students (BK-SDM; Kim et al. 2024, "BK-SDM: A Lightweight, Fast, and Cheap Version of Stable
Diffusion", arXiv:2305.15798) derived from any diffusers ``UNet2DConditionModel`` teacher config.

The paper removes, from SD-v1.4's UNet:
  1. one residual(+attention) pair per stage ("fewer blocks in outer stages"): down 2 -> 1, up 3 -> 2 (BK-Base),
  2. the mid block (BK-Small),
  3. the innermost stage, down and up (BK-Tiny).
Students are initialised from the teacher with the paper's block mapping: a kept down pair takes the teacher's
first pair, an up stage's last pair takes the teacher's last (so its skip connection keeps its meaning), and
after stage removal up block j takes the teacher's up block j + removed. Feature KD pairs are the outputs of
``down_blocks.i`` and ``up_blocks.j`` (mid block excluded); a down block that lost its downsampler is compared
before it (BK-Tiny: ``down_blocks.2.attentions.1.proj_out`` of the teacher vs ``...attentions.0.proj_out``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffusers import UNet2DConditionModel

from students.common import StudentInfo, TeacherLike, attach_info, teacher_config
from students.registry import register_student

# Config keys that hold one value per down stage (a list) in diffusers' UNet2DConditionModel.
_PER_STAGE = (
    "layers_per_block",
    "transformer_layers_per_block",
    "attention_head_dim",
    "num_attention_heads",
    "cross_attention_dim",
    "only_cross_attention",
)


def _per_stage(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value] * n


def _attn_container(block_type: str) -> bool:
    return "Attn" in block_type


def _pair_module(block: str, block_type: str, index: int, *, cross: bool) -> str:
    """The last attention (or resnet) of a block, by index; Transformer2DModel outputs at ``proj_out``."""
    if _attn_container(block_type):
        return f"{block}.attentions.{index}" + (".proj_out" if cross else "")
    return f"{block}.resnets.{index}"


def block_removed_unet(
    teacher: TeacherLike,
    *,
    layers_per_block: int | Sequence[int] | None = None,
    remove_mid_block: bool = False,
    remove_inner_stages: int = 0,
    block_out_channels: Sequence[int] | None = None,
    norm_num_groups: int | None = None,
    time_cond_proj_dim: int | None = None,
    recipe: str = "block removal (BK-SDM)",
    **overrides: Any,
) -> UNet2DConditionModel:
    """A student UNet derived from the teacher's config by removing the blocks named.

    Args:
        teacher: the teacher UNet (a model, a config mapping, a folder, a config.json, or ``builtin:digits``).
        layers_per_block: residual(+attention) pairs per down stage (up stages get one more, as in diffusers);
            None keeps the teacher's.
        remove_mid_block: drop the mid block (BK-Small, BK-Tiny).
        remove_inner_stages: drop this many innermost stages, down and up (BK-Tiny: 1).
        block_out_channels: narrower stages (after removal); None keeps the teacher's widths. Teacher weights
            are then copied only where shapes still match.
        norm_num_groups: GroupNorm groups (narrower stages may need fewer); None keeps the teacher's.
        time_cond_proj_dim: give the student a ``timestep_cond`` input of this width (an LCM student's guidance
            embedding); None keeps the teacher's.
        overrides: any other UNet2DConditionModel argument (from Python; configs use the named ones).

    Returns the randomly initialised student with ``student_info`` (init mapping and feature pairs) attached;
    KnowledgeDistillation copies the teacher's weights by that mapping.
    """
    config = teacher_config(teacher)
    down = list(config["down_block_types"])
    up = list(config["up_block_types"])
    n = len(down)
    if not 0 <= remove_inner_stages < n:
        raise ValueError(
            f"remove_inner_stages must be in [0, {n - 1}] for a teacher with {n} stages, got {remove_inner_stages}"
        )
    keep = n - remove_inner_stages
    t_layers = _per_stage(config.get("layers_per_block", 2), n)
    s_layers = t_layers[:keep] if layers_per_block is None else _per_stage(layers_per_block, keep)
    if len(s_layers) != keep or any(int(k) < 1 for k in s_layers):
        raise ValueError(
            f"layers_per_block must be >= 1 for each of the {keep} kept stages, got {layers_per_block!r}"
        )
    if any(s > t for s, t in zip(s_layers, t_layers, strict=False)):
        raise ValueError(
            f"layers_per_block {s_layers} exceeds the teacher's {t_layers[:keep]}: block removal only removes"
        )
    student = dict(config)
    for key in _PER_STAGE:
        if isinstance(config.get(key), list | tuple) and len(config[key]) == n:
            student[key] = list(config[key])[:keep]
    rev = config.get("reverse_transformer_layers_per_block")
    if isinstance(rev, list | tuple) and len(rev) == n:
        student["reverse_transformer_layers_per_block"] = list(rev)[remove_inner_stages:]
    student["down_block_types"] = down[:keep]
    student["up_block_types"] = up[remove_inner_stages:]
    channels = list(config["block_out_channels"])[:keep]
    if block_out_channels is not None:
        if len(block_out_channels) != keep:
            raise ValueError(
                f"block_out_channels needs {keep} entries (one per kept stage), got {list(block_out_channels)}"
            )
        channels = [int(c) for c in block_out_channels]
    student["block_out_channels"] = channels
    student["layers_per_block"] = s_layers[0] if len(set(s_layers)) == 1 else [int(k) for k in s_layers]
    if remove_mid_block:
        student["mid_block_type"] = None
    if norm_num_groups is not None:
        student["norm_num_groups"] = norm_num_groups
    if time_cond_proj_dim is not None:
        student["time_cond_proj_dim"] = time_cond_proj_dim
    student.update(overrides)
    model = UNet2DConditionModel(**student)

    # teacher -> student correspondence (student prefix -> teacher prefix; longest prefix wins)
    mapping: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    cross = bool(config.get("cross_attention_dim")) and any("CrossAttn" in t for t in down)
    for i in range(keep):
        t_block, s_block = f"down_blocks.{i}", f"down_blocks.{i}"
        lost_downsampler = i == keep - 1 and i < n - 1  # the new last stage has no downsampler
        if lost_downsampler:
            pairs.append(
                (
                    _pair_module(t_block, down[i], t_layers[i] - 1, cross="CrossAttn" in down[i]),
                    _pair_module(s_block, down[i], s_layers[i] - 1, cross="CrossAttn" in down[i]),
                )
            )
        else:
            pairs.append((t_block, s_block))
    t_up_layers = list(reversed(t_layers))
    s_up_layers = list(reversed(s_layers))
    for j in range(keep):
        tj = j + remove_inner_stages
        t_block, s_block = f"up_blocks.{tj}", f"up_blocks.{j}"
        if tj != j:
            mapping[s_block] = t_block
        n_t, n_s = t_up_layers[tj] + 1, s_up_layers[j] + 1
        for k in range(n_s):
            src = k if k < n_s - 1 else n_t - 1
            if src != k:
                mapping[f"{s_block}.resnets.{k}"] = f"{t_block}.resnets.{src}"
                if _attn_container(up[tj]):
                    mapping[f"{s_block}.attentions.{k}"] = f"{t_block}.attentions.{src}"
        pairs.append((t_block, s_block))
    del cross
    return attach_info(model, StudentInfo(init_mapping=mapping, feature_pairs=pairs, recipe=recipe))


def _one_fewer(teacher: TeacherLike, name: str) -> list[int]:
    config = teacher_config(teacher)
    layers = _per_stage(config.get("layers_per_block", 2), len(config["down_block_types"]))
    if min(layers) < 2:
        raise ValueError(
            f"{name} removes one residual(+attention) pair per stage, but this teacher has layers_per_block="
            f"{config.get('layers_per_block')}: nothing to remove. Use bk_small_keep_layers / bk_tiny_keep_layers "
            "or students.bk.block_removed_unet(..., remove_mid_block=True, remove_inner_stages=1)"
        )
    return [k - 1 for k in layers]


@register_student
def bk_base(teacher: TeacherLike, **overrides: Any) -> UNet2DConditionModel:
    """BK-SDM-Base: one pair fewer per stage (SD-v1.4: 0.58B U-Net parameters)."""
    return block_removed_unet(
        teacher, layers_per_block=_one_fewer(teacher, "bk_base"), recipe="BK-SDM-Base", **overrides
    )


@register_student
def bk_small(teacher: TeacherLike, **overrides: Any) -> UNet2DConditionModel:
    """BK-SDM-Small: BK-Base without the mid block (SD-v1.4: 0.49B)."""
    return block_removed_unet(
        teacher,
        layers_per_block=_one_fewer(teacher, "bk_small"),
        remove_mid_block=True,
        recipe="BK-SDM-Small",
        **overrides,
    )


@register_student
def bk_tiny(teacher: TeacherLike, **overrides: Any) -> UNet2DConditionModel:
    """BK-SDM-Tiny: BK-Small without the innermost stage (SD-v1.4: 0.33B)."""
    return block_removed_unet(
        teacher,
        layers_per_block=_one_fewer(teacher, "bk_tiny")[:-1],
        remove_mid_block=True,
        remove_inner_stages=1,
        recipe="BK-SDM-Tiny",
        **overrides,
    )


@register_student
def bk_small_keep_layers(teacher: TeacherLike, **overrides: Any) -> UNet2DConditionModel:
    """BK-Small for teachers that already have one pair per stage: only the mid block goes."""
    return block_removed_unet(
        teacher, remove_mid_block=True, recipe="BK-SDM-Small (layers kept)", **overrides
    )


@register_student
def bk_tiny_keep_layers(teacher: TeacherLike, **overrides: Any) -> UNet2DConditionModel:
    """BK-Tiny for teachers that already have one pair per stage: mid block and innermost stage go."""
    return block_removed_unet(
        teacher,
        remove_mid_block=True,
        remove_inner_stages=1,
        recipe="BK-SDM-Tiny (layers kept)",
        **overrides,
    )
