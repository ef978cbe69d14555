"""Which teacher a student came from: the teacher's fingerprint (sha256 of its denoiser's weights) recorded at
export, read back by load_student, and a warning naming both teachers when a run starts from a student of
another teacher (silenced by check_student_teacher: false)."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest
from conftest import save_teacher_folder, tiny_cond_unet

from distill.methods.base import DistillationModule
from distill.methods.knowledge import KnowledgeDistillation
from students.loading import builtin_students_dir, list_builtin_students, load_student
from students.provenance import RECORD_NAME, TeacherRecord, read_teacher_record
from teachers import DiffusionTeacher, teacher_fingerprint

MISMATCH = "was distilled from teacher"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mismatch_warnings(make) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make()
    return [str(w.message) for w in caught if MISMATCH in str(w.message)]


@pytest.fixture
def two_teachers(tmp_path):
    first, second = tmp_path / "teacher_a", tmp_path / "teacher_b"
    save_teacher_folder(first, tiny_cond_unet(seed=0))
    save_teacher_folder(second, tiny_cond_unet(seed=1))
    return first, second


def test_the_fingerprint_is_the_denoiser_weights_sha256(two_teachers, tmp_path):
    first, second = two_teachers
    expected = _sha256(first / "unet" / "diffusion_pytorch_model.safetensors")
    assert teacher_fingerprint(first) == expected
    assert teacher_fingerprint(DiffusionTeacher.from_pretrained(first)) == expected
    assert teacher_fingerprint(first / "unet") == expected  # a model folder (scheduler beside it or not)
    assert teacher_fingerprint(second) != expected
    digits = _sha256(
        DiffusionTeacher.from_pretrained("builtin:digits").weights_dir / "diffusion_pytorch_model.safetensors"
    )
    assert teacher_fingerprint("builtin:digits") == digits
    # a sharded denoiser: the sha256 of its shards' "NAME SHA256" lines
    sharded = tmp_path / "sharded" / "unet"
    sharded.mkdir(parents=True)
    (sharded / "config.json").write_text("{}")
    (sharded / "scheduler_config.json").write_text("{}")
    names = [
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
    ]
    for i, name in enumerate(names):
        (sharded / name).write_bytes(bytes([i]) * 10)
    lines = "".join(f"{name} {_sha256(sharded / name)}\n" for name in names)
    assert teacher_fingerprint(sharded) == hashlib.sha256(lines.encode()).hexdigest()
    (sharded / names[0]).unlink()
    (sharded / names[1]).unlink()
    with pytest.raises(FileNotFoundError, match="no denoiser weights"):
        teacher_fingerprint(sharded)
    loose = DiffusionTeacher(
        tiny_cond_unet(seed=0), json.loads((first / "scheduler" / "scheduler_config.json").read_text())
    )
    with pytest.raises(ValueError, match="not loaded from a folder"):
        teacher_fingerprint(loose)


def test_export_records_the_teacher_and_load_student_reads_it_back(two_teachers, tmp_path):
    first, _ = two_teachers
    out = tmp_path / "export"
    module = KnowledgeDistillation(
        DiffusionTeacher.from_pretrained(first), tiny_cond_unet(seed=4), samples_per_class=0
    )
    module.save_pretrained(out)
    record = TeacherRecord(teacher=str(first), sha256=teacher_fingerprint(first))
    assert json.loads((out / "unet" / RECORD_NAME).read_text()) == {
        "teacher": str(first),
        "sha256": record.sha256,
    }
    assert read_teacher_record(out / "unet") == record
    config = json.loads((out / "unet" / "config.json").read_text())
    assert "teacher" not in config and "sha256" not in config  # nothing diffusers would warn about
    student = load_student(out)
    assert student.distilled_from == record and student.student_source == str(out)
    (out / "unet" / RECORD_NAME).write_text("not json")
    with pytest.raises(ValueError, match="is not a teacher record"):
        load_student(out)
    (out / "unet" / RECORD_NAME).unlink()
    assert load_student(out).distilled_from is None


def test_the_shipped_students_record_their_digits_teacher():
    # the int8 student is distilled from the fp32 student it replaces (trajectory distillation)
    special = {"digits_consistency_qad": "builtin:digits_consistency"}
    for name in list_builtin_students():
        teacher = "builtin:digits_flow" if name.startswith("digits_flow_") else "builtin:digits"
        teacher = special.get(name, teacher)
        expected = TeacherRecord(teacher=teacher, sha256=teacher_fingerprint(teacher))
        assert read_teacher_record(builtin_students_dir() / name / "unet") == expected, name


def test_starting_from_another_teachers_student_warns_naming_both(two_teachers, tmp_path):
    first, second = two_teachers
    out = tmp_path / "export"
    KnowledgeDistillation(
        DiffusionTeacher.from_pretrained(first), tiny_cond_unet(seed=4), samples_per_class=0
    ).save_pretrained(out)

    def start(teacher_path, student, method=KnowledgeDistillation, **options):
        teacher = DiffusionTeacher.from_pretrained(teacher_path)
        return lambda: method(teacher, student, samples_per_class=0, **options)

    (message,) = _mismatch_warnings(start(second, load_student(out)))
    assert (
        f"student {out} was distilled from teacher {first} (sha256 {teacher_fingerprint(first)[:16]}"
        in message
    )
    assert f"this run's teacher is {second} (sha256 {teacher_fingerprint(second)[:16]}" in message
    assert "check_student_teacher: false" in message
    assert not _mismatch_warnings(start(first, load_student(out)))  # its own teacher
    assert not _mismatch_warnings(start(second, load_student(out), check_student_teacher=False))
    assert not _mismatch_warnings(start(second, tiny_cond_unet(seed=4)))  # no record: nothing to compare
    # the shipped step-distillation starting point, with a teacher other than builtin:digits (the check is the
    # base's, so every method runs it)
    other = tmp_path / "teacher_16px"
    save_teacher_folder(other, tiny_cond_unet(seed=2, sample_size=16))
    kd_long = load_student("builtin:digits_efficient_kd_long")
    (shipped,) = _mismatch_warnings(start(other, kd_long, method=DistillationModule))
    assert shipped.startswith(
        "student builtin:digits_efficient_kd_long was distilled from teacher builtin:digits (sha256 "
    )
    assert not _mismatch_warnings(start("builtin:digits", kd_long, method=DistillationModule))
