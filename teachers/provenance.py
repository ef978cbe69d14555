"""Which teacher a student was distilled from: the teacher's fingerprint (sha256 of its denoiser's weight files)
and a readable name, written beside an exported student's weights (``unet/distilled_from.json``) and compared
with the teacher of a run that starts from that student.

The fingerprint of a single weights file is that file's sha256 (what ``sha256sum`` prints); a sharded denoiser's
is the sha256 of its shards' ``NAME SHA256`` lines. For latent teachers the denoiser alone identifies the teacher
(the VAE and text encoders are shared by many).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from students.provenance import RECORD_NAME, TeacherRecord, read_teacher_record, write_teacher_record

__all__ = [
    "RECORD_NAME",
    "TeacherRecord",
    "file_sha256",
    "read_teacher_record",
    "teacher_fingerprint",
    "teacher_record",
    "weight_files",
    "write_teacher_record",
]

WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_SHARDS = "diffusion_pytorch_model-*-of-*.safetensors"
_HASHES: dict[tuple[str, int, int], str] = {}


def weight_files(unet_dir: str | Path) -> list[Path]:
    """The denoiser's weight file(s) in ``unet_dir``, as diffusers loads them: the safetensors file, its shards, or
    the legacy ``.bin``."""
    unet_dir = Path(unet_dir)
    single = unet_dir / WEIGHTS_NAMES[0]
    if single.is_file():
        return [single]
    shards = sorted(unet_dir.glob(_SHARDS))
    if shards:
        return shards
    legacy = unet_dir / WEIGHTS_NAMES[1]
    if legacy.is_file():
        return [legacy]
    raise FileNotFoundError(
        f"no denoiser weights in {unet_dir}: expected {WEIGHTS_NAMES[0]}, shards {_SHARDS} or {WEIGHTS_NAMES[1]}"
    )


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per process for a given path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def teacher_fingerprint(teacher: Any, *, subfolder: str | None = None) -> str:
    """The sha256 fingerprint of a teacher's denoiser weights.

    Args:
        teacher: a ``DiffusionTeacher`` loaded from a folder (``from_pretrained``), or what
            ``DiffusionTeacher.from_pretrained`` takes: a pipeline or model folder, ``builtin:NAME``, a cached
            Hugging Face id.
        subfolder: with a path, the denoiser's subfolder (as ``from_pretrained``'s).
    """
    weights_dir = getattr(teacher, "weights_dir", None) if not isinstance(teacher, str | Path) else None
    if weights_dir is None and not isinstance(teacher, str | Path):
        raise ValueError(
            f"teacher: this {type(teacher).__name__} was not loaded from a folder, so it has no weight files to "
            "fingerprint; load it with DiffusionTeacher.from_pretrained(path)"
        )
    if weights_dir is None:
        from teachers.teacher import _locate, _resolve_root

        weights_dir, _ = _locate(_resolve_root(teacher), subfolder)
    files = weight_files(weights_dir)
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{file.name} {file_sha256(file)}\n" for file in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def teacher_record(teacher: Any) -> TeacherRecord | None:
    """The record of a ``DiffusionTeacher`` (None when it was not loaded from a folder)."""
    if getattr(teacher, "weights_dir", None) is None:
        return None
    return TeacherRecord(teacher=str(teacher.source), sha256=teacher_fingerprint(teacher))
