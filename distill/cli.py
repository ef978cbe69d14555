"""The ``distill`` command: ``distill fit|validate|test|flops|export|precompute -c CONFIG`` (LightningCLI, see
:mod:`distill.lightning_cli`) and ``distill sample`` (no config needed)."""

from __future__ import annotations

from distill.lightning_cli import DistillCLI, DistillTrainer

__all__ = ["DistillCLI", "DistillTrainer", "main"]


def main(args: list[str] | None = None) -> None:
    """Console entry point; ``args`` lets tests drive it in-process. ``distill sample`` needs no config.
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
    DistillCLI(args=args)


if __name__ == "__main__":
    main()
