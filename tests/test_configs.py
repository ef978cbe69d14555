"""Every YAML in configs/ parses and runs one fast_dev_run step in-process through the `distill` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
# Cheap settings for what only affects cost, never what the config means.
CHEAP = {
    "configs/digits/teacher.yaml": [
        "--model.init_args.samples_per_class=1",
        "--model.init_args.sample_steps=2",
    ],
}


def test_configs_exist():
    assert CONFIGS, "configs/ holds no YAML"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_config_fast_dev_run(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = str(config.relative_to(config.parents[2]))
    main(
        [
            "fit",
            "-c",
            str(config),
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            *CHEAP.get(rel, []),
        ]
    )
