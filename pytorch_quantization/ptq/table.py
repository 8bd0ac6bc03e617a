"""A small rectangular table that prints as aligned text, markdown or CSV.

Every PTQ result that a researcher reads (swap summary, BN folding summary, sensitivity ranking,
per-layer report) is one of these, so they all print, save and compare the same way.
"""
import csv
import io
import math
from typing import List

from pytorch_quantization.ptq.atomic_io import atomic_write_text


def _cell(value):
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return "" if value is None else str(value)


class Table:
    """Rows of equal length under named columns.

    ``rows`` hold raw values (floats stay floats, so callers can sort or compare them); formatting
    happens only when the table is printed or written.
    """

    def __init__(self, columns, rows=(), title=None):
        self.columns = list(columns)
        self.rows = []
        self.title = title
        for row in rows:
            self.add(row)

    def add(self, row):
        row = list(row)
        if len(row) != len(self.columns):
            raise ValueError(f"row has {len(row)} cells but the table has {len(self.columns)} columns "
                             f"{self.columns}")
        self.rows.append(row)

    def column(self, name: str) -> list:
        """The values of one column, in row order."""
        idx = self.columns.index(name)
        return [row[idx] for row in self.rows]

    def records(self) -> List[dict]:
        """Rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row)) for row in self.rows]

    def __len__(self):
        return len(self.rows)

    def __str__(self):
        cells = [self.columns] + [[_cell(v) for v in row] for row in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.title:
            lines.insert(0, self.title)
        return "\n".join(lines)

    __repr__ = __str__

    def to_markdown(self) -> str:
        head = ["| " + " | ".join(self.columns) + " |", "|" + "|".join("---" for _ in self.columns) + "|"]
        body = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in self.rows]
        title = [f"### {self.title}", ""] if self.title else []
        return "\n".join(title + head + body) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if v is None else v for v in row])
        return buf.getvalue()

    def save(self, path) -> None:
        """Write as CSV (``.csv``) or markdown (anything else), atomically."""
        text = self.to_csv() if str(path).endswith(".csv") else self.to_markdown()
        atomic_write_text(path, text)

