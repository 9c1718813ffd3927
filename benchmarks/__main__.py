"""Run every benchmark in one process and print one table; exit 1 if a target is missed."""

from __future__ import annotations

import importlib
import logging
import platform
import sys

from .table import Row, render

SUITES = ("bench_save_path", "bench_backfill")


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    rows: list[Row] = []
    for name in SUITES:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"benchmarks.{name}":
                continue
            raise
        result = module.run()
        rows.extend(r if isinstance(r, Row) else Row(str(r[0]), str(r[1]), "", None) for r in result)
    title = f"webui-insights benchmarks — Python {platform.python_version()}, {platform.machine()}, one run"
    print(render(title, rows))
    missed = [r for r in rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
