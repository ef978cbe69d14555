"""DMD2's GAN critic: a small classifier head on a denoiser's bottleneck features.

The denoiser (distribution matching's fake score) runs only up to the named feature module
(:func:`bottleneck_features` stops the forward there, as DMD2's ``return_bottleneck``), and :class:`CriticHead`
turns those features into one realism logit per sample: convolutions for a UNet's (B, C, H, W) features, a token
MLP for a transformer's (B, N, C) hidden states.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distill.features import block_output, resolve
from teachers.conditioning import Cond
from teachers.network import call_denoiser
from teachers.transformer import block_hidden_states


class _Reached(Exception):
    """Raised by the feature hook to stop the forward once the feature is computed."""


def bottleneck_features(
    net: nn.Module, feature: str, sample: torch.Tensor, timestep: torch.Tensor, cond: Cond = None
) -> torch.Tensor:
    """The output of ``net``'s module ``feature`` when ``net`` denoises ``sample`` at ``timestep``; the layers
    after it are not run. Gradients flow to ``sample`` and to ``net``'s parameters that require them."""
    module = resolve(net, feature, argument="gan_feature")
    found: list[torch.Tensor] = []

    def hook(mod, args, output):
        found.append(block_output(block_hidden_states(module, output)))
        raise _Reached

    handle = module.register_forward_hook(hook)
    try:
        call_denoiser(net, sample.to(next(net.parameters()).dtype), timestep, cond)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not found:
        raise ValueError(
            f"gan_feature: module {feature!r} of {type(net).__name__} did not run in its forward pass; name a "
            "module on the denoiser's path (a UNet's 'mid_block', a transformer's 'transformer_blocks.N')"
        )
    return found[0]


class CriticHead(nn.Module):
    """A realism classifier on features of shape (B, C, H, W) or (B, N, C), one logit per sample.

    Args:
        channels: C, the features' channel (or hidden) width.
        kind: "conv" for (B, C, H, W) features (a strided 4x4 convolution, GroupNorm, SiLU, global average
            pool, linear: DMD2's head, pooled so it fits any spatial size), "tokens" for (B, N, C) hidden states
            (LayerNorm, linear, SiLU, mean over tokens, linear).
        downsample: the convolution's stride 2 (features of at least 4x4) or 1.
    """

    def __init__(self, channels: int, kind: str = "conv", downsample: bool = True) -> None:
        super().__init__()
        if kind not in ("conv", "tokens"):
            raise ValueError(f"kind must be 'conv' or 'tokens', got {kind!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.kind = kind
        if kind == "conv":
            conv = (
                nn.Conv2d(channels, channels, 4, stride=2, padding=1)
                if downsample
                else nn.Conv2d(channels, channels, 3, padding=1)
            )
            self.body = nn.Sequential(
                conv, nn.GroupNorm(math.gcd(32, channels), channels), nn.SiLU(), nn.AdaptiveAvgPool2d(1)
            )
        else:
            self.body = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, channels), nn.SiLU())
        self.out = nn.Linear(channels, 1)

    @classmethod
    def for_features(cls, shape: tuple[int, ...] | torch.Size) -> CriticHead:
        """The head for features of ``shape`` (batch first)."""
        if len(shape) == 4:
            return cls(int(shape[1]), "conv", downsample=min(shape[2], shape[3]) >= 4)
        if len(shape) == 3:
            return cls(int(shape[2]), "tokens")
        raise ValueError(
            f"gan_feature: the critic needs (B, C, H, W) or (B, N, C) features, the named module gives shape "
            f"{tuple(shape)}; name a UNet block or a transformer block"
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.body(features.float())
        h = h.flatten(1) if self.kind == "conv" else h.mean(dim=1)
        return self.out(h).squeeze(1)
