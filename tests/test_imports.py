"""Import hygiene: students, teachers and the pure math never pull in the trainer."""

from __future__ import annotations

import subprocess
import sys


def test_math_students_teachers_do_not_import_lightning():
    code = (
        "import sys\n"
        "import students, teachers, distill, teachers.schedule, teachers.sampling, teachers.parameterization\n"
        "import distill.flops, distill.features\n"
        "from teachers import DiffusionTeacher\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_lazy_top_level_names_resolve():
    import distill

    assert distill.DiffusionTraining.__name__ == "DiffusionTraining"
    assert distill.NoiseSchedule.__name__ == "NoiseSchedule"
