"""A UNet whose encoder is any timm ``features_only`` backbone (MobileNetV3/V4, EfficientViT, RepViT, FastViT,
MobileOne, ...) and whose decoder is light: upsample, concatenate the skip, one time-modulated residual block.

What diffusion asks of an ImageNet backbone, and how this class answers:

* **Conditioning.** The timestep (sinusoidal, as diffusers), class labels, pooled text embeddings and
  ``timestep_cond`` (LCM's guidance embedding) make one embedding. It modulates every used encoder stage
  (FiLM on the stage output, through a forward hook, so later stages see it) and every decoder block; with
  text, the coarsest decoder level also cross-attends to the token embeddings.
* **BatchNorm.** In training mode BatchNorm normalises with statistics of the batch, which mixes samples at
  different noise levels and, under CFG, conditional with unconditional halves: a sample's output depends
  on its batch-mates, and sampling (batch of one timestep) sees statistics it never trained with.
  ``norm="group"`` replaces every BatchNorm with GroupNorm (activation kept); ``norm="affine"`` keeps the
  BatchNorm modules with unit statistics, always in eval mode, i.e. a learnable per-channel affine that
  mixes nothing and still folds into convolutions (what reparameterisable backbones need); ``"auto"`` picks
  affine for those and group otherwise. ``norm="batch"`` keeps BatchNorm as it is, for comparison only.
* **Small inputs.** At 16x16 a reduction-32 stage would be half a pixel. Stages whose feature map would be
  smaller than ``min_feature_size`` are not used (timm then truncates the backbone after the last used
  stage); ``input_scale`` upsamples the input first, to use deeper stages. A full-resolution convolution
  feeds the decoder's last level, so fine detail never depends on the backbone's stem stride.
* **Reparameterisation.** :meth:`reparameterize` folds the multi-branch training blocks of MobileOne, RepViT
  and FastViT (``timm.utils.reparameterize_model``) for deployment; outputs stay within 1e-4, and the config
  records it so ``from_pretrained`` rebuilds the folded structure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from timm.layers import BatchNormAct2d, GroupNormAct
from torch import nn

from students.common import StudentInfo, TeacherLike, attach_info, teacher_config
from students.registry import register_student

NORMS = ("auto", "group", "affine", "batch")
# In config.json only: a block type stock diffusers does not have, so UNet2DConditionModel refuses the folder.
STOCK_REFUSING_BLOCKS = ("TimmBackboneEncoder",)


@dataclass
class TimmUNetOutput(BaseOutput):
    sample: torch.Tensor


def _groups(channels: int, preferred: int = 8) -> int:
    return math.gcd(channels, preferred) or 1


def _is_reparameterizable(model: nn.Module) -> bool:
    return any(hasattr(m, a) for m in model.modules() for a in ("reparameterize", "fuse", "switch_to_deploy"))


def _to_group_norm(model: nn.Module) -> int:
    """Replace BatchNorm2d (and timm's BatchNormAct2d, keeping its activation) by GroupNorm in place."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BatchNormAct2d):
                new = GroupNormAct(
                    child.num_features, _groups(child.num_features), eps=child.eps, apply_act=False
                )
                new.act, new.drop = child.act, child.drop
            elif isinstance(child, nn.BatchNorm2d):
                new = nn.GroupNorm(_groups(child.num_features), child.num_features, eps=child.eps)
            else:
                continue
            setattr(parent, name, new)
            replaced += 1
    return replaced


def _batch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, FiLM from the conditioning embedding in between, 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(embed_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return h + self.shortcut(x)


class CrossAttention(nn.Module):
    """Pre-norm multi-head cross-attention from feature-map positions to text tokens, residual."""

    def __init__(self, channels: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(
            channels, heads, kdim=context_dim, vdim=context_dim, batch_first=True
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(q, context, context, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class TimmUNet(ModelMixin, ConfigMixin):
    """A denoiser with the diffusers call signature whose encoder is a timm backbone.

    Args:
        backbone: a timm model name with ``features_only`` support.
        sample_size, in_channels, out_channels: the images (or latents) it denoises.
        num_class_embeds: class-conditional (including a null class for CFG); None: unconditional/text.
        cross_attention_dim: text-conditional with token embeddings of this width.
        time_cond_proj_dim: width of ``timestep_cond`` (LCM's guidance-scale embedding); None: not taken.
        embed_dim: width of the conditioning embedding.
        decoder_channels: width of each decoder level, coarse to fine (None: the backbone's, at most 128),
            and the full-resolution level last.
        norm: "auto", "group", "affine" or "batch" (see the module docstring).
        input_scale: integer upsampling of the input before the backbone.
        min_feature_size: smallest feature map used (decides which stages are used).
        out_indices: backbone stages to use (None: from ``min_feature_size``).
        pretrained_file: a local weights file for the backbone (nothing is ever downloaded); None: random.
        backbone_kwargs: extra ``timm.create_model`` arguments.
        reparameterized: built in the folded deployment form (set by :meth:`reparameterize`).
        down_block_types: always ``("TimmBackboneEncoder",)``. Saved in ``config.json`` so that diffusers'
            ``UNet2DConditionModel.from_pretrained`` refuses the folder (it has no such block) instead of building
            a default UNet with fresh weights in its place.
    """

    @register_to_config
    def __init__(
        self,
        backbone: str = "mobilenetv3_small_100",
        sample_size: int = 16,
        in_channels: int = 1,
        out_channels: int = 1,
        num_class_embeds: int | None = None,
        cross_attention_dim: int | None = None,
        time_cond_proj_dim: int | None = None,
        embed_dim: int = 128,
        decoder_channels: Sequence[int] | None = None,
        full_res_channels: int = 16,
        norm: str = "auto",
        input_scale: int = 1,
        min_feature_size: int = 2,
        out_indices: Sequence[int] | None = None,
        attention_heads: int = 4,
        pretrained_file: str | None = None,
        backbone_kwargs: dict | None = None,
        reparameterized: bool = False,
        down_block_types: Sequence[str] = STOCK_REFUSING_BLOCKS,
    ) -> None:
        super().__init__()
        if tuple(down_block_types) != STOCK_REFUSING_BLOCKS:
            raise ValueError(
                f"down_block_types of a TimmUNet is always {list(STOCK_REFUSING_BLOCKS)} (the timm backbone is the "
                f"encoder), got {list(down_block_types)}"
            )
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if input_scale < 1 or min_feature_size < 1:
            raise ValueError(
                f"input_scale and min_feature_size must be >= 1, got {input_scale}, {min_feature_size}"
            )
        kwargs = dict(backbone_kwargs or {})
        if pretrained_file is not None:
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained_file)})
        else:
            kwargs["pretrained"] = False
        try:
            probe_kwargs = {k: v for k, v in kwargs.items() if k != "pretrained_cfg_overlay"}
            probe = timm.create_model(
                backbone, features_only=True, in_chans=in_channels, **{**probe_kwargs, "pretrained": False}
            )
        except Exception as err:
            raise ValueError(
                f"backbone {backbone!r} cannot be built by timm with features_only=True ({err}); pick one from "
                "timm.list_models() that supports features_only"
            ) from err
        reductions = probe.feature_info.reduction()
        size = sample_size * input_scale
        if out_indices is None:
            out_indices = [i for i, r in enumerate(reductions) if size // r >= min_feature_size]
            if not out_indices:
                raise ValueError(
                    f"no stage of {backbone} keeps a {min_feature_size}px feature map at {size}px input "
                    f"(reductions {reductions}); raise input_scale"
                )
        self.encoder = timm.create_model(
            backbone, features_only=True, in_chans=in_channels, out_indices=tuple(out_indices), **kwargs
        )
        del probe
        stage_idx = getattr(self.encoder, "_stage_out_idx", None)
        if isinstance(getattr(self.encoder, "blocks", None), nn.Sequential) and stage_idx:
            # MobileNetV3/V4 feature wrappers run every block whatever out_indices says: drop the unused tail
            self.encoder.blocks = self.encoder.blocks[: max(stage_idx)]
        info = self.encoder.feature_info
        enc_channels = info.channels()
        self.reductions = info.reduction()
        if norm == "auto":
            norm = "affine" if _is_reparameterizable(self.encoder) else "group"
        self.norm_kind = norm
        if norm == "group":
            _to_group_norm(self.encoder)
        elif norm == "affine":
            for bn in _batch_norms(self.encoder):
                bn.reset_running_stats()  # mean 0, var 1: the module is exactly its affine part
                bn.momentum = 0.0
        dec = (
            list(decoder_channels)
            if decoder_channels is not None
            else [min(c, 128) for c in enc_channels[::-1]]
        )
        if len(dec) != len(enc_channels):
            raise ValueError(
                f"decoder_channels needs {len(enc_channels)} entries (one per used stage, coarse to fine), got {dec}"
            )

        # conditioning
        self.time_proj = Timesteps(embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(embed_dim, embed_dim, cond_proj_dim=time_cond_proj_dim)
        self.class_embedding = nn.Embedding(num_class_embeds, embed_dim) if num_class_embeds else None
        self.text_pool = nn.Linear(cross_attention_dim, embed_dim) if cross_attention_dim else None
        self.stage_film = nn.ModuleList(nn.Linear(embed_dim, 2 * c) for c in enc_channels)
        for film in self.stage_film:  # start as the identity, so the backbone's function is unchanged at init
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self._emb: torch.Tensor | None = None
        names = info.module_name()
        for i, name in enumerate(names):
            self._stage_module(name).register_forward_hook(self._film_hook(i))

        # decoder: coarse to fine, then the full-resolution level
        self.conv_in = nn.Conv2d(in_channels, full_res_channels, 3, padding=1)
        self.bottleneck = ResBlock(enc_channels[-1], dec[0], embed_dim)
        self.cross_attention = (
            CrossAttention(dec[0], cross_attention_dim, attention_heads) if cross_attention_dim else None
        )
        skips = enc_channels[::-1]
        self.up_blocks = nn.ModuleList(
            ResBlock(dec[i - 1] + skips[i], dec[i], embed_dim) for i in range(1, len(dec))
        )
        self.full_res = ResBlock(dec[-1] + full_res_channels, full_res_channels, embed_dim)
        self.norm_out = nn.GroupNorm(_groups(full_res_channels), full_res_channels)
        self.conv_out = nn.Conv2d(full_res_channels, out_channels, 3, padding=1)
        if reparameterized:
            self._fold()

    # -- backbone plumbing ------------------------------------------------------------------------------------
    def _stage_module(self, name: str) -> nn.Module:
        for candidate in (name, name.replace(".", "_")):
            try:
                return self.encoder.get_submodule(candidate)
            except AttributeError:
                continue
        raise ValueError(f"feature module {name!r} not found in the {self.config.backbone} encoder")

    def _film_hook(self, index: int):
        def hook(module, args, output):
            if self._emb is None or not isinstance(output, torch.Tensor):
                return output
            scale, shift = self.stage_film[index](F.silu(self._emb))[:, :, None, None].chunk(2, dim=1)
            return output * (1 + scale) + shift

        return hook

    def train(self, mode: bool = True) -> TimmUNet:
        super().train(mode)
        if self.norm_kind == "affine":  # unit statistics, never the batch's
            for bn in _batch_norms(self.encoder):
                bn.eval()
        return self

    def _fold(self) -> None:
        from timm.utils.model import reparameterize_model

        reparameterize_model(self.encoder, inplace=True)

    @torch.no_grad()
    def reparameterize(self) -> TimmUNet:
        """Fold multi-branch blocks into single convolutions for deployment (in place; outputs unchanged to
        float rounding). Needs ``norm`` "affine" or "batch" (GroupNorm does not fold)."""
        if self.config.reparameterized:
            return self
        if not _is_reparameterizable(self.encoder):
            raise ValueError(f"backbone {self.config.backbone} has no reparameterisable blocks")
        if self.norm_kind == "group":
            raise ValueError(
                "a GroupNorm encoder cannot fold its branches: build with norm='affine' to deploy"
            )
        self._fold()
        self.register_to_config(reparameterized=True)
        return self

    # -- forward ------------------------------------------------------------------------------------------------
    def embed(self, sample, timestep, encoder_hidden_states, class_labels, timestep_cond) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(sample.shape[0])
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype), timestep_cond)
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this student is class-conditional: pass class_labels")
            emb = emb + self.class_embedding(class_labels).to(emb.dtype)
        if self.text_pool is not None:
            if encoder_hidden_states is None:
                raise ValueError("this student is text-conditional: pass encoder_hidden_states")
            emb = emb + self.text_pool(encoder_hidden_states.mean(1)).to(emb.dtype)
        return emb

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        return_dict: bool = True,
        **unused,
    ) -> TimmUNetOutput | tuple[torch.Tensor]:
        emb = self.embed(sample, timestep, encoder_hidden_states, class_labels, timestep_cond)
        x_in = sample
        if self.config.input_scale > 1:
            x_in = F.interpolate(
                sample, scale_factor=self.config.input_scale, mode="bilinear", align_corners=False
            )
        self._emb = emb
        try:
            features = self.encoder(x_in)
        finally:
            self._emb = None
        features = features[::-1]  # coarse to fine
        h = self.bottleneck(features[0], emb)
        if self.cross_attention is not None:
            h = self.cross_attention(h, encoder_hidden_states)
        for block, skip in zip(self.up_blocks, features[1:], strict=True):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        full = self.conv_in(sample)
        h = F.interpolate(h, size=full.shape[-2:], mode="nearest")
        h = self.full_res(torch.cat([h, full], dim=1), emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return TimmUNetOutput(sample=out) if return_dict else (out,)


def timm_unet(
    teacher: TeacherLike | None = None, *, backbone: str = "mobilenetv3_small_100", **kwargs
) -> TimmUNet:
    """A :class:`TimmUNet` taking the teacher's inputs (size, channels, class labels or text, timestep_cond)."""
    config = {}
    if teacher is not None:
        base = teacher_config(teacher)
        size = base.get("sample_size", 64)
        config = {
            "sample_size": size[0] if isinstance(size, list | tuple) else size,
            "in_channels": base.get("in_channels", 4),
            "out_channels": base.get("out_channels", base.get("in_channels", 4)),
            "num_class_embeds": base.get("num_class_embeds"),
            "time_cond_proj_dim": base.get("time_cond_proj_dim"),
        }
        if any("CrossAttn" in t for t in base.get("down_block_types", [])):
            config["cross_attention_dim"] = base.get("cross_attention_dim")
    config.update(kwargs)
    model = TimmUNet(backbone=backbone, **config)
    return attach_info(model, StudentInfo(recipe=f"timm {backbone} encoder + light decoder"))


@register_student
def timm_unet_digits(
    teacher: TeacherLike = "builtin:digits", time_cond_proj_dim: int | None = None, **kwargs
) -> TimmUNet:
    """Digits preset: MobileNetV3-Small stages at 8, 4 and 2 px (GroupNorm), a 32/32/16 decoder."""
    options = dict(backbone="mobilenetv3_small_100", decoder_channels=(32, 32, 16), full_res_channels=16)
    options.update(kwargs)
    if time_cond_proj_dim is not None:
        options["time_cond_proj_dim"] = time_cond_proj_dim
    return timm_unet(teacher, **options)


@register_student
def mobileone_unet_digits(
    teacher: TeacherLike = "builtin:digits", time_cond_proj_dim: int | None = None, **kwargs
) -> TimmUNet:
    """Digits preset with a reparameterisable MobileOne-S0 encoder (affine norms; fold with .reparameterize())."""
    options = dict(backbone="mobileone_s0", decoder_channels=(48, 32, 16), full_res_channels=16)
    options.update(kwargs)
    if time_cond_proj_dim is not None:
        options["time_cond_proj_dim"] = time_cond_proj_dim
    return timm_unet(teacher, **options)
