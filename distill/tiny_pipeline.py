"""A tiny Stable-Diffusion-shaped pipeline built offline: the same classes and folder layout as SD 1.x
(``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``, ``CLIPTokenizer`` from a hand-made byte-level
vocabulary, a DDPM schedule), a few hundred thousand parameters, random weights.

It proves the latent text-to-image path end to end (teacher loading, precompute, KD / progressive / consistency
distillation, export, diffusers pipelines) where real weights cannot be downloaded, and lets a GPU user
smoke-test a config in seconds before the real run:

    python -m distill.tiny_pipeline /tmp/tiny-sd
    distill fit -c configs/sd15/lcm.yaml --model.init_args.teacher.init_args.path=/tmp/tiny-sd ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

TINY_WORDS = ("a", "photo", "of", "digit", "zero", "one", "two", "three", "red", "blue", "square", "circle")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (the byte-level BPE alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tiny_clip_tokenizer(folder: Path, *, max_length: int = 16) -> int:
    """A CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json): every byte, every byte as a word
    end, and whole-word merges for :data:`TINY_WORDS`. Returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in alphabet + [c + "</w>" for c in alphabet]:
        vocab[token] = len(vocab)
    merges = ["#version: 0.2"]
    for word in TINY_WORDS:
        if len(word) < 2:
            continue
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merges.append(f"{pieces[0]} {pieces[1]}")
            vocab.setdefault(merged, len(vocab))
            pieces = [merged, *pieces[2:]]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length})
    )
    return len(vocab)


def tiny_text_config(tokenizer_dir: Path, *, num_hidden_layers: int):
    """Write the tiny tokenizer into ``tokenizer_dir`` and return a 32-wide ``CLIPTextConfig`` matching it."""
    from transformers import CLIPTextConfig

    vocab_size = write_tiny_clip_tokenizer(tokenizer_dir)
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        max_position_embeddings=16,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )


def build_tiny_sd(
    path: str | Path, *, seed: int = 0, image_size: int = 16, prediction_type: str = "epsilon"
) -> Path:
    """Write a tiny SD-1.x-style pipeline folder at ``path`` (loadable by ``StableDiffusionPipeline``)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    path = Path(path)
    torch.manual_seed(seed)
    text_dim = 32
    text_encoder = CLIPTextModel(tiny_text_config(path / "tokenizer", num_hidden_layers=2))
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=image_size,
    )
    unet = UNet2DConditionModel(
        sample_size=image_size // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=2,  # two pairs per stage, as SD: BK-SDM's block removal keeps one
        cross_attention_dim=text_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    vae.save_pretrained(path / "vae")
    unet.save_pretrained(path / "unet")
    text_encoder.save_pretrained(path / "text_encoder")
    scheduler.save_pretrained(path / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


def build_tiny_clip(path: str | Path, *, seed: int = 0) -> Path:
    """A tiny ``CLIPModel`` (32 px images, 16-d projections) with the tiny tokenizer, for CLIP-score plumbing tests."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    path = Path(path)
    torch.manual_seed(seed)
    text = tiny_text_config(path, num_hidden_layers=1)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    model = CLIPModel(
        CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    )
    model.save_pretrained(path)
    return path


def write_caption_folder(
    path: str | Path, *, num_images: int = 24, image_size: int = 16, seed: int = 0
) -> Path:
    """A small image-caption folder in the diffusers ImageFolder layout (PNGs + ``metadata.jsonl``): coloured
    squares and circles on a grey background, captioned with their shape and colour."""
    from PIL import Image, ImageDraw

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    lines = []
    for i in range(num_images):
        colour = ("red", "blue")[i % 2]
        shape = ("square", "circle")[(i // 2) % 2]
        image = Image.new("RGB", (image_size, image_size), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        lo = int(torch.randint(1, image_size // 3, (1,), generator=gen))
        hi = image_size - 1 - int(torch.randint(1, image_size // 3, (1,), generator=gen))
        fill = (220, 30, 30) if colour == "red" else (30, 30, 220)
        (draw.rectangle if shape == "square" else draw.ellipse)([lo, lo, hi, hi], fill=fill)
        name = f"{i:04d}.png"
        image.save(path / name)
        lines.append(json.dumps({"file_name": name, "text": f"a {colour} {shape}"}))
    (path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the pipeline to")
    parser.add_argument("--captions", type=Path, default=None, help="also write a small caption folder here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_tiny_sd(args.out, seed=args.seed)
    print(f"tiny SD pipeline written to {args.out}")
    if args.captions is not None:
        write_caption_folder(args.captions, seed=args.seed)
        print(f"caption folder written to {args.captions}")


if __name__ == "__main__":
    main()
