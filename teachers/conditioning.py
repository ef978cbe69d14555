"""Conditioning values and the few operations methods need on them, whatever the teacher is conditioned on.

A condition is one of:

* ``None`` (an unconditional network);
* an integer tensor (B,) of class labels (the digits teacher; the null class is the unconditional branch);
* a float tensor (B, L, D) of text-encoder hidden states (SD 1.x / 2.x);
* a dict of tensors with ``encoder_hidden_states`` (B, L, D) plus SDXL's ``text_embeds`` (B, D') and
  ``time_ids`` (B, 6), which go to the UNet as ``added_cond_kwargs``.

Every operation keeps the batch dimension first, so classifier-free guidance (concatenate cond and uncond),
condition dropout (select rows of the unconditional value) and batching work the same for all of them.
"""

from __future__ import annotations

from typing import Any

import torch

Cond = torch.Tensor | dict[str, torch.Tensor] | None
ADDED_COND_KEYS = ("text_embeds", "time_ids")
# a condition dict's keys besides encoder_hidden_states: SDXL's added conditions, SD3/FLUX's pooled projection
EXTRA_COND_KEYS = (*ADDED_COND_KEYS, "pooled_projections")


def cond_from_tensors(tensors: dict[str, torch.Tensor]) -> Cond:
    """A text condition from stored tensors (precomputed shards, a batch): ``prompt_embeds`` alone, or with
    SDXL's ``text_embeds``/``time_ids`` or SD3/FLUX's ``pooled_projections`` a dict (float32)."""
    embeds = tensors["prompt_embeds"].float()
    extra = {k: tensors[k].float() for k in EXTRA_COND_KEYS if k in tensors}
    return {"encoder_hidden_states": embeds, **extra} if extra else embeds


def cond_tensors(cond: Cond) -> dict[str, torch.Tensor]:
    """The inverse of :func:`cond_from_tensors`: what a shard stores for ``cond``."""
    if isinstance(cond, dict):
        return {
            "prompt_embeds": cond["encoder_hidden_states"],
            **{k: cond[k] for k in EXTRA_COND_KEYS if k in cond},
        }
    return {"prompt_embeds": cond}


def cond_batch_size(cond: Cond) -> int | None:
    if cond is None:
        return None
    if isinstance(cond, dict):
        return int(cond["encoder_hidden_states"].shape[0])
    return int(cond.shape[0])


def is_text(cond: Cond) -> bool:
    return isinstance(cond, dict) or (cond is not None and torch.is_floating_point(cond))


def cat_cond(a: Cond, b: Cond) -> Cond:
    """``a`` then ``b`` along the batch (the cond and uncond halves of one guided forward)."""
    if a is None or b is None:
        return None
    if isinstance(a, dict):
        return {k: torch.cat([a[k], b[k]]) for k in a}
    return torch.cat([a, b])


def where_cond(keep: torch.Tensor, cond: Cond, other: Cond) -> Cond:
    """Row i of ``cond`` where ``keep[i]``, else row i of ``other`` (condition dropout for guidance)."""
    if cond is None:
        return None

    def pick(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mask = keep.to(x.device).view(-1, *([1] * (x.ndim - 1)))
        return torch.where(mask, x, y.to(x.dtype))

    if isinstance(cond, dict):
        return {k: pick(cond[k], other[k]) for k in cond}  # type: ignore[index]
    return pick(cond, other)  # type: ignore[arg-type]


def expand_cond(cond: Cond, batch: int) -> Cond:
    """A batch-1 condition repeated to ``batch`` rows."""
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: v.expand(batch, *v.shape[1:]) for k, v in cond.items()}
    return cond.expand(batch, *cond.shape[1:])


def head_cond(cond: Cond, rows: int) -> Cond:
    """The first ``rows`` rows of a condition (all of it where it has fewer)."""
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: v[:rows] for k, v in cond.items()}
    return cond[:rows]


def cond_to(
    cond: Cond, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Cond:
    """Move a condition; ``dtype`` applies to floating-point parts only (labels stay integers)."""
    if cond is None:
        return None

    def move(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=dtype if (dtype is not None and x.is_floating_point()) else None)

    if isinstance(cond, dict):
        return {k: move(v) for k, v in cond.items()}
    return move(cond)


def denoiser_kwargs(cond: Cond, params: frozenset[str]) -> dict[str, Any]:
    """Keyword arguments for a diffusers-style network whose forward takes ``params``."""
    kwargs: dict[str, Any] = {}
    if isinstance(cond, dict):
        kwargs["encoder_hidden_states"] = cond["encoder_hidden_states"]
        added = {k: cond[k] for k in ADDED_COND_KEYS if k in cond}
        if added:
            kwargs["added_cond_kwargs"] = added
    elif cond is not None and not torch.is_floating_point(cond):
        kwargs["class_labels"] = cond
        if "encoder_hidden_states" in params:
            kwargs["encoder_hidden_states"] = None
    elif cond is not None:
        kwargs["encoder_hidden_states"] = cond
    elif "encoder_hidden_states" in params:
        kwargs["encoder_hidden_states"] = None
    return kwargs
