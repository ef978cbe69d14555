"""The ``distill`` command: ``distill fit|validate|test|flops|export|precompute -c CONFIG`` (LightningCLI, see
:mod:`distill.lightning_cli`) and ``distill sample`` / ``convert`` / ``prune`` (no config needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.lightning_cli import DistillCLI, DistillTrainer

__all__ = ["DistillCLI", "DistillTrainer", "main"]


def __getattr__(name: str) -> Any:
    """``DistillCLI`` and ``DistillTrainer`` import on first use, so :func:`main` silences the dependencies' import-time
    noise (diffusers imports torchao where it is installed) before they load."""
    if name in ("DistillCLI", "DistillTrainer"):
        from distill import lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(args: list[str] | None = None) -> None:
    """Console entry point; ``args`` lets tests drive it in-process. ``distill sample``, ``convert`` and ``prune`` need no config.
    Dependencies' hints and deprecation warnings are silenced unless ``DISTILL_VERBOSE=1``
    (:func:`distill.console.quiet_third_party`)."""
    import sys

    from distill.console import quiet_third_party

    quiet_third_party()
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["sample"]:
        from distill.sample import main as sample_main

        sample_main(argv[1:])
        return
    if argv[:1] == ["convert"]:
        from distill.convert import main as convert_main

        convert_main(argv[1:])
        return
    if argv[:1] == ["prune"]:
        from distill.prune import main as prune_main

        prune_main(argv[1:])
        return
    from distill.lightning_cli import DistillCLI

    DistillCLI(args=args)


if __name__ == "__main__":
    main()
