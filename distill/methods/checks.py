"""Checks every method runs before any step: conditioning, data shape, guidance range. Errors name the fix."""

from __future__ import annotations

from torch import nn

from teachers.network import num_class_embeds, time_cond_dim
from teachers.transformer import latent_channels, takes_guidance, transformer_family


def null_class_of(net: nn.Module, num_classes: int | None, *, argument: str) -> int | None:
    """Check a class-conditional network has ``num_classes`` real classes plus a null class; return the null."""
    n_embeds = num_class_embeds(net)
    if num_classes is None:
        return None if n_embeds is None else n_embeds - 1
    if n_embeds is None:
        raise ValueError(
            f"{argument} has no class embeddings but num_classes={num_classes}: set num_class_embeds="
            f"{num_classes + 1} on the network (classes + the null class for guidance) or num_classes=null"
        )
    if n_embeds != num_classes + 1:
        raise ValueError(
            f"{argument} has num_class_embeds={n_embeds}, expected num_classes + 1 = {num_classes + 1} "
            f"(the last embedding is the null class used for classifier-free guidance)"
        )
    return num_classes


def check_data_matches(net: nn.Module, datamodule, *, argument: str, teacher=None) -> None:
    """Fail before any step when the data's image size or channels differ from what the network takes.

    Pixel data for a latent teacher (``teacher.is_latent``) is compared in pixels (the network's sample size x the
    VAE's factor, 3 channels in); precomputed latents (``datamodule.is_latent``) and pixel teachers directly.
    """
    config = getattr(net, "config", None)
    if datamodule is None or config is None:
        return
    size = getattr(config, "sample_size", None)
    size = size[0] if isinstance(size, list | tuple) else size
    channels = getattr(config, "in_channels", None)
    if transformer_family(net) is not None:  # FLUX counts packed channels and has no sample_size of its own
        channels = latent_channels(net)
        size = teacher.sample_size if teacher is not None else size
    pixels_for_latents = (
        teacher is not None and teacher.is_latent and not getattr(datamodule, "is_latent", False)
    )
    if pixels_for_latents:
        factor = teacher.vae_scale_factor
        size = None if size is None else int(size) * factor
        channels = int(teacher.vae.config.in_channels)
    data_size = getattr(datamodule, "image_size", None)
    if getattr(datamodule, "is_latent", False):
        data_size = getattr(datamodule, "latent_size", None)
    if size is not None and data_size is not None and int(size) != int(data_size):
        latent_data = getattr(datamodule, "is_latent", False)
        what = f"the latents' size {data_size}" if latent_data else f"data.image_size={data_size}"
        where = f"{argument}.sample_size={getattr(config, 'sample_size', size)}" + (
            f" x the VAE's factor {teacher.vae_scale_factor} = {size} pixels" if pixels_for_latents else ""
        )
        raise ValueError(
            f"{what} but {where}: set both to the same size (e.g. --data.init_args.image_size={size})"
        )
    data_channels = getattr(datamodule, "channels", None)
    if channels is not None and data_channels is not None and int(channels) != int(data_channels):
        raise ValueError(
            f"the data has {data_channels} channel(s) but {argument}.in_channels={channels}: set "
            f"in_channels={data_channels} on the network"
        )


def check_guidance(
    teacher,
    student: nn.Module,
    *,
    guidance_min: float,
    guidance_max: float,
    eval_guidance_scale: float,
    input_needed: bool,
) -> int | None:
    """Validate a classifier-free guidance-scale range ``1 <= guidance_min <= guidance_max`` (1 = off) before any
    step; returns the width of the student's ``timestep_cond`` input (None if it has none, or if it embeds the
    scale itself as FLUX-dev's ``guidance`` input). ``input_needed``: the range must reach the student as an input
    (it varies, or later rounds' teachers need it)."""
    if not 1.0 <= guidance_min <= guidance_max:
        raise ValueError(
            f"need 1 <= guidance_min <= guidance_max (classifier-free guidance scales; 1 = no guidance), got "
            f"guidance_min={guidance_min}, guidance_max={guidance_max}"
        )
    teacher_net = getattr(teacher, "unet", None)
    if guidance_max > 1 and transformer_family(teacher_net) == "flux" and not takes_guidance(teacher_net):
        raise ValueError(
            f"guidance_max={guidance_max}: the FLUX teacher has no guidance embedding (guidance_embeds: false, "
            "FLUX-schnell-style) and FLUX runs no classifier-free guidance batch; set guidance_min = guidance_max = 1"
        )
    flux_without_input = transformer_family(student) == "flux" and not takes_guidance(student)
    if flux_without_input and (input_needed or eval_guidance_scale != 1.0):
        raise ValueError(
            f"guidance (range [{guidance_min}, {guidance_max}], eval_guidance_scale={eval_guidance_scale}) asked "
            "of a FLUX student without a guidance embedding (guidance_embeds: false): it cannot take a scale. "
            "Build the student with guidance_embeds (FLUX-dev's), or set the scales to 1 (a fixed "
            "guidance_min = guidance_max is learnt without an input)"
        )
    embed_dim = time_cond_dim(student)
    if takes_guidance(student):  # FLUX-dev-style: the scale is an input of the network itself
        return None
    if input_needed and embed_dim is None:
        raise ValueError(
            f"guidance scales in [{guidance_min}, {guidance_max}] need a student with a timestep_cond input: build "
            "it with time_cond_proj_dim (e.g. 64), or set guidance_min = guidance_max = 1"
        )
    if eval_guidance_scale != 1.0 and embed_dim is None:
        raise ValueError(
            f"eval_guidance_scale={eval_guidance_scale}: this student takes guidance only through a timestep_cond "
            "input (time_cond_proj_dim), which it does not have; set eval_guidance_scale: 1"
        )
    if (guidance_max > 1 or eval_guidance_scale != 1) and getattr(teacher, "cond_kind", None) is None:
        raise ValueError(
            "guidance (guidance_max or eval_guidance_scale > 1) needs a teacher with an unconditional branch (a null "
            "class or empty-prompt embeddings); this teacher has none: set guidance_min = guidance_max = "
            "eval_guidance_scale = 1"
        )
    return embed_dim


def other_teacher(student: nn.Module, teacher) -> str | None:
    """A warning when ``student`` records (``distilled_from``, set by ``students.load_student``) a teacher other
    than ``teacher``, naming both; None when they match, or when either side has no fingerprint to compare."""
    from teachers.provenance import teacher_fingerprint

    record = getattr(student, "distilled_from", None)
    if record is None or getattr(teacher, "weights_dir", None) is None:
        return None
    fingerprint = teacher_fingerprint(teacher)
    if fingerprint == record.sha256:
        return None
    name = getattr(student, "student_source", None) or type(student).__name__
    return (
        f"student {name} was distilled from teacher {record.describe()}, this run's teacher is {teacher.source} "
        f"(sha256 {fingerprint[:16]}...): it starts from weights trained to imitate another model. Start from a "
        "student distilled from this teacher (or from scratch), or set check_student_teacher: false if this is "
        "intended"
    )


# what a transformer student must share with its SD3/FLUX teacher to take its inputs and answer in its space
TRANSFORMER_INTERFACE = (
    "patch_size",
    "in_channels",
    "out_channels",
    "joint_attention_dim",
    "pooled_projection_dim",
)


def check_transformer_student(teacher, student: nn.Module, *, argument: str = "student") -> None:
    """An SD3/FLUX teacher's student must be a transformer of the same class with the same patch size, channels
    and text widths (it gets the teacher's latents and prompt embeddings); a transformer student needs such a
    teacher. Errors name the key and the fix."""
    t_net = getattr(teacher, "unet", None)
    t_family, s_family = transformer_family(t_net), transformer_family(student)
    if t_family is None and s_family is None:
        return
    if t_family != s_family:
        t_name, s_name = type(t_net).__name__, type(student).__name__
        raise ValueError(
            f"{argument} is a {s_name} but the teacher's denoiser is a {t_name}: a student takes its teacher's "
            f"inputs, so it must be a {t_name} too (students.transformer builds depth-pruned and narrower ones)"
        )
    t_cfg, s_cfg = t_net.config, student.config
    for key in TRANSFORMER_INTERFACE:
        t_val, s_val = getattr(t_cfg, key, None), getattr(s_cfg, key, None)
        if t_val != s_val:
            raise ValueError(
                f"{argument}.{key}={s_val} but the teacher's {key}={t_val}: a {type(student).__name__} student must "
                f"take the teacher's latents (patch size, channels) and prompt embeddings (joint-attention and "
                f"pooled widths); set {key}={t_val}"
            )
