"""Markdown for the reports (compare, chaos, speed, parity): tables, and pasting a generated
block into a document between its markers.

    markdown_table(["variant", "acc"], [["gru", "97.62%"]])
    paste_between_markers(Path("README.md"), "results:default", table)   # <!-- results:default:start --> ...
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from common.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from common.errors import UserError


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table, one line per row, no trailing newline."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if len(row) != len(head):
            raise ValueError(f"row {list(row)} has {len(row)} cells for {len(head)} columns")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def write_report(folder: Path, stem: str, record: dict, markdown: str) -> None:
    """FOLDER/STEM.json (every number) and FOLDER/STEM.md (the table), then the table on stdout."""
    atomic_write_json(folder / f"{stem}.json", record)
    atomic_write_text(folder / f"{stem}.md", markdown)
    print(markdown)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def require_markers(document: Path, name: str) -> tuple[str, re.Pattern]:
    """`document`'s text and the pattern of its `name` block; call it before long work that
    will paste there, so a missing block is reported at once."""
    start, end = markers(name)
    try:
        text = document.read_text()
    except OSError as error:
        raise UserError(f"cannot read {document} to paste the table into: {error.strerror}") from None
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise UserError(f"{document} has no {start} ... {end} markers to put the table between")
    return text, pattern


def paste_between_markers(document: Path, name: str, markdown: str) -> None:
    """Put `markdown` between the `name` markers in `document`, replacing what was there."""
    text, pattern = require_markers(document, name)
    start, end = markers(name)
    atomic_write_text(document, pattern.sub(lambda _: f"{start}\n{markdown.rstrip()}\n{end}", text))


def save_png(fig, path: Path) -> None:
    """Write a matplotlib figure to `path` as a PNG (atomically), and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
