"""Copy the Markdown tables ``make bench`` wrote (benchmarks/results/NAME.md) into README.md, between the markers
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``, so the README's benchmark tables are always the last run's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for table in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        name = table.stem
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda m, t=table: m.group(1) + t.read_text() + m.group(2), text)
            print(f"README: {name} updated")
    readme.write_text(text)


if __name__ == "__main__":
    main()
