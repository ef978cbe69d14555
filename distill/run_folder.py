"""A run refused before its first step leaves no run folder behind.

Lightning creates the logger's folder (``save_dir/name/version_N`` with an event file) and LightningCLI writes
``config.yaml`` into it while setting up, before the method's own checks (data vs network sizes) or a checkpoint's
restore can refuse the run. :class:`RunFolders` records, before the run, which of those folders do not exist yet;
when the run then fails before any batch started, it removes what this run created there, and only when it holds
nothing but ``config.yaml``, ``hparams.yaml`` and event files. A folder that existed before is never removed; of
it only a ``config.yaml`` this run wrote is taken back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L

CONFIG_NAME = "config.yaml"
SETUP_FILES = (CONFIG_NAME, "hparams.yaml")
EVENTS_PREFIX = "events.out.tfevents."


def _setup_only(folder: Path) -> bool:
    """Whether ``folder`` holds only what setting a run up writes (no checkpoint, no sub-folder)."""
    return all(
        p.is_file() and (p.name in SETUP_FILES or p.name.startswith(EVENTS_PREFIX)) for p in folder.iterdir()
    )


def _first_missing(folder: Path) -> Path | None:
    """The highest ancestor of ``folder`` (itself included) that does not exist, or None if it exists."""
    if folder.exists():
        return None
    top = folder
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return top


def run_started(trainer: L.Trainer) -> bool:
    """Whether any training, validation (beyond the sanity check), test or predict batch has started."""
    loops = (trainer.fit_loop.epoch_loop, trainer.validate_loop, trainer.test_loop, trainer.predict_loop)
    return any(loop.batch_progress.total.started > 0 for loop in loops)


def log_dirs(trainer: L.Trainer) -> list[Path]:
    """The folders a run of ``trainer`` writes its logs and ``config.yaml`` into (computing a logger's version
    here fixes it: the run then uses the same one)."""
    folders: list[Path] = []
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir:
            folders.append(Path(log_dir))
    if trainer.log_dir:
        folders.append(Path(trainer.log_dir))
    return list(dict.fromkeys(p.resolve() for p in folders))


@dataclass
class RunFolders:
    """What existed before a run: created folders (folder, the highest ancestor the run creates) and, for
    folders that existed, whether they held a ``config.yaml``."""

    new: list[tuple[Path, Path]] = field(default_factory=list)
    existing_without_config: list[Path] = field(default_factory=list)

    @classmethod
    def before(cls, trainer: L.Trainer) -> RunFolders:
        record = cls()
        for folder in log_dirs(trainer):
            top = _first_missing(folder)
            if top is not None:
                record.new.append((folder, top))
            elif not (folder / CONFIG_NAME).exists():
                record.existing_without_config.append(folder)
        return record

    def discard(self, trainer: L.Trainer) -> list[Path]:
        """After a failed run: remove what this run created, if no batch started. Returns what was removed."""
        if run_started(trainer) or not trainer.is_global_zero:
            return []
        for logger in trainer.loggers:  # Lightning finalises loggers on failure; close any writer left open
            experiment = getattr(logger, "_experiment", None)
            if experiment is not None and hasattr(experiment, "close"):
                experiment.close()
        removed: list[Path] = []
        for folder, top in self.new:
            if not folder.is_dir() or not _setup_only(folder):
                continue
            shutil.rmtree(folder)
            removed.append(folder)
            for ancestor in folder.parents:  # the empty folders above it that this run created
                if not ancestor.is_relative_to(top) or any(ancestor.iterdir()):
                    break
                ancestor.rmdir()
                removed.append(ancestor)
        for folder in self.existing_without_config:
            config = folder / CONFIG_NAME
            if config.is_file():
                config.unlink()
                removed.append(config)
        return removed
