"""Writing result tables the way every benchmark does: markdown + CSV in the results folder."""

from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any


def to_markdown(
    rows: Sequence[Sequence[Any]], align_right_from: int = 1, left_columns: Collection[int] | None = None
) -> str:
    """A GitHub markdown table; columns from ``align_right_from`` on are right-aligned (numbers).

    ``left_columns`` overrides that: exactly these column indices are left-aligned (text).
    """
    n = len(rows[0])
    left = set(range(align_right_from)) if left_columns is None else set(left_columns)
    rule = "|" + "".join("---|" if i in left else "---:|" for i in range(n))
    lines = ["| " + " | ".join(str(c) for c in rows[0]) + " |", rule]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def write_files(out_dir: Path, name: str, markdown: str, csv_rows: Sequence[Sequence[Any]]) -> tuple[Path, Path]:
    """Write ``name.md`` (the whole report) and ``name.csv`` (header row first) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    md_path.write_text(markdown, encoding="utf-8")
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(csv_rows)
    return md_path, csv_path


def write_table(
    rows: Sequence[Sequence[str]], out_dir: Path, name: str, note: str = "", align_right_from: int = 1
) -> str:
    """Write ``name.md`` (table + note) and ``name.csv`` into ``out_dir``; returns the markdown."""
    markdown = to_markdown(rows, align_right_from) + (f"\n{note.strip()}\n" if note else "")
    write_files(out_dir, name, markdown, rows)
    return markdown
