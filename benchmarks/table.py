"""One printed table for the whole bench run: figure, target, met or not."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Row(NamedTuple):
    label: str
    value: str
    target: str
    met: bool | None  # None: context figure, no target


def render(title: str, rows: Iterable[Row]) -> str:
    rows = list(rows)
    width = max([len(r.label) for r in rows] + [10])
    value_width = max([len(r.value) for r in rows] + [5])
    lines = [title, "-" * len(title)]
    for row in rows:
        mark = "" if row.met is None else ("ok" if row.met else "MISSED")
        target = f"target {row.target}" if row.target else ""
        lines.append(f"{row.label:<{width}}  {row.value:>{value_width}}  {target:<16} {mark}".rstrip())
    return "\n".join(lines)
