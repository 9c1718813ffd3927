"""The printed tables: one per area, each row a figure, its target, and met or not."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple


class Row(NamedTuple):
    label: str
    value: str
    target: str = ""
    met: bool | None = None  # None: a context figure, no target


class Table(NamedTuple):
    key: str  # the area's number: tables print in this order, rows of one key merge
    title: str
    rows: list[Row]


def to_json(tables: Iterable[Table]) -> list[dict[str, Any]]:
    return [{"key": t.key, "title": t.title, "rows": [list(r) for r in t.rows]} for t in tables]


def from_json(data: list[dict[str, Any]]) -> list[Table]:
    return [Table(t["key"], t["title"], [Row(*r) for r in t["rows"]]) for t in data]


def merge(tables: Iterable[Table]) -> list[Table]:
    """One table per area, in area order, whichever suite measured its rows."""
    merged: dict[str, Table] = {}
    for table in tables:
        known = merged.get(table.key)
        if known is None:
            merged[table.key] = Table(table.key, table.title, list(table.rows))
        else:
            known.rows.extend(table.rows)
    return [merged[key] for key in sorted(merged, key=lambda k: (len(k), k))]


def render(table: Table) -> str:
    rows = table.rows
    width = max([len(r.label) for r in rows] + [10])
    value_width = max([len(r.value) for r in rows] + [5])
    target_width = max([len(r.target) for r in rows if r.target] + [0]) + 7
    title = f"{table.key}. {table.title}"
    lines = [title, "-" * max(len(title), width + value_width + target_width + 10)]
    for row in rows:
        mark = "" if row.met is None else ("ok" if row.met else "MISSED")
        target = f"target {row.target}" if row.target else ""
        lines.append(f"{row.label:<{width}}  {row.value:>{value_width}}  {target:<{target_width}} {mark}".rstrip())
    return "\n".join(lines)
