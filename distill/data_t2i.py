"""Text-to-image data: an image-caption folder, precomputed latent/embedding shards, and the precompute step.

* :class:`CaptionFolderDataModule` reads the diffusers ImageFolder convention (images plus ``metadata.jsonl`` with
  ``file_name`` and a caption column, or side-car ``.txt`` captions), resizes and crops, and hands the method
  ``{"images", "captions"}`` batches; the method's teacher encodes them (VAE, text encoder). Missing, unreadable
  or uncaptioned files are found at setup and reported by name; ``on_error`` decides whether they are skipped
  or fatal. Never silent.
* :func:`precompute` runs the teacher's VAE and text encoder(s) once over such a folder and writes safetensors
  shards (``distill precompute``); :class:`LatentShardDataModule` trains from them (the fast path: no VAE or text
  encoder at training time; the empty-prompt embedding travels with the shards for guidance).

Condition dropout for classifier-free guidance is applied by the method (``cond_drop_prob``), not here.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from distill.data import resumable_loader
from distill.images import IMAGE_SUFFIXES
from teachers.conditioning import cond_from_tensors, cond_tensors

ON_ERROR = ("raise", "skip")
SHARD_INDEX = "index.json"
UNCOND_FILE = "uncond.safetensors"


def _train_loader(datamodule) -> DataLoader:
    """The resumable, process-aware training loader over ``datamodule.dataset()``."""
    return resumable_loader(
        datamodule.dataset(),
        batch_size=datamodule.batch_size,
        seed=datamodule.shuffle_seed,
        trainer=datamodule.trainer,
        num_workers=datamodule.num_workers,
    )


# -- the caption folder ---------------------------------------------------------------------------------------
def scan_caption_folder(
    root: Path, *, caption_column: str = "text"
) -> tuple[list[tuple[Path, str]], list[str]]:
    """All (image, caption) pairs of ``root`` and a list of problems (``"name: reason"``).

    ``metadata.jsonl`` wins when present; otherwise every image with a side-car ``.txt``. Each image is opened
    and verified (a header check, not a full decode), so a truncated or non-image file is named here.
    """
    from PIL import Image

    problems: list[str] = []
    pairs: list[tuple[Path, str]] = []
    metadata = root / "metadata.jsonl"
    if metadata.is_file():
        for number, line in enumerate(metadata.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(f"metadata.jsonl line {number}: not JSON ({error.msg})")
                continue
            name, caption = row.get("file_name"), row.get(caption_column)
            if name is None:
                problems.append(f"metadata.jsonl line {number}: no 'file_name'")
                continue
            if not isinstance(caption, str):
                problems.append(f"{name}: no '{caption_column}' caption in metadata.jsonl")
                continue
            pairs.append((root / name, caption))
    else:
        for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            side = image.with_suffix(".txt")
            if not side.is_file():
                problems.append(f"{image.relative_to(root)}: no caption ({side.name} missing)")
                continue
            pairs.append((image, side.read_text().strip()))
    usable = []
    for image, caption in pairs:
        name = str(image.relative_to(root)) if image.is_relative_to(root) else str(image)
        if not image.is_file():
            problems.append(f"{name}: file missing")
            continue
        try:
            with Image.open(image) as handle:
                handle.verify()
        except Exception as error:  # PIL raises many types for broken files
            problems.append(f"{name}: unreadable image ({type(error).__name__}: {error})")
            continue
        usable.append((image, caption))
    return usable, problems


def load_image(path: Path, *, size: int, center_crop: bool, flip: bool) -> torch.Tensor:
    """RGB image -> (3, size, size) in [-1, 1]: shorter side resized to ``size`` (bicubic), then cropped."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as handle:
        image = handle.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = ((w - size) // 2, (h - size) // 2) if center_crop else (0, 0)
    image = image.crop((left, top, left + size, top + size))
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
    return array.div(127.5).sub(1.0)


class CaptionDataset(Dataset):
    def __init__(
        self, pairs: list[tuple[Path, str]], *, size: int, center_crop: bool = True, random_flip: bool = False
    ) -> None:
        self.pairs, self.size, self.center_crop, self.random_flip = pairs, size, center_crop, random_flip

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, caption = self.pairs[index]
        # a fixed half of the images is flipped (keyed on the index): reproducible without a worker RNG
        flip = self.random_flip and bool(zlib.crc32(str(index).encode()) & 1)
        return {
            "images": load_image(path, size=self.size, center_crop=self.center_crop, flip=flip),
            "captions": caption,
        }


class CaptionFolderDataModule(L.LightningDataModule):
    """Image-caption pairs from a folder (diffusers ImageFolder layout), for latent text-to-image teachers.

    Args:
        root: the folder: images plus ``metadata.jsonl`` (``{"file_name": ..., "text": ...}`` per line) or
            side-car ``NAME.txt`` captions.
        image_size: pixel size after resize and crop (the teacher's sample size x its VAE factor).
        center_crop: center crop after resizing the shorter side (else the top-left crop).
        random_flip: horizontal flips (a fixed half of the images).
        caption_column: the caption key in ``metadata.jsonl``.
        on_error: ``"raise"`` (default): any missing, unreadable or uncaptioned file stops the run before the first
            step, listing them; ``"skip"``: train without them, listing them in a warning.
        batch_size: per-process batch size; shuffle_seed: seed of the training order.
        num_val: the first ``num_val`` pairs also form a validation set (0: none).
    """

    is_latent = False
    channels = 3

    def __init__(
        self,
        root: str | Path,
        image_size: int = 512,
        center_crop: bool = True,
        random_flip: bool = False,
        caption_column: str = "text",
        on_error: str = "raise",
        batch_size: int = 4,
        shuffle_seed: int = 0,
        num_val: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if batch_size < 1 or image_size < 8:
            raise ValueError(f"need batch_size >= 1 and image_size >= 8, got {batch_size} and {image_size}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data root {str(self.root)!r} is not a folder: pass a folder of images with metadata.jsonl or "
                "side-car .txt captions (data.init_args.root)"
            )
        self.image_size, self.center_crop, self.random_flip = image_size, center_crop, random_flip
        self.caption_column, self.on_error = caption_column, on_error
        self.batch_size, self.shuffle_seed, self.num_val, self.num_workers = (
            batch_size,
            shuffle_seed,
            num_val,
            num_workers,
        )
        self.pairs: list[tuple[Path, str]] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.pairs is not None:
            return
        pairs, problems = scan_caption_folder(self.root, caption_column=self.caption_column)
        if problems:
            listing = "; ".join(problems[:10]) + (
                f"; ... ({len(problems) - 10} more)" if len(problems) > 10 else ""
            )
            if self.on_error == "raise":
                raise ValueError(
                    f"{len(problems)} problem(s) in the data at {self.root}: {listing}. Fix or remove those files, or "
                    "set data.init_args.on_error=skip to train without them"
                )
            rank_zero_warn(f"skipping {len(problems)} file(s) of {self.root}: {listing}")
        if not pairs:
            raise ValueError(
                f"no usable image-caption pairs in {self.root}: expected images with metadata.jsonl "
                f"(file_name + {self.caption_column!r}) or side-car .txt captions"
            )
        self.pairs = pairs
        rank_zero_info(f"{len(pairs)} image-caption pairs from {self.root}")

    def dataset(self, *, train: bool = True) -> CaptionDataset:
        assert self.pairs is not None, "call setup() first"
        pairs = self.pairs if train else self.pairs[: self.num_val]
        return CaptionDataset(
            pairs, size=self.image_size, center_crop=self.center_crop, random_flip=self.random_flip and train
        )

    def train_dataloader(self) -> DataLoader:
        return _train_loader(self)

    def val_dataloader(self) -> DataLoader | list:
        if self.num_val <= 0:
            return []
        return DataLoader(self.dataset(train=False), batch_size=self.batch_size, num_workers=self.num_workers)


# -- precomputed shards ----------------------------------------------------------------------------------------
def _cond_tensors(cond: Any) -> dict[str, torch.Tensor]:
    return cond_tensors(cond)


@torch.no_grad()
def precompute(
    teacher: Any,
    datamodule: CaptionFolderDataModule,
    output: str | Path,
    *,
    shard_size: int = 1024,
    batch_size: int = 16,
    dtype: str = "float16",
    overwrite: bool = False,
) -> Path:
    """Encode every pair of ``datamodule`` with ``teacher``'s VAE and text encoder(s) into safetensors shards.

    Writes ``shard-NNNNN.safetensors`` (``latents``, ``prompt_embeds`` and SDXL's ``text_embeds``/``time_ids`` or
    SD3/FLUX's ``pooled_projections``),
    ``uncond.safetensors`` (the empty prompt, batch 1), ``captions.jsonl`` and ``index.json``. Refuses an existing
    ``output`` unless ``overwrite``; writes into a temporary folder first, so a failure leaves nothing half done.
    """
    import shutil

    from safetensors.torch import save_file

    stored = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype not in stored:
        raise ValueError(f"dtype must be one of {sorted(stored)}, got {dtype!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not getattr(teacher, "is_latent", False) or not getattr(teacher, "text_encoders", None):
        raise ValueError(
            "precompute needs a latent text-to-image teacher with its VAE and text encoder: load the pipeline folder "
            "with DiffusionTeacher.from_pretrained(path) (latent_parts true)"
        )
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(
            f"{output} exists; pass --overwrite true to replace it (or choose another output)"
        )
    datamodule.setup("fit")
    dataset = datamodule.dataset()
    staging = output.with_name(output.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    to = stored[dtype]
    device = next(teacher.unet.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=datamodule.num_workers)
    buffer: dict[str, torch.Tensor] = {}
    shards: list[dict[str, Any]] = []
    captions: list[str] = []

    def write(tensors: dict[str, torch.Tensor]) -> None:
        name = f"shard-{len(shards):05d}.safetensors"
        save_file({k: v.to(to).contiguous() for k, v in tensors.items()}, str(staging / name))
        shards.append({"file": name, "count": int(tensors["latents"].shape[0])})

    for batch in loader:
        latents = teacher.encode_images(batch["images"].to(device)).cpu()
        cond = {k: v.cpu() for k, v in _cond_tensors(teacher.encode_prompt(list(batch["captions"]))).items()}
        captions.extend(batch["captions"])
        for key, value in {"latents": latents, **cond}.items():
            buffer[key] = value if key not in buffer else torch.cat([buffer[key], value])
        while buffer["latents"].shape[0] >= shard_size:
            write({k: v[:shard_size] for k, v in buffer.items()})
            buffer = {k: v[shard_size:] for k, v in buffer.items()}
    if buffer and buffer["latents"].shape[0]:
        write(buffer)
    save_file(
        {k: v.to(to).contiguous() for k, v in _cond_tensors(teacher.uncond()).items()},
        str(staging / UNCOND_FILE),
    )
    (staging / "captions.jsonl").write_text("\n".join(json.dumps({"text": c}) for c in captions) + "\n")
    first = shards[0]["file"]
    from safetensors import safe_open

    with safe_open(str(staging / first), framework="pt") as handle:
        latent_shape = list(handle.get_slice("latents").get_shape()[1:])
    index = {
        "format": "distill-diffusion latent shards v1",
        "num_samples": sum(s["count"] for s in shards),
        "shards": shards,
        "teacher": getattr(teacher, "source", None),
        "image_size": datamodule.image_size,
        "latent_shape": latent_shape,
        "dtype": dtype,
        "sdxl": bool(getattr(teacher, "is_sdxl", False)),
        "source": str(datamodule.root),
    }
    (staging / SHARD_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    rank_zero_info(f"precomputed {index['num_samples']} samples into {len(shards)} shard(s) at {output}")
    return output


class LatentShardDataset(Dataset):
    """Rows of safetensors shards, read lazily (one shard file open per worker at a time)."""

    def __init__(self, root: Path, shards: list[dict[str, Any]]) -> None:
        self.root, self.shards = root, shards
        self.offsets = [0]
        for shard in shards:
            self.offsets.append(self.offsets[-1] + int(shard["count"]))
        self._open: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def _handle(self, shard: int):
        from safetensors import safe_open

        if self._open is None or self._open[0] != shard:
            self._open = (shard, safe_open(str(self.root / self.shards[shard]["file"]), framework="pt"))
        return self._open[1]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = next(i for i in range(len(self.shards)) if index < self.offsets[i + 1])
        row = index - self.offsets[shard]
        handle = self._handle(shard)
        return {key: handle.get_slice(key)[row : row + 1][0].float() for key in handle.keys()}  # noqa: SIM118


class LatentShardDataModule(L.LightningDataModule):
    """Trains from :func:`precompute`'s shards: ``{"latents", "prompt_embeds", ...}`` batches, no VAE or text
    encoder needed (load the teacher with ``latent_parts: false`` to keep them out of memory).

    Args:
        root: the folder ``distill precompute`` wrote (``index.json`` inside).
        batch_size: per-process batch size; shuffle_seed: seed of the training order.
        num_val: the first ``num_val`` rows also form a validation set (0: none).
    """

    is_latent = True

    def __init__(
        self,
        root: str | Path,
        batch_size: int = 16,
        shuffle_seed: int = 0,
        num_val: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        index_file = self.root / SHARD_INDEX
        if not index_file.is_file():
            raise FileNotFoundError(
                f"no {SHARD_INDEX} in {str(self.root)!r}: point data.init_args.root at a folder written by "
                "`distill precompute`"
            )
        try:
            self.index = json.loads(index_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{index_file} is not valid JSON ({error}); rerun distill precompute") from error
        missing = [s["file"] for s in self.index.get("shards", []) if not (self.root / s["file"]).is_file()]
        if missing or not (self.root / UNCOND_FILE).is_file():
            raise FileNotFoundError(
                f"shards listed in {index_file} are missing: {missing or [UNCOND_FILE]}; rerun distill precompute"
            )
        if int(self.index.get("num_samples", 0)) < 1:
            raise ValueError(f"{index_file} lists no samples; precompute a non-empty caption folder")
        self.batch_size, self.shuffle_seed, self.num_val, self.num_workers = (
            batch_size,
            shuffle_seed,
            num_val,
            num_workers,
        )
        shape = self.index["latent_shape"]
        self.channels, self.latent_size = int(shape[0]), int(shape[1])
        self.image_size = int(self.index["image_size"])

    def uncond_cond(self) -> Any:
        """The empty-prompt condition stored beside the shards (batch 1), in the form the UNet takes."""
        from safetensors.torch import load_file

        return cond_from_tensors(load_file(str(self.root / UNCOND_FILE)))

    def dataset(self) -> LatentShardDataset:
        return LatentShardDataset(self.root, self.index["shards"])

    def train_dataloader(self) -> DataLoader:
        return _train_loader(self)

    def val_dataloader(self) -> DataLoader | list:
        if self.num_val <= 0:
            return []
        subset = torch.utils.data.Subset(self.dataset(), range(min(self.num_val, len(self.dataset()))))
        return DataLoader(subset, batch_size=self.batch_size, num_workers=self.num_workers)
