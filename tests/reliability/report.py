"""Print the reliability table and exit non-zero unless every row is 0 host errors / 0 lost.

Each scenario runs in its own interpreter (``scenarios.run_isolated``).

python tests/reliability/report.py            # lock held 3 s
python tests/reliability/report.py --full     # lock held 30 s, as in the issue
python tests/reliability/report.py disk_full  # one scenario
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="hold the write lock for 30 s")
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    args = parser.parse_args(argv)
    import scenarios

    env = {"WEBUI_INSIGHTS_RELIABILITY_LOCK_S": "30"} if args.full else {}
    names = args.names or list(scenarios.SCENARIOS)
    unknown = [n for n in names if n not in scenarios.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(scenarios.SCENARIOS)}")
    rows = []
    for name in names:
        started = time.monotonic()
        out = scenarios.run_isolated(name, env=env)
        rows.append((out, time.monotonic() - started))
        print(f"  {name}: {'ok' if out.ok else 'FAILED'} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    header = (
        "scenario",
        "injected",
        "host errors",
        "lost after recovery",
        "internal errors",
        "broken",
        "counted as",
        "s",
    )
    table = [header] + [
        (
            o.scenario,
            str(o.injected),
            str(o.host_errors),
            str(o.lost),
            str(o.internal_errors),
            o.broken or "-",
            o.counted,
            f"{t:.1f}",
        )
        for o, t in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    bad = [o.scenario for o, _ in rows if not o.ok or o.internal_errors]
    if bad:
        print(f"\nFAILED: {len(bad)} row(s) not 0 host errors / 0 lost (or nothing injected): {', '.join(bad)}")
        return 1
    print(f"\nOK: {len(rows)} scenarios, each in its own interpreter, every row 0 host errors / 0 lost after recovery")
    return 0


if __name__ == "__main__":
    sys.exit(main())
