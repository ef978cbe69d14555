"""Every measured number in README.md, docs/ and the shipped students' cards comes from a committed result JSON.

The generated blocks (``<!-- result:NAME -->``) are re-rendered from their JSON and must equal the pages; a
Markdown table with a numeric cell outside a generated block fails unless it is marked unverified (saying why)
or is on the allowlist below (numbers that are definitions or counts derived from configs, not measurements).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import update_docs  # noqa: E402

# (page, header row) -> why its numbers need no result file
ALLOWLIST: dict[tuple[str, str], str] = {
    (
        "docs/students.md",
        "| student | built from | parameters | MACs / forward | digits metrics |",
    ): "parameter and MAC counts of the registered students, derived from their configs (tests/test_students.py)",
    (
        "docs/stable_diffusion.md",
        "| config | recipe | student | GPU memory (estimate) | compute (estimate) |",
    ): "estimates derived from parameter and MAC counts, not measurements (the arithmetic is under the table)",
    (
        "docs/distribution_matching.md",
        "| parameter | default | meaning |",
    ): "the method's constructor defaults (distill/methods/distribution_matching.py), not measurements",
}

NUMERIC_CELL = re.compile(r"^\**[-+~<>]?\d")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _tables_outside_blocks(text: str) -> list[tuple[str, list[str]]]:
    """``(header, numeric rows)`` of every Markdown table outside generated/unverified blocks and code fences."""
    text = update_docs.BLOCK.sub("", text)
    text = FENCE.sub("", text)
    found: list[tuple[str, list[str]]] = []
    header: str | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        if header is None:
            header = line.strip()
            found.append((header, []))
            continue
        if set(line.replace("|", "").strip()) <= set("-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if any(NUMERIC_CELL.match(c) for c in cells[1:]) or (cells and NUMERIC_CELL.match(cells[0])):
            found[-1][1].append(line)
    return [(h, rows) for h, rows in found if rows]


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_generated_block_matches_its_result_file():
    stale = []
    rendered = update_docs.render_all()
    for page in update_docs.pages():
        text = page.read_text()
        _, changed = update_docs.fill(text, rendered)
        stale += [f"{_rel(page)}: {name}" for name in changed]
    assert not stale, f"blocks differ from their result files (run python benchmarks/update_docs.py): {stale}"


def test_every_block_has_a_source_and_every_source_is_shown():
    shown = set()
    for page in update_docs.pages():
        for kind, name, content in update_docs.blocks_in(page.read_text()):
            if kind == "unverified":
                assert content.startswith(update_docs.UNVERIFIED_LEAD), f"{_rel(page)}: unverified:{name}"
                continue
            assert name in update_docs.BLOCKS, f"{_rel(page)}: result:{name} has no generator"
            shown.add(name)
    assert set(update_docs.BLOCKS) == shown, f"generated but shown nowhere: {set(update_docs.BLOCKS) - shown}"


def test_result_files_record_where_they_came_from():
    """Results written by the current scripts carry their command, commit, config hash and date."""
    for block in update_docs.BLOCKS.values():
        data = json.loads((ROOT / block.source).read_text())
        entries = [v for v in data.values() if isinstance(v, dict)]
        metas = [data["meta"]] if "meta" in data else [v["meta"] for v in entries if "meta" in v]
        for meta in metas:
            assert {"command", "commit", "date"} <= set(meta), block.source


def test_no_measured_table_outside_a_generated_block():
    offenders = []
    for page in update_docs.pages():
        for header, rows in _tables_outside_blocks(page.read_text()):
            if (_rel(page), header) not in ALLOWLIST:
                offenders.append(f"{_rel(page)}: {header[:80]} ({len(rows)} numeric rows)")
    assert not offenders, (
        "tables with numbers that no result file generates (render them from a result JSON in "
        "benchmarks/update_docs.py, mark them unverified, or allowlist a derived count here):\n"
        + "\n".join(offenders)
    )


def test_the_scanner_finds_tables_and_skips_blocks():
    text = (
        "| a | b |\n| --- | ---: |\n| x | 1.5 |\n\n"
        "<!-- result:t -->\n| a | b |\n| --- | --- |\n| x | 2 |\n<!-- /result:t -->\n"
        "```\n| in | code |\n| --- | --- |\n| y | 3 |\n```\n"
        "| c | d |\n| --- | --- |\n| `name_2` | text |\n"
    )
    assert _tables_outside_blocks(text) == [("| a | b |", ["| x | 1.5 |"])]


@pytest.mark.parametrize("page", ["README.md"])
def test_readme_is_a_front_page(page):
    text = (ROOT / page).read_text()
    assert len(text.encode()) <= 12_500, f"{page} is {len(text.encode())} bytes; move detail to docs/"
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)", text):
        assert (ROOT / link).is_file(), link
