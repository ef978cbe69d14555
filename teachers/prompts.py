"""Prompt encoders of the SD3 and FLUX pipelines, as their pipelines compute them (so that a stock pipeline given
the same prompt reproduces the library's samples).

* SD3 (``StableDiffusion3Pipeline.encode_prompt``): CLIP-L and CLIP-G each give their penultimate hidden states
  and projected pooled output; the hidden states are concatenated on the feature axis, zero-padded to T5's width
  and followed by T5's ``max_sequence_length`` tokens (zeros when the pipeline has no T5: SD3 runs without it);
  the pooled outputs are concatenated.
* FLUX (``FluxPipeline.encode_prompt``): CLIP's pooled output and T5's last hidden states.

Both return ``{"encoder_hidden_states": (B, L, D), "pooled_projections": (B, P)}`` in float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from teachers.transformer import POOLED_KEY


def _ids(tokenizer: Any, prompts: list[str], length: int, device: torch.device) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def encode_sd3_prompts(
    prompts: list[str],
    *,
    tokenizers: list[Any],
    text_encoders: list[nn.Module],
    max_sequence_length: int,
    joint_attention_dim: int,
) -> dict[str, torch.Tensor]:
    """SD3's condition for ``prompts`` from its two CLIP encoders (+ T5 as the third, when present)."""
    if len(text_encoders) not in (2, 3):
        raise ValueError(
            f"an SD3 teacher needs text_encoder and text_encoder_2 (CLIP) and optionally text_encoder_3 (T5), got "
            f"{len(text_encoders)} text encoder(s)"
        )
    clip_length = int(tokenizers[0].model_max_length)  # the pipeline's tokenizer_max_length, for both CLIPs
    device = _device(text_encoders[0])
    hidden, pooled = [], []
    for tokenizer, encoder in zip(tokenizers[:2], text_encoders[:2], strict=True):
        out = encoder(_ids(tokenizer, prompts, clip_length, device), output_hidden_states=True)
        pooled.append(out[0])
        hidden.append(out.hidden_states[-2])
    clip = torch.cat(hidden, dim=-1).float()
    if len(text_encoders) == 3:
        t5 = text_encoders[2](_ids(tokenizers[2], prompts, max_sequence_length, _device(text_encoders[2])))[0]
        t5 = t5.float()
    else:
        t5 = torch.zeros(len(prompts), max_sequence_length, joint_attention_dim, device=device)
    if clip.shape[-1] > t5.shape[-1]:
        raise ValueError(
            f"the two CLIP encoders' hidden states are {clip.shape[-1]} wide, more than T5's / the transformer's "
            f"joint_attention_dim {t5.shape[-1]}: SD3 pads CLIP up to T5's width, so this folder is not SD3-shaped"
        )
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return {
        "encoder_hidden_states": torch.cat([clip, t5.to(clip.device)], dim=-2),
        POOLED_KEY: torch.cat(pooled, dim=-1).float(),
    }


def encode_flux_prompts(
    prompts: list[str],
    *,
    tokenizers: list[Any],
    text_encoders: list[nn.Module],
    max_sequence_length: int,
    joint_attention_dim: int,
) -> dict[str, torch.Tensor]:
    """FLUX's condition for ``prompts``: CLIP's pooled output and T5's hidden states."""
    if len(text_encoders) != 2:
        raise ValueError(
            f"a FLUX teacher needs text_encoder (CLIP) and text_encoder_2 (T5), got {len(text_encoders)} text encoder(s)"
        )
    clip, t5 = text_encoders
    clip_ids = _ids(tokenizers[0], prompts, int(tokenizers[0].model_max_length), _device(clip))
    pooled = clip(clip_ids, output_hidden_states=False).pooler_output.float()
    states = t5(_ids(tokenizers[1], prompts, max_sequence_length, _device(t5)), output_hidden_states=False)[0]
    if states.shape[-1] != joint_attention_dim:
        raise ValueError(
            f"T5's hidden states are {states.shape[-1]} wide but the transformer's joint_attention_dim is "
            f"{joint_attention_dim}: text_encoder_2 does not belong to this transformer"
        )
    return {"encoder_hidden_states": states.float(), POOLED_KEY: pooled.to(states.device)}
