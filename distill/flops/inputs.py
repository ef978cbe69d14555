"""Example inputs: the inputs of one denoiser call, built from a diffusers config, and the call that feeds them.

:class:`Positional` calls a diffusers-style denoiser from positional tensors (what jit tracing and timing need);
:func:`preserve_modes` records the train/eval modes to restore after an eval-mode run.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from teachers.transformer import (
    DEFAULT_T5_TOKENS,
    FLUX_DEFAULT_SAMPLE_SIZE,
    call_transformer,
    latent_channels,
    takes_guidance,
    transformer_family,
)


@dataclass(frozen=True)
class DenoiserInputs:
    """The inputs of one denoiser call in the diffusers signature; None entries are not passed."""

    sample: torch.Tensor
    timestep: torch.Tensor
    encoder_hidden_states: torch.Tensor | None = None
    class_labels: torch.Tensor | None = None
    timestep_cond: torch.Tensor | None = None
    pooled_projections: torch.Tensor | None = None
    guidance: torch.Tensor | None = None

    def keywords(self) -> dict[str, torch.Tensor]:
        """The conditioning inputs that are present, by keyword."""
        names = ("encoder_hidden_states", "class_labels", "timestep_cond", "pooled_projections", "guidance")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def batch_size(self) -> int:
        return int(self.sample.shape[0])

    def repeat(self, times: int) -> DenoiserInputs:
        """The batch repeated ``times`` times (classifier-free guidance runs cond and uncond in one batch)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return DenoiserInputs(**{k: None if v is None else torch.cat([v] * times) for k, v in values.items()})


def config_value(config: Any, key: str, default: Any = None) -> Any:
    return getattr(config, key, default) if config is not None else default


def has_cross_attention(config: Any) -> bool:
    types = [
        *(config_value(config, "down_block_types") or ()),
        *(config_value(config, "up_block_types") or ()),
        config_value(config, "mid_block_type") or "",
    ]
    return any("CrossAttn" in str(t) for t in types)


def _text_dim(config: Any) -> int:
    dim = config_value(config, "encoder_hid_dim") or config_value(config, "cross_attention_dim")
    if isinstance(dim, list | tuple):
        if len(set(dim)) != 1:
            raise ValueError(f"per-block cross_attention_dim {dim} has no single text width: pass inputs=")
        dim = dim[0]
    return int(dim)


def example_inputs(
    net: nn.Module,
    *,
    batch_size: int = 1,
    sample_size: int | tuple[int, int] | None = None,
    in_channels: int | None = None,
    text_len: int | None = None,
    timestep: int = 999,
) -> DenoiserInputs:
    """Inputs for one call of a diffusers-style denoiser, read from its ``config``.

    Class labels (zeros) when it has class embeddings, text embeddings (``text_len`` tokens, default 77, of
    ``cross_attention_dim``) when any block cross-attends, ``timestep_cond`` when it has ``time_cond_proj_dim``.
    ``sample_size`` and ``in_channels`` override the config (needed for networks without one).

    SD3 and FLUX transformers get what their pipelines give them at the defaults: the latent (FLUX's unpacked, at
    FluxPipeline's default 128 when no ``sample_size``), SD3's 77 CLIP + ``text_len`` (default 256) T5 tokens or
    FLUX's ``text_len`` (default 512) T5 tokens of ``joint_attention_dim``, the pooled projection, and FLUX-dev's
    guidance; ``text_len`` counts T5 tokens for them (default: their pipelines' 256 and 512).
    """
    config = getattr(net, "config", None)
    family = transformer_family(net)
    if family is not None:
        return _transformer_inputs(
            net, family, batch_size=batch_size, sample_size=sample_size, text_len=text_len, timestep=timestep
        )
    size = sample_size if sample_size is not None else config_value(config, "sample_size")
    channels = in_channels if in_channels is not None else config_value(config, "in_channels")
    if size is None or channels is None:
        raise ValueError(
            f"{type(net).__name__} has no diffusers config with sample_size/in_channels: "
            "pass sample_size= and in_channels= (or build DenoiserInputs yourself)"
        )
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    param = next(iter(net.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    text = None
    if has_cross_attention(config):
        text = randn(batch_size, 77 if text_len is None else text_len, _text_dim(config))
    labels = None
    if config_value(config, "num_class_embeds"):
        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
    proj_dim = config_value(config, "time_cond_proj_dim")
    return DenoiserInputs(
        sample=randn(batch_size, int(channels), int(height), int(width)),
        timestep=torch.full((batch_size,), timestep, dtype=torch.long, device=device),
        encoder_hidden_states=text,
        class_labels=labels,
        timestep_cond=randn(batch_size, int(proj_dim)) if proj_dim else None,
    )


def _transformer_inputs(
    net: nn.Module, family: str, *, batch_size: int, sample_size: Any, text_len: int | None, timestep: int
) -> DenoiserInputs:
    config = net.config
    size = sample_size or config_value(config, "sample_size") or FLUX_DEFAULT_SAMPLE_SIZE
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    t5 = DEFAULT_T5_TOKENS[family] if text_len is None else int(text_len)
    tokens = 77 + t5 if family == "sd3" else t5  # SD3: CLIP's 77 tokens, then T5's
    param = next(iter(net.parameters()))
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=param.device, dtype=param.dtype)

    return DenoiserInputs(
        sample=randn(batch_size, latent_channels(net), int(height), int(width)),
        timestep=torch.full((batch_size,), float(timestep), device=param.device),
        encoder_hidden_states=randn(batch_size, tokens, int(config.joint_attention_dim)),
        pooled_projections=randn(batch_size, int(config.pooled_projection_dim)),
        guidance=torch.full((batch_size,), 3.5, device=param.device) if takes_guidance(net) else None,
    )


class Positional(nn.Module):
    """Calls ``net(sample, timestep, **conditioning)`` from positional tensors, for jit tracing."""

    def __init__(self, net: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.net = net
        self.names = tuple(names)
        params = _forward_params(net)
        # UNet2DConditionModel takes encoder_hidden_states positionally even when it is unused.
        self.pass_none = "encoder_hidden_states" in params and "encoder_hidden_states" not in self.names

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, *conditioning: torch.Tensor
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = dict(zip(self.names, conditioning, strict=True))
        if transformer_family(self.net) is not None:  # called as its pipeline calls it
            guidance = kwargs.pop("guidance", None)
            return call_transformer(self.net, sample, timestep, kwargs, guidance=guidance)
        if self.pass_none:
            kwargs["encoder_hidden_states"] = None
        out = self.net(sample, timestep, **kwargs)
        if hasattr(out, "sample"):
            return out.sample
        return out[0] if isinstance(out, tuple | list) else out


def _forward_params(net: nn.Module) -> frozenset[str]:
    return frozenset(inspect.signature(type(net).forward).parameters)


def preserve_modes(model: nn.Module) -> dict[nn.Module, bool]:
    """The train/eval mode of every submodule, to restore after running ``model`` in eval mode."""
    return {m: m.training for m in model.modules()}
