"""Transformer students of SD3 and FLUX teachers: BK-SDM's block removal, for transformers.

BK-SDM removes U-Net blocks and initialises the student from the teacher's remaining ones; a transformer's
analogue keeps a subset of its blocks (every k-th, or the ones named), in order, initialised from the teacher's,
with feature KD between each kept block's output and the teacher block it came from. The student is the
teacher's own diffusers class (``SD3Transformer2DModel``, ``FluxTransformer2DModel``) with fewer layers, so an
exported student loads in stock ``StableDiffusion3Pipeline`` / ``FluxPipeline``. Narrower students (fewer
attention heads) take the teacher's text embeddings unchanged (same ``joint_attention_dim`` and
``pooled_projection_dim``) and start from scratch.

    import students
    student = students.create_student("sd3_depth_half", teacher="path/to/sd3-pipeline")

Rules the builders enforce: SD3's last block is ``context_pre_only`` (it emits no text stream, a different
module), so a depth-pruned SD3 student always keeps the teacher's last block; SD3.5's ``dual_attention_layers``
are renumbered to the kept blocks; FLUX's double-stream (``transformer_blocks``) and single-stream
(``single_transformer_blocks``) stacks are pruned separately and each keeps at least one block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from students.common import StudentInfo, TeacherLike, attach_info, teacher_config
from students.registry import register_student

SD3 = "SD3Transformer2DModel"
FLUX = "FluxTransformer2DModel"
_STACKS = {SD3: (("transformer_blocks", "num_layers"),), FLUX: (("transformer_blocks", "num_layers"),
           ("single_transformer_blocks", "num_single_layers"))}  # fmt: skip


def transformer_config(teacher: TeacherLike) -> tuple[type[nn.Module], dict[str, Any]]:
    """The teacher's transformer class and constructor config; anything but SD3/FLUX is refused."""
    import diffusers

    config = teacher_config(teacher, keep_class=True)
    name = config.pop("_class_name", None)
    if name not in _STACKS:
        raise ValueError(
            f"transformer students derive from an SD3Transformer2DModel or FluxTransformer2DModel teacher, got "
            f"{name!r}; for a UNet teacher use the bk_* or efficient students"
        )
    return getattr(diffusers, name), config


def kept_blocks(
    n: int, *, keep: Sequence[int] | None, every: int | None, stack: str, keep_last: bool = False
) -> list[int]:
    """Indices of a stack of ``n`` blocks to keep: ``keep`` as given (sorted, unique, each in range) or every
    ``every``-th from the first (plus the last when ``keep_last``)."""
    if (keep is None) == (every is None):
        raise ValueError(
            f"{stack}: give exactly one of keep (block indices) or every (keep every k-th block)"
        )
    if keep is not None:
        indices = sorted({int(i) for i in keep})
        bad = [i for i in indices if not 0 <= i < n]
        if bad or not indices:
            raise ValueError(
                f"{stack}: keep={list(keep)} must name blocks in [0, {n - 1}] (the teacher has {n})"
            )
    else:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"{stack}: every must be a whole number >= 1, got {every!r}")
        indices = list(range(0, n, every))
        if keep_last and indices[-1] != n - 1:
            indices.append(n - 1)
    if keep_last and indices[-1] != n - 1:
        raise ValueError(
            f"{stack}: keep={indices} drops the teacher's last block {n - 1}, which in SD3 is context_pre_only (it "
            "emits no text stream, a different module than the others); keep it"
        )
    return indices


def depth_pruned_transformer(
    teacher: TeacherLike,
    *,
    keep: Sequence[int] | None = None,
    every: int | None = None,
    keep_single: Sequence[int] | None = None,
    every_single: int | None = None,
    recipe: str = "",
) -> nn.Module:
    """The teacher's transformer with only some of its blocks (initialised from those blocks by the distillation
    methods' ``init_from_teacher``, or here when ``teacher`` is the loaded model or its adapter).

    Args:
        teacher: the teacher (loaded model or ``DiffusionTeacher``, pipeline folder, model folder, config).
        keep / every: the double-stream blocks (``transformer_blocks``) to keep, by index, or every k-th.
        keep_single / every_single: the same for FLUX's single-stream blocks (default: ``every``'s value).
        recipe: a description recorded in ``student_info``.

    Feature-KD pairs: each kept block's output (image tokens) with the output of the teacher block it copies.
    """
    cls, config = transformer_config(teacher)
    name = cls.__name__
    mapping: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for stack, key in _STACKS[name]:
        single = stack == "single_transformer_blocks"
        stack_keep = keep_single if single else keep
        stack_every = every_single if single else every
        if single and stack_keep is None and stack_every is None:
            stack_every = every
        indices = kept_blocks(
            int(config[key]), keep=stack_keep, every=stack_every, stack=stack, keep_last=name == SD3
        )
        for i, src in enumerate(indices):
            mapping[f"{stack}.{i}"] = f"{stack}.{src}"
            pairs.append((f"{stack}.{src}", f"{stack}.{i}"))
        if name == SD3 and config.get("dual_attention_layers"):
            dual = set(config["dual_attention_layers"])
            config["dual_attention_layers"] = tuple(i for i, src in enumerate(indices) if src in dual)
        config[key] = len(indices)
    model = cls.from_config(config)
    source = getattr(teacher, "unet", teacher)
    if isinstance(source, nn.Module):
        copy_blocks(source=source, target=model, mapping=mapping)
    info = StudentInfo(init_mapping=mapping, feature_pairs=pairs, recipe=recipe or "depth-pruned transformer")
    return attach_info(model, info)


def copy_blocks(*, source: nn.Module, target: nn.Module, mapping: dict[str, str]) -> None:
    """Load ``source``'s tensors into ``target``, student prefixes renamed by ``mapping`` (block i <- block k);
    every tensor must be found with its shape (a depth-pruned student is a subset of its teacher)."""
    import torch

    src = source.state_dict()
    state = {}
    for key, tensor in target.state_dict().items():
        prefix = next((p for p in mapping if key.startswith(p + ".")), None)
        name = key if prefix is None else mapping[prefix] + key[len(prefix) :]
        if name not in src or src[name].shape != tensor.shape:
            raise ValueError(
                f"student tensor {key} has no teacher counterpart {name} of shape {tuple(tensor.shape)}"
            )
        state[key] = src[name].to(tensor.dtype)
    with torch.no_grad():
        target.load_state_dict(state)


def narrow_transformer(
    teacher: TeacherLike,
    *,
    num_attention_heads: int,
    num_layers: int,
    num_single_layers: int | None = None,
    recipe: str = "",
) -> nn.Module:
    """A narrower, shallower transformer of the teacher's class from scratch: ``num_attention_heads`` heads of the
    teacher's head width (so FLUX's RoPE axes still fit), ``num_layers`` (+ FLUX's ``num_single_layers``) blocks,
    the teacher's patch size, channels and text widths (it takes the teacher's prompt embeddings)."""
    cls, config = transformer_config(teacher)
    for key, value in (("num_attention_heads", num_attention_heads), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a whole number >= 1, got {value!r}")
    config["num_attention_heads"], config["num_layers"] = num_attention_heads, num_layers
    if cls.__name__ == SD3:
        config["caption_projection_dim"] = num_attention_heads * int(config["attention_head_dim"])
        if config.get("dual_attention_layers"):
            config["dual_attention_layers"] = tuple(
                i for i in config["dual_attention_layers"] if i < num_layers
            )
    elif num_single_layers is not None:
        config["num_single_layers"] = num_single_layers
    info = StudentInfo(
        recipe=recipe or f"narrow transformer ({num_attention_heads} heads, {num_layers} layers)"
    )
    return attach_info(cls.from_config(config), info)


def _half(n: int) -> int:
    return max(1, n // 2)


@register_student
def sd3_depth_half(teacher: TeacherLike, **overrides: Any) -> nn.Module:
    """SD3/SD3.5 with every second joint block kept (and the last): SD3-medium 24 -> 13 blocks."""
    kwargs = {"every": 2, **overrides}
    _expect(teacher, SD3, "sd3_depth_half")
    return depth_pruned_transformer(teacher, recipe="SD3, every 2nd block (block removal)", **kwargs)


@register_student
def sd3_narrow_half(teacher: TeacherLike, **overrides: Any) -> nn.Module:
    """SD3/SD3.5 with half the heads and half the blocks, from scratch (SD3-medium: 12 heads, 12 blocks)."""
    _, config = transformer_config(teacher)
    _expect(teacher, SD3, "sd3_narrow_half")
    kwargs = {
        "num_attention_heads": _half(int(config["num_attention_heads"])),
        "num_layers": _half(int(config["num_layers"])),
        **overrides,
    }
    return narrow_transformer(teacher, recipe="SD3, half width and depth", **kwargs)


@register_student
def flux_depth_half(teacher: TeacherLike, **overrides: Any) -> nn.Module:
    """FLUX with every second double- and single-stream block kept (FLUX.1: 19 + 38 -> 10 + 19 blocks)."""
    _expect(teacher, FLUX, "flux_depth_half")
    kwargs = {"every": 2, **overrides}
    return depth_pruned_transformer(teacher, recipe="FLUX, every 2nd block (block removal)", **kwargs)


@register_student
def flux_narrow_half(teacher: TeacherLike, **overrides: Any) -> nn.Module:
    """FLUX with half the heads and half of each block stack, from scratch (FLUX.1: 12 heads, 9 + 19 blocks)."""
    _, config = transformer_config(teacher)
    _expect(teacher, FLUX, "flux_narrow_half")
    kwargs = {
        "num_attention_heads": _half(int(config["num_attention_heads"])),
        "num_layers": _half(int(config["num_layers"])),
        "num_single_layers": _half(int(config["num_single_layers"])),
        **overrides,
    }
    return narrow_transformer(teacher, recipe="FLUX, half width and depth", **kwargs)


def _expect(teacher: TeacherLike, class_name: str, builder: str) -> None:
    cls, _ = transformer_config(teacher)
    if cls.__name__ != class_name:
        other = "flux" if class_name == SD3 else "sd3"
        raise ValueError(
            f"{builder} builds a student of an {class_name} teacher, but this teacher is a {cls.__name__}: use "
            f"{builder.replace(builder.split('_')[0], other, 1)}"
        )
