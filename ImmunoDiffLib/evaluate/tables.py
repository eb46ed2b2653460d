"""Paper-style result tables written as Markdown and CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..outputs import atomic_output


def format_cell(value) -> str:
    if isinstance(value, tuple) and len(value) == 2:  # (mean, sd)
        return f"{value[0]:.2f} ± {value[1]:.2f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 0.1 and value != 0 else f"{value:.2f}"
    return str(value)


def write_table(rows: list[dict], columns: list[str], stem: str | os.PathLike,
                title: str = "") -> tuple[Path, Path]:
    """Write ``rows`` (dicts keyed by ``columns``) to ``<stem>.md`` and ``<stem>.csv``."""
    stem = Path(stem)
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(c, "")) for c in columns) + " |")
    markdown = stem.with_suffix(".md")
    with atomic_output(markdown, overwrite=True, suffix=".md") as temporary:
        Path(temporary).write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = stem.with_suffix(".csv")
    with atomic_output(table, overwrite=True, suffix=".csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([format_cell(row.get(c, "")) for c in columns])
    return markdown, table
