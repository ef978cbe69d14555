"""The record of which teacher a student was distilled from, kept beside its weights (``unet/distilled_from.json``):
the teacher as it was given and the sha256 fingerprint of its denoiser's weights
(:func:`teachers.provenance.teacher_fingerprint` computes it; ``distill export`` writes the record; the distillation
methods compare it with their teacher).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

RECORD_NAME = "distilled_from.json"


@dataclass(frozen=True)
class TeacherRecord:
    """A student's teacher: ``teacher`` as it was given (``builtin:digits``, a path, a Hugging Face id) and the
    sha256 fingerprint of its denoiser's weights."""

    teacher: str
    sha256: str

    def describe(self) -> str:
        return f"{self.teacher} (sha256 {self.sha256[:16]}...)"


def write_teacher_record(unet_dir: str | Path, record: TeacherRecord) -> Path:
    """Write ``record`` as ``unet_dir/distilled_from.json``; returns the file."""
    path = Path(unet_dir) / RECORD_NAME
    path.write_text(json.dumps(asdict(record), indent=2) + "\n")
    return path


def read_teacher_record(unet_dir: str | Path) -> TeacherRecord | None:
    """The record beside a student's weights, or None for a folder without one."""
    path = Path(unet_dir) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return TeacherRecord(teacher=str(data["teacher"]), sha256=str(data["sha256"]))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path} is not a teacher record ({type(err).__name__}: {err}); expected JSON with the keys "
            '"teacher" and "sha256". Delete it to load the student without one.'
        ) from err
