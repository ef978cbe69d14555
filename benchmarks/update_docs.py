"""Render every measured table of README.md, docs/*.md and the shipped students' cards from committed result JSON.

A generated block sits between ``<!-- result:NAME -->`` and ``<!-- /result:NAME -->``; its content is
``BLOCKS[NAME]`` rendered from its source (``benchmarks/tables.py`` formats, ``benchmarks/results/*.json`` holds
the numbers and their ``meta``) followed by a line naming the source, its command, commit and date. A table whose
numbers nobody can regenerate from a committed result sits between ``<!-- unverified:NAME -->`` and
``<!-- /unverified:NAME -->`` and says so in its first line.

Run:  python benchmarks/update_docs.py            (rewrite the blocks in place)
      python benchmarks/update_docs.py --check    (exit 1 and list the blocks that differ; run by the tests)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

import tables  # noqa: E402

BLOCK = re.compile(r"<!-- (result|unverified):([\w.-]+) -->\n(.*?)<!-- /\1:\2 -->", re.S)
UNVERIFIED_LEAD = "*Not regenerated from a committed result:"


@dataclass(frozen=True)
class Block:
    """A generated block: ``render`` turns the JSON at ``source`` (repository-relative) into Markdown."""

    source: str
    render: Callable[[dict], str]
    entry: str | None = (
        None  # a per-model file's entry whose own meta the source line names (a student's card)
    )

    def text(self) -> str:
        data = json.loads((ROOT / self.source).read_text())
        meta = data.get("meta") if isinstance(data, dict) else None
        if self.entry is not None and self.entry in data:
            return (
                self.render(data)
                + "\n"
                + tables.source_line(self.source, data[self.entry].get("meta"))
                + "\n"
            )
        older = False
        if meta is None and isinstance(data, dict):  # per-entry meta (shipped_students.json): the newest
            entries = [v for v in data.values() if isinstance(v, dict)]
            metas = [v["meta"] for v in entries if "meta" in v]
            meta = max(metas, key=lambda m: m.get("date", "")) if metas else None
            older = bool(metas) and len(metas) < len(entries)
        return self.render(data) + "\n" + tables.source_line(self.source, meta, older=older) + "\n"


SHIPPED = "benchmarks/results/shipped_students.json"


DIGITS_FLOW = "benchmarks/results/digits_flow.json"
DEPLOY = "benchmarks/results/deploy_digits.json"


def _card(name: str) -> Block:
    if name.endswith("_qad"):  # an int8 student: its card is the deployment comparison
        return Block(DEPLOY, tables.deploy_digits)
    if name.startswith("digits_flow_"):
        return Block(
            DIGITS_FLOW,
            lambda data: tables.student_card(data, name, teacher_key=tables.FLOW_TEACHER, sampler="Euler"),
            entry=name,
        )
    return Block(SHIPPED, lambda data: tables.student_card(data, name), entry=name)


BLOCKS: dict[str, Block] = {
    "step_distillation": Block(SHIPPED, tables.step_distillation),
    "teacher_steps": Block(SHIPPED, tables.teacher_steps),
    "dmd2_bar": Block(SHIPPED, tables.dmd2_bar),
    "seed_pattern": Block(SHIPPED, tables.seed_pattern),
    "dmd2_2step_sweep": Block("benchmarks/results/dmd2_2step_sweep.json", tables.dmd2_2step_sweep),
    "dmd2_2step_average": Block("benchmarks/results/dmd2_2step_sweep.json", tables.dmd2_2step_average),
    "dmd2_2step_merged": Block("benchmarks/results/dmd2_2step_sweep.json", tables.dmd2_2step_merged),
    "kd_students": Block(SHIPPED, tables.kd_students),
    "digits_flow": Block(DIGITS_FLOW, tables.digits_flow),
    "flops_kd": Block("benchmarks/results/flops_kd.json", tables.flops_pair),
    "flops_sd15": Block("benchmarks/results/flops_sd15.json", tables.flops_sd15),
    "flops_transformers": Block("benchmarks/results/flops_transformers.json", tables.flops_transformers),
    "demo": Block("benchmarks/results/demo.json", tables.demo),
    "deploy_digits": Block(DEPLOY, tables.deploy_digits),
    "runtime_parity": Block("benchmarks/results/runtime_parity.json", tables.runtime_parity),
    "block_importance": Block("benchmarks/results/block_importance.json", tables.block_importance),
    "digits_search": Block("benchmarks/results/digits_search.json", tables.digits_search),
    "overhead": Block("benchmarks/results/overhead.json", tables.overhead),
    "speed_features": Block("benchmarks/results/speed_features.json", tables.speed_features),
    "teacher_reuse": Block("benchmarks/results/teacher_reuse.json", tables.teacher_reuse),
    "sampling": Block("benchmarks/results/sampling.json", tables.sampling),
    "quality_cost": Block("benchmarks/results/quality_cost.json", tables.quality_cost),
    "scaling": Block("benchmarks/results/scaling.json", tables.scaling),
    "bench_times": Block("benchmarks/results/bench_times.json", tables.bench_times),
    "rerun": Block("benchmarks/results/rerun.json", tables.rerun_record),
}
for _folder in sorted((ROOT / "students" / "weights").glob("digits_*")):
    BLOCKS[f"card.{_folder.name}"] = _card(_folder.name)


def pages() -> list[Path]:
    """The Markdown pages that may hold measured tables: README.md, docs/*.md, the students' cards."""
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "students" / "weights").glob("*/README.md")),
    ]


def fill(text: str, rendered: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with every result block's content replaced by ``rendered[NAME]``, and the names whose content
    changed. Unknown result names raise (a typo would otherwise leave a block stale forever)."""
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        kind, name, content = match.groups()
        if kind == "unverified" or (name in BLOCKS and name not in rendered):
            return match.group(0)
        if name not in rendered:
            raise KeyError(f"<!-- result:{name} --> has no generator in benchmarks/update_docs.py BLOCKS")
        if content != rendered[name]:
            changed.append(name)
        return f"<!-- result:{name} -->\n{rendered[name]}<!-- /result:{name} -->"

    return BLOCK.sub(replace, text), changed


def blocks_in(text: str) -> list[tuple[str, str, str]]:
    """``(kind, name, content)`` of every marked block in ``text``."""
    return [m.groups() for m in BLOCK.finditer(text)]


def render_all(only: list[str] | None = None) -> dict[str, str]:
    """Every block rendered (``only``: just these; the others keep their content)."""
    return {name: block.text() for name, block in BLOCKS.items() if only is None or name in only}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any block is stale")
    parser.add_argument("--only", nargs="+", choices=sorted(BLOCKS), help="render only these blocks")
    args = parser.parse_args(argv)
    rendered = render_all(args.only)
    stale = []
    for page in pages():
        text = page.read_text()
        new, changed = fill(text, rendered)
        for kind, name, content in blocks_in(text):
            if kind == "unverified" and not content.startswith(UNVERIFIED_LEAD):
                raise SystemExit(
                    f"{page.relative_to(ROOT)}: unverified:{name} must start with {UNVERIFIED_LEAD!r}"
                )
        for name in changed:
            stale.append(f"{page.relative_to(ROOT)}: {name}")
        if changed and not args.check:
            page.write_text(new)
    for line in stale:
        print(f"{line} {'differs' if args.check else 'updated'}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
