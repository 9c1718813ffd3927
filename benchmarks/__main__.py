"""``make bench``: every area in a fresh process of its own, one table per area; exit 1 if a target is missed.

Each suite (``python -m benchmarks.<suite>`` runs one alone) prints its
tables as one JSON line here; a suite that fails or overruns its time
limit is a missed row, with its error output shown.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from .common import ROOT
from .table import Row, Table, from_json, merge, render

# (module, time limit in seconds); in the order they run.
SUITES = (
    ("bench_save_path", 300),
    ("bench_writer", 180),
    ("bench_backfill", 300),
    ("bench_memory", 300),
    ("bench_transcripts", 600),
)


def _run_suite(name: str, limit: float, log: list[str]) -> list[Table]:
    started = time.monotonic()
    load = os.getloadavg()[0]
    try:
        done = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=limit,
        )
    except subprocess.TimeoutExpired as exc:  # run() kills the child it started
        err = exc.stderr or ""
        sys.stderr.write(err.decode(errors="replace") if isinstance(err, bytes) else err)
        return [Table("?", f"{name}: did not finish", [Row(f"{name} within {limit:.0f} s", "timed out", "", False)])]
    if done.stderr.strip():
        sys.stderr.write(f"--- {name} (stderr)\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout)
        return [Table("?", f"{name}: failed", [Row(f"{name} exit status", str(done.returncode), "0", False)])]
    tables = from_json(json.loads(lines[-1]))
    took = time.monotonic() - started
    log.append(f"{name}: {took:.0f} s, load average {load:.1f} → {os.getloadavg()[0]:.1f}")
    print(f"[{log[-1]}]", file=sys.stderr, flush=True)
    return tables


def main() -> int:
    only = set(sys.argv[1:])
    tables: list[Table] = []
    log: list[str] = []
    started = time.monotonic()
    for name, limit in SUITES:
        if only and name not in only:
            continue
        tables += _run_suite(name, limit, log)
    tables = merge(tables)
    print(
        f"webui-insights benchmarks — Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, one run of {time.monotonic() - started:.0f} s\n"
    )
    print("\n\n".join(render(t) for t in tables))
    # Other work on this machine shows in every figure: say how busy it was.
    print(f"\nsuites (1-minute load average before → after; above {os.cpu_count()} means other work competed):")
    for line in log:
        print("  " + line)
    missed = [f"{t.key}: {r.label.strip(' …')}" for t in tables for r in t.rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) missed:")
        for label in missed:
            print("  " + label)
        return 1
    print("\nevery target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
