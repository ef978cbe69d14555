"""Student architectures: importable from other repositories without the trainer (torch, diffusers, timm only).

import students
students.list_students("bk_*")
unet = students.create_student("bk_small", teacher="path/to/teacher/unet")
"""

from students.common import StudentInfo, count_parameters, teacher_config
from students.registry import (
    ENTRY_POINT_GROUP,
    create_student,
    get_student_builder,
    is_student,
    list_students,
    load_entry_points,
    register_student,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "StudentInfo",
    "count_parameters",
    "create_student",
    "get_student_builder",
    "is_student",
    "list_students",
    "load_entry_points",
    "register_student",
    "teacher_config",
]
