"""A UNet with some of its teacher's units removed: the student the architecture search writes.

:class:`PrunedUNet2DConditionModel` is an :class:`~students.efficient.EfficientUNet2DConditionModel` (so its
stages may also be narrower and its convolutions separable) whose config lists ``removed_units``: module paths of
removable units (:mod:`students.units`) that it holds as a shortcut or a pass-through instead. Every other module
keeps its teacher's name, so the teacher's weights load by name wherever the shapes match, and the pruned network
with the teacher's weights computes exactly the teacher run without those units. Saved folders rebuild it from the
config alone (``students.load_student``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from diffusers.configuration_utils import register_to_config

from students.common import StudentInfo, TeacherLike, attach_info, teacher_config
from students.efficient import EfficientUNet2DConditionModel
from students.registry import register_student
from students.units import remove_units


class PrunedUNet2DConditionModel(EfficientUNet2DConditionModel):
    """``EfficientUNet2DConditionModel`` without the units named in ``removed_units`` (module paths)."""

    @register_to_config
    def __init__(
        self, removed_units: Sequence[str] = (), separable_convs: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(separable_convs=separable_convs, **kwargs)
        remove_units(self, list(removed_units))
        self.register_to_config(removed_units=list(removed_units))


_parent = inspect.signature(EfficientUNet2DConditionModel.__init__)
PrunedUNet2DConditionModel.__init__.__signature__ = _parent.replace(
    parameters=[
        *_parent.parameters.values(),
        inspect.Parameter("removed_units", inspect.Parameter.KEYWORD_ONLY, default=()),
    ]
)


@register_student
def pruned_unet(
    teacher: TeacherLike,
    *,
    removed_units: Sequence[str] = (),
    block_out_channels: Sequence[int] | None = None,
    separable_convs: bool = False,
    norm_num_groups: int | None = None,
    time_cond_proj_dim: int | None = None,
    **overrides: Any,
) -> PrunedUNet2DConditionModel:
    """The teacher's UNet without ``removed_units`` (module paths, as ``distill prune`` names them), optionally with
    narrower stages (``block_out_channels``, one width per stage) and separable convolutions. Weights load from the
    teacher by name where the shapes match (``init_from_teacher``: every module when the widths are the teacher's).
    """
    config = {k: v for k, v in teacher_config(teacher).items() if not k.startswith("_")}
    config.pop("removed_units", None)
    config.pop("separable_convs", None)
    if block_out_channels is not None:
        widths = [int(c) for c in block_out_channels]
        if len(widths) != len(config["block_out_channels"]):
            raise ValueError(
                f"block_out_channels needs {len(config['block_out_channels'])} widths (one per stage), got {widths}"
            )
        config["block_out_channels"] = widths
    if norm_num_groups is not None:
        config["norm_num_groups"] = int(norm_num_groups)
    groups = config.get("norm_num_groups", 32)
    if any(c % groups for c in config["block_out_channels"]):
        raise ValueError(
            f"every width in block_out_channels {config['block_out_channels']} must divide by norm_num_groups="
            f"{groups}; pass norm_num_groups"
        )
    if time_cond_proj_dim is not None:
        config["time_cond_proj_dim"] = time_cond_proj_dim
    config.update(overrides)
    model = PrunedUNet2DConditionModel(
        removed_units=list(removed_units), separable_convs=separable_convs, **config
    )
    pairs = [
        (f"{g}.{i}", f"{g}.{i}")
        for g in ("down_blocks", "up_blocks")
        for i in range(len(config["block_out_channels"]))
    ]
    recipe = f"pruned UNet ({len(removed_units)} units removed)"
    return attach_info(model, StudentInfo(feature_pairs=pairs, recipe=recipe))
