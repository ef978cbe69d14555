"""A tiny Stable-Diffusion-shaped pipeline built offline: the same classes and folder layout as SD 1.x
(``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``, ``CLIPTokenizer`` from a hand-made byte-level
vocabulary, a DDPM schedule), a few hundred thousand parameters, random weights. The same for the rectified-flow
transformer families: an SD3-shaped folder (``SD3Transformer2DModel``, two ``CLIPTextModelWithProjection``, a
``T5EncoderModel`` with a hand-made Unigram tokenizer) and a FLUX-shaped one (``FluxTransformer2DModel``, CLIP + T5),
both with ``FlowMatchEulerDiscreteScheduler`` and the real VAE scaling/shift constants.

It proves the latent text-to-image path end to end (teacher loading, precompute, KD / progressive / consistency
distillation, export, diffusers pipelines) where real weights cannot be downloaded, and lets a GPU user
smoke-test a config in seconds before the real run:

    python -m distill.tiny_pipeline /tmp/tiny-sd
    distill fit -c configs/sd15/lcm.yaml --model.init_args.teacher.init_args.path=/tmp/tiny-sd ...
    python -m distill.tiny_pipeline /tmp/tiny-sd3 --family sd3      # or --family flux
"""

from __future__ import annotations

import argparse
import json
import string
import zlib
from collections.abc import Iterable
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


T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
"""T5's first three pieces, in T5's order: ``<pad>`` = 0 (also the decoder start), ``</s>`` = 1, ``<unk>`` = 2."""

TINY_T5 = {"d_model": 64, "d_ff": 64, "num_layers": 2, "num_heads": 2, "d_kv": 16}
"""The tiny T5 encoder: 64 wide so SD3 can pad its two concatenated 32-wide CLIP states up to it (it F.pads the
CLIP side to the T5 width, so d_model must be >= 2 x the CLIP hidden size)."""

SD3_VAE_SCALING = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_VAE_SCALING = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
"""The real SD3 / FLUX VAE latent normalisation, ``(z - shift) * scaling``: non-trivial on purpose, so a code path
that forgets the shift (which SD 1.x does not have) shows up on the tiny folders too."""


def _seed(seed: int, component: str) -> None:
    """Seed the global RNG from ``(seed, component)``: each model of a folder gets its own deterministic stream, so
    same-config parts (SD3's two CLIP encoders) are not identical copies, and dropping one part (``t5=False``)
    leaves the others' weights unchanged."""
    torch.manual_seed(zlib.crc32(f"{seed}/{component}".encode()))


def write_tiny_t5_tokenizer(folder: Path, *, extra_words: Iterable[str] = ()) -> int:
    """A T5 (SentencePiece-Unigram) tokenizer folder built from a hand-written piece list, no ``spiece.model``
    download: ``<pad>``/``</s>``/``<unk>`` first as in T5, whole-word pieces ``"▁word"`` for :data:`TINY_WORDS` and
    ``extra_words`` (scored so the word beats its spelling), then every printable ASCII character alone and as
    ``"▁c"``, so any ASCII prompt tokenizes without ``<unk>``. No sentinel ``<extra_id_*>`` pieces (only span
    corruption pre-training uses them). Reloads with ``T5TokenizerFast.from_pretrained(folder)`` and appends
    ``</s>`` to every sequence, as T5 does. Returns the vocabulary size. Needs transformers >= 5 (whose
    ``T5Tokenizer`` builds its Unigram model from a ``vocab`` list; 4.x wants a SentencePiece file)."""
    from transformers import T5Tokenizer

    pieces: dict[str, float] = dict.fromkeys(T5_SPECIAL_TOKENS, 0.0)
    for word in (*TINY_WORDS, *extra_words):
        pieces.setdefault("▁" + word, -2.0)
    pieces.setdefault("▁", -6.0)
    # digits, letters, punctuation; no whitespace (the pre-tokenizer splits on it)
    for char in string.digits + string.ascii_letters + string.punctuation:
        pieces.setdefault("▁" + char, -8.0)
        pieces.setdefault(char, -9.0)
    tokenizer = T5Tokenizer(vocab=list(pieces.items()), extra_ids=0, model_max_length=512)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return len(tokenizer)


def tiny_t5_config(vocab_size: int):
    """A :data:`TINY_T5`-sized ``T5Config`` (v1.1-style gated-GELU feed-forward, as the T5-XXL SD3 and FLUX use)."""
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        **TINY_T5,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        is_encoder_decoder=False,
        use_cache=False,
    )


def _tiny_flow_vae(*, sample_size: int, scaling: dict[str, float]):
    """A tiny ``AutoencoderKL`` as SD3/FLUX's: 4 latent channels, two 8-channel stages (vae scale factor 2), no
    quant convs, the family's scaling and shift."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size * 2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **scaling,
    )


def _write_index(path: Path, class_name: str, components: dict[str, tuple[str | None, str | None]]) -> None:
    index = {"_class_name": class_name, "_diffusers_version": "0.30.0"}
    index.update({name: list(value) for name, value in sorted(components.items())})
    (path / "model_index.json").write_text(json.dumps(index, indent=2))


def build_tiny_sd3(path: str | Path, *, seed: int = 0, t5: bool = True, sample_size: int = 8) -> Path:
    """Write a tiny SD3-shaped folder at ``path`` (loadable by ``StableDiffusion3Pipeline``): an MM-DiT with 2x2
    patches over 4-channel latents, two projected CLIP encoders (pooled 32 + 32 = 64), a 64-wide T5 encoder, a
    shifted flow-matching schedule. ``sample_size`` is the latent side (the transformer's default; images are
    twice it). ``t5=False`` writes no T5 (``text_encoder_3``/``tokenizer_3`` null, as SD3 run without T5); load
    that folder with ``from_pretrained(path, text_encoder_3=None, tokenizer_3=None)`` and the pipeline feeds
    zeros in place of the T5 states."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    path = Path(path)
    clip_dim = projection_dim = 32
    for name in ("text_encoder", "text_encoder_2"):
        tokenizer_name = name.replace("text_encoder", "tokenizer")
        config = tiny_text_config(path / tokenizer_name, num_hidden_layers=2)
        config.projection_dim = projection_dim
        _seed(seed, name)
        CLIPTextModelWithProjection(config).save_pretrained(path / name, safe_serialization=True)
    assert 2 * clip_dim <= TINY_T5["d_model"]
    if t5:
        vocab_size = write_tiny_t5_tokenizer(path / "tokenizer_3")
        _seed(seed, "text_encoder_3")
        T5EncoderModel(tiny_t5_config(vocab_size)).save_pretrained(
            path / "text_encoder_3", safe_serialization=True
        )
    _seed(seed, "vae")
    _tiny_flow_vae(sample_size=sample_size, scaling=SD3_VAE_SCALING).save_pretrained(
        path / "vae", safe_serialization=True
    )
    _seed(seed, "transformer")
    transformer = SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=4,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_T5["d_model"],
        caption_projection_dim=32,  # = the inner dim, heads x head dim
        pooled_projection_dim=2 * projection_dim,
        pos_embed_max_size=sample_size,  # patch grid up to 2x the default side (SD3: 192 for a 64 grid)
    )
    transformer.save_pretrained(path / "transformer", safe_serialization=True)
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).save_pretrained(path / "scheduler")
    t5_parts = (
        {
            "text_encoder_3": ("transformers", "T5EncoderModel"),
            "tokenizer_3": ("transformers", "T5TokenizerFast"),
        }
        if t5
        else {"text_encoder_3": (None, None), "tokenizer_3": (None, None)}
    )
    _write_index(
        path,
        "StableDiffusion3Pipeline",
        {
            "transformer": ("diffusers", "SD3Transformer2DModel"),
            "scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler"),
            "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModelWithProjection"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
            "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
            "tokenizer_2": ("transformers", "CLIPTokenizer"),
            **t5_parts,
            "image_encoder": (None, None),
            "feature_extractor": (None, None),
        },
    )
    return path


def build_tiny_flux(
    path: str | Path, *, seed: int = 0, guidance_embeds: bool = True, sample_size: int = 8
) -> Path:
    """Write a tiny FLUX-shaped folder at ``path`` (loadable by ``FluxPipeline``): a double+single-stream
    transformer over 2x2-packed latents (16 = 4 x 4 channels per token, 3-axis RoPE), a CLIP encoder for the pooled
    vector, a 64-wide T5 for the sequence, the resolution-dependent (dynamic) flow shift of FLUX-dev.
    ``guidance_embeds`` as FLUX-dev (guidance-distilled) or, when False, FLUX-schnell. ``sample_size`` is the latent
    side (images twice it); ``FluxPipeline`` ignores it and defaults to 256 px, so pass ``height``/``width``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    path = Path(path)
    clip = tiny_text_config(path / "tokenizer", num_hidden_layers=2)
    _seed(seed, "text_encoder")
    CLIPTextModel(clip).save_pretrained(path / "text_encoder", safe_serialization=True)
    vocab_size = write_tiny_t5_tokenizer(path / "tokenizer_2")
    _seed(seed, "text_encoder_2")
    T5EncoderModel(tiny_t5_config(vocab_size)).save_pretrained(
        path / "text_encoder_2", safe_serialization=True
    )
    _seed(seed, "vae")
    vae = _tiny_flow_vae(sample_size=sample_size, scaling=FLUX_VAE_SCALING)
    vae.save_pretrained(path / "vae", safe_serialization=True)
    _seed(seed, "transformer")
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * vae.config.latent_channels,  # the pipeline packs 2x2 latent patches into one token
        out_channels=None,  # = in_channels; the pipeline unpacks in_channels // 4 latent channels
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_T5["d_model"],
        pooled_projection_dim=clip.hidden_size,  # FluxPipeline pools with CLIPTextModel's pooler_output
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),  # (text/index, row, column): even, summing to attention_head_dim
    )
    transformer.save_pretrained(path / "transformer", safe_serialization=True)
    FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    ).save_pretrained(path / "scheduler")
    _write_index(
        path,
        "FluxPipeline",
        {
            "transformer": ("diffusers", "FluxTransformer2DModel"),
            "scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler"),
            "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
            "text_encoder_2": ("transformers", "T5EncoderModel"),
            "tokenizer_2": ("transformers", "T5TokenizerFast"),
            "image_encoder": (None, None),
            "feature_extractor": (None, None),
        },
    )
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
    parser.add_argument(
        "--family",
        choices=("sd15", "sd3", "flux"),
        default="sd15",
        help="pipeline shape: SD 1.x (UNet, DDPM), SD3 (MM-DiT, 2 CLIP + T5) or FLUX (CLIP + T5, packed latents)",
    )
    parser.add_argument("--no-t5", action="store_true", help="sd3: leave out text_encoder_3/tokenizer_3")
    parser.add_argument(
        "--no-guidance-embeds", action="store_true", help="flux: no guidance embedding (schnell-style)"
    )
    parser.add_argument("--captions", type=Path, default=None, help="also write a small caption folder here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.no_t5 and args.family != "sd3":
        parser.error("--no-t5 applies to --family sd3 only")
    if args.no_guidance_embeds and args.family != "flux":
        parser.error("--no-guidance-embeds applies to --family flux only")
    if args.family == "sd3":
        build_tiny_sd3(args.out, seed=args.seed, t5=not args.no_t5)
    elif args.family == "flux":
        build_tiny_flux(args.out, seed=args.seed, guidance_embeds=not args.no_guidance_embeds)
    else:
        build_tiny_sd(args.out, seed=args.seed)
    label = {"sd15": "SD", "sd3": "SD3", "flux": "FLUX"}[args.family]
    print(f"tiny {label} pipeline written to {args.out}")
    if args.captions is not None:
        write_caption_folder(args.captions, seed=args.seed)
        print(f"caption folder written to {args.captions}")


if __name__ == "__main__":
    main()
