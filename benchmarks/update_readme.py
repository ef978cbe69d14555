"""Copy the Markdown tables ``make bench`` wrote (benchmarks/results/NAME.md) into README.md and the pages of docs/,
between the markers ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``, so the benchmark tables shown are always
the last run's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fill(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with each ``<!-- bench:NAME -->`` block's content replaced by ``tables[NAME]``; and the names
    replaced. Markers without a table keep their content."""
    done = []
    for name, table in sorted(tables.items()):
        pattern = re.compile(
            rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S
        )
        if pattern.search(text):
            text = pattern.sub(lambda m, t=table: m.group(1) + t + m.group(2), text)
            done.append(name)
    return text, done


def pages() -> list[Path]:
    """The Markdown pages that may show benchmark tables: README.md and docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main() -> None:
    tables = {path.stem: path.read_text() for path in (ROOT / "benchmarks" / "results").glob("*.md")}
    for page in pages():
        text, done = fill(page.read_text(), tables)
        page.write_text(text)
        for name in done:
            print(f"{page.relative_to(ROOT)}: {name} updated")


if __name__ == "__main__":
    main()
