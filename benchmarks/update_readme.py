"""Copy the Markdown tables ``make bench`` wrote (benchmarks/results/NAME.md) into README.md, between the markers
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``, so the README's benchmark tables are always the last run's."""

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


def main() -> None:
    readme = ROOT / "README.md"
    tables = {path.stem: path.read_text() for path in (ROOT / "benchmarks" / "results").glob("*.md")}
    text, done = fill(readme.read_text(), tables)
    readme.write_text(text)
    for name in done:
        print(f"README: {name} updated")


if __name__ == "__main__":
    main()
