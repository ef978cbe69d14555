"""Transformer denoisers (Stable Diffusion 3's MMDiT, FLUX) called in the library's convention.

Every method calls its networks as ``net(sample (B, C, H, W), timestep (B,), cond)`` (:mod:`teachers.network`).
diffusers' transformers take other inputs, which this module supplies exactly as their pipelines do:

* ``SD3Transformer2DModel`` (SD3, SD3.5): ``hidden_states`` (B, C, H, W), ``timestep`` = the network time
  ``s * 1000`` (as ``StableDiffusion3Pipeline`` passes ``scheduler.timesteps``), ``encoder_hidden_states``
  (CLIP-L/G penultimate states padded to the T5 width, then T5's tokens) and ``pooled_projections`` (the two
  CLIP projections concatenated).
* ``FluxTransformer2DModel`` (FLUX.1 dev/schnell): latents packed into 2x2 patches (B, HW/4, 4C), ``img_ids``
  (row, column) and ``txt_ids`` (zeros) for its RoPE, ``timestep = t / 1000`` (``FluxPipeline`` divides and the
  network multiplies back), T5's states and CLIP's pooled output, and, for guidance-distilled FLUX-dev,
  ``guidance`` (the guidance scale itself, embedded like the timestep: one forward, no CFG batch).

A condition for these networks is a dict ``{"encoder_hidden_states": (B, L, D), "pooled_projections": (B, P)}``
(:mod:`teachers.conditioning`); everything else is derived from the sample.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from students.common import TRANSFORMER_CLASSES

SD3_CLASS, FLUX_CLASS = TRANSFORMER_CLASSES
FAMILIES = {SD3_CLASS: "sd3", FLUX_CLASS: "flux"}
POOLED_KEY = "pooled_projections"
# blocks returning (encoder_hidden_states, hidden_states): SD3's joint blocks, FLUX's double and single blocks
TRANSFORMER_BLOCKS = ("JointTransformerBlock", "FluxTransformerBlock", "FluxSingleTransformerBlock")
# the latent size FluxPipeline generates when not told (its default_sample_size: 1024 px through an 8x VAE)
FLUX_DEFAULT_SAMPLE_SIZE = 128
# T5 token counts the pipelines encode by default (their max_sequence_length)
DEFAULT_T5_TOKENS = {"sd3": 256, "flux": 512}


def _class_name(net_or_config: Any) -> str | None:
    if isinstance(net_or_config, nn.Module):
        return type(net_or_config).__name__
    if isinstance(net_or_config, dict):
        return net_or_config.get("_class_name")
    config = getattr(net_or_config, "config", None)
    return None if config is None else type(net_or_config).__name__


def transformer_family(net_or_config: Any) -> str | None:
    """``"sd3"`` or ``"flux"`` for those transformer classes (a network or its config dict), else None."""
    return FAMILIES.get(_class_name(net_or_config) or "")


def takes_guidance(net: nn.Module) -> bool:
    """Whether ``net`` embeds the guidance scale as an input (FLUX-dev's ``guidance_embeds``)."""
    return transformer_family(net) == "flux" and bool(getattr(net.config, "guidance_embeds", False))


def latent_channels(net: nn.Module) -> int:
    """Channels of the (unpacked) latent a network denoises: FLUX's ``in_channels`` count packed 2x2 patches."""
    channels = int(net.config.in_channels)
    return channels // 4 if transformer_family(net) == "flux" else channels


def patch_size(net: nn.Module) -> int:
    """Latent pixels per token side: the config's ``patch_size`` (SD3), 2 for FLUX's packing, 1 for a UNet."""
    if transformer_family(net) == "flux":
        return 2
    return int(getattr(getattr(net, "config", None), "patch_size", None) or 1)


# -- FLUX's packing, as FluxPipeline does it ------------------------------------------------------------------
def pack_latents(*, latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/2)(W/2), 4C): each 2x2 latent patch one token, channels slowest within a patch."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"FLUX packs 2x2 latent patches: latent height and width must be even, got {h}x{w}")
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(*, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents` for a latent of ``height`` x ``width``."""
    b, _, d = tokens.shape
    x = tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


def flux_image_ids(
    *, height: int, width: int, device: Any = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """FLUX's RoPE positions of the packed latent tokens ((H/2)(W/2), 3): (0, row, column)."""
    ids = torch.zeros(height // 2, width // 2, 3, device=device)
    ids[..., 1] = ids[..., 1] + torch.arange(height // 2, device=device)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(width // 2, device=device)[None, :]
    return ids.reshape(-1, 3).to(dtype=dtype)


# -- calls -----------------------------------------------------------------------------------------------------
def _text(cond: Any, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(cond, dict) or "encoder_hidden_states" not in cond or POOLED_KEY not in cond:
        got = sorted(cond) if isinstance(cond, dict) else type(cond).__name__
        raise ValueError(
            f"a {family.upper()} transformer takes a condition dict with 'encoder_hidden_states' and "
            f"'{POOLED_KEY}' (what DiffusionTeacher.encode_prompt returns), got {got}"
        )
    return cond["encoder_hidden_states"], cond[POOLED_KEY]


def call_transformer(
    net: nn.Module,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    cond: Any,
    *,
    guidance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run an SD3 or FLUX transformer on ``sample`` (B, C, H, W) at network times ``timestep`` (B,) and return its
    output in the sample's layout (B, C, H, W), with every extra input its pipeline gives it. ``guidance`` (B,) is
    FLUX-dev's embedded guidance scale (1 when omitted); other networks refuse it."""
    family = transformer_family(net)
    states, pooled = _text(cond, family or "transformer")
    if family == "sd3":
        if guidance is not None:
            raise ValueError("an SD3 transformer has no guidance input; use classifier-free guidance")
        return net(
            hidden_states=sample,
            timestep=timestep,
            encoder_hidden_states=states,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
    if family != "flux":
        raise TypeError(f"{type(net).__name__} is not an SD3 or FLUX transformer")
    b, _, h, w = sample.shape
    dtype = sample.dtype
    kwargs: dict[str, Any] = {}
    if takes_guidance(net):
        g = torch.ones(b, device=sample.device) if guidance is None else torch.as_tensor(guidance)
        kwargs["guidance"] = g.to(device=sample.device, dtype=torch.float32).expand(b)
    elif guidance is not None:
        raise ValueError(
            "this FLUX transformer has no guidance embedding (guidance_embeds: false, FLUX-schnell-style): it "
            "takes no guidance scale; set the guidance scale to 1"
        )
    out = net(
        hidden_states=pack_latents(latents=sample),
        timestep=(timestep / 1000).to(dtype),
        encoder_hidden_states=states,
        pooled_projections=pooled,
        txt_ids=torch.zeros(states.shape[1], 3, device=sample.device, dtype=states.dtype),
        img_ids=flux_image_ids(height=h, width=w, device=sample.device, dtype=dtype),
        return_dict=False,
        **kwargs,
    )[0]
    return unpack_latents(tokens=out, height=h, width=w)


def block_hidden_states(module: nn.Module, output: Any) -> Any:
    """The image-token stream of a transformer block's output: SD3's ``JointTransformerBlock`` and FLUX's blocks
    return ``(encoder_hidden_states, hidden_states)``; anything else is returned unchanged."""
    is_block = type(module).__name__ in TRANSFORMER_BLOCKS
    if is_block and isinstance(output, tuple | list) and len(output) == 2:
        return output[1]
    return output
