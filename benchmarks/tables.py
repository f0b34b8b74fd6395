"""Writing a result table the way every benchmark does: markdown + CSV in the results folder."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path


def to_markdown(rows: Sequence[Sequence[str]], align_right_from: int = 1) -> str:
    """A GitHub markdown table; columns from ``align_right_from`` on are right-aligned (numbers)."""
    n = len(rows[0])
    rule = "|" + "".join("---:|" if i >= align_right_from else "---|" for i in range(n))
    lines = ["| " + " | ".join(rows[0]) + " |", rule]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[Sequence[str]], out_dir: Path, name: str, note: str = "") -> str:
    """Write ``name.md`` (table + note) and ``name.csv`` into ``out_dir``; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows) + (f"\n{note.strip()}\n" if note else "")
    (out_dir / f"{name}.md").write_text(markdown, encoding="utf-8")
    with open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return markdown
