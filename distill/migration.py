"""Refusing configs written for an older meaning of an option, with the converted value in the message.

Guidance (0.2.0): every guidance option a user sets is the classifier-free guidance scale, 1 = off. Before,
consistency and progressive distillation took LCM's ``w`` (teacher scale ``1 + w``) as ``w_min``/``w_max``/
``eval_guidance``, while knowledge distillation's ``eval_guidance`` already was a scale. A config that still names
those keys is refused before anything is built, saying what to write instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RENAMED = {"w_min": "guidance_min", "w_max": "guidance_max", "eval_guidance": "eval_guidance_scale"}
# methods whose old `eval_guidance` already was the CFG scale (the value carries over unchanged)
_SCALE_ALREADY = ("KnowledgeDistillation",)


def converted(key: str, value: Any, class_path: str | None) -> Any:
    """The new option's value for an old ``key: value`` of the method ``class_path``."""
    if value is None:
        return 1.0
    if key == "eval_guidance" and class_path and class_path.rsplit(".", 1)[-1] in _SCALE_ALREADY:
        return float(value)
    return float(value) + 1.0


def legacy_messages(init_args: Mapping[str, Any], *, class_path: str | None, where: str) -> list[str]:
    """One message per old guidance key in a method's ``init_args``."""
    messages = []
    for old, new in RENAMED.items():
        if old in init_args:
            value = init_args[old]
            form = (
                "was already a CFG scale"
                if converted(old, value, class_path) == value
                else "was LCM's w (teacher CFG scale 1 + w)"
            )
            messages.append(
                f"{where}: model.init_args.{old}: {value} {form}; guidance options are now classifier-free guidance "
                f"scales (1 = off): write `{new}: {converted(old, value, class_path)}` instead (see CHANGELOG.md)"
            )
    return messages


def _config_files(argv: list[str]) -> Iterable[Path]:
    for i, token in enumerate(argv):
        if token in ("-c", "--config") and i + 1 < len(argv):
            yield Path(argv[i + 1])
        elif token.startswith("--config="):
            yield Path(token.split("=", 1)[1])


def check_argv(argv: list[str]) -> list[str]:
    """Messages for old guidance keys in the config files and ``--model.init_args.KEY`` overrides of ``argv``."""
    import yaml

    messages: list[str] = []
    class_path = None
    for path in _config_files(argv):
        if not path.is_file():
            continue
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            continue  # jsonargparse reports unreadable files itself
        model = config.get("model") if isinstance(config, dict) else None
        if isinstance(model, dict):
            class_path = model.get("class_path", class_path)
            init_args = model.get("init_args")
            if isinstance(init_args, dict):
                messages += legacy_messages(init_args, class_path=class_path, where=str(path))
    for i, token in enumerate(argv):
        for old in RENAMED:
            flag = f"--model.init_args.{old}"
            if token == flag and i + 1 < len(argv):
                messages += legacy_messages({old: argv[i + 1]}, class_path=class_path, where="command line")
            elif token.startswith(flag + "="):
                messages += legacy_messages(
                    {old: token.split("=", 1)[1]}, class_path=class_path, where="command line"
                )
    return messages
