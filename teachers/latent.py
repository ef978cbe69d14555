"""The latent side of a Stable-Diffusion-style pipeline folder: VAE, text encoder(s) and tokenizer(s).

Loaded through fixed class allowlists (nothing a folder names is imported beyond these), from local folders
only. Text encoders need the ``t2i`` extra (transformers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from students.common import check_finite_weights, named_tensors, read_json, weights_source

VAE_CLASSES = ("AutoencoderKL", "AutoencoderTiny")
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel")
CLIP_TOKENIZERS = ("CLIPTokenizer", "CLIPTokenizerFast")
T5_TOKENIZERS = ("T5Tokenizer", "T5TokenizerFast")
TOKENIZER_CLASSES = CLIP_TOKENIZERS + T5_TOKENIZERS
# SD 1.x/2.x: the first; SDXL: two CLIPs; SD3: two CLIPs + T5 (optional); FLUX: CLIP + T5
TEXT_PARTS = (
    ("text_encoder", "tokenizer"),
    ("text_encoder_2", "tokenizer_2"),
    ("text_encoder_3", "tokenizer_3"),
)


@dataclass
class LatentParts:
    vae: nn.Module | None = None
    text_encoders: list[nn.Module] = field(default_factory=list)
    tokenizers: list[Any] = field(default_factory=list)


def _transformers():
    try:
        import transformers
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "this teacher has a text encoder; install the t2i extra: pip install 'distill-diffusion[t2i]'"
        ) from error
    return transformers


def _finite(module: nn.Module, folder: Path) -> nn.Module:
    check_finite_weights(named_tensors(module), source=weights_source(folder))
    return module


def load_vae(folder: Path) -> nn.Module:
    import diffusers

    config = read_json(folder / "config.json", what="the VAE's diffusers config")
    name = config.get("_class_name")
    if name not in VAE_CLASSES:
        raise ValueError(f"the VAE at {folder} is a {name!r}; supported: {VAE_CLASSES}")
    return _finite(getattr(diffusers, name).from_pretrained(folder), folder)


def load_text_encoder(folder: Path) -> nn.Module:
    config = read_json(folder / "config.json", what="the text encoder's transformers config")
    names = config.get("architectures") or []
    name = names[0] if names else None
    if name not in TEXT_ENCODER_CLASSES:
        raise ValueError(f"the text encoder at {folder} is a {name!r}; supported: {TEXT_ENCODER_CLASSES}")
    return _finite(getattr(_transformers(), name).from_pretrained(folder), folder)


def load_tokenizer(folder: Path) -> Any:
    config_file = folder / "tokenizer_config.json"
    config = read_json(config_file, what="a tokenizer config") if config_file.is_file() else {}
    name = config.get("tokenizer_class", "CLIPTokenizer")
    if name not in TOKENIZER_CLASSES:
        raise ValueError(f"the tokenizer at {folder} is a {name!r}; supported: {TOKENIZER_CLASSES}")
    if name in T5_TOKENIZERS:
        return _transformers().T5TokenizerFast.from_pretrained(folder)
    return _transformers().CLIPTokenizer.from_pretrained(folder)


def load_latent_parts(root: Path) -> LatentParts:
    """The VAE and text encoder/tokenizer pairs of a pipeline folder (whichever it has)."""
    parts = LatentParts()
    if (root / "vae" / "config.json").is_file():
        parts.vae = load_vae(root / "vae")
    for encoder_name, tokenizer_name in TEXT_PARTS:
        encoder_dir, tokenizer_dir = root / encoder_name, root / tokenizer_name
        if (encoder_dir / "config.json").is_file():
            if not tokenizer_dir.is_dir():
                raise FileNotFoundError(
                    f"{encoder_dir} has no tokenizer beside it (expected {tokenizer_dir})"
                )
            parts.text_encoders.append(load_text_encoder(encoder_dir))
            parts.tokenizers.append(load_tokenizer(tokenizer_dir))
    return parts
