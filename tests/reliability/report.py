"""Print the reliability table and exit non-zero unless every row is 0 host errors / 0 lost.

python tests/reliability/report.py            # lock held 3 s
python tests/reliability/report.py --full     # lock held 30 s, as in the issue
python tests/reliability/report.py disk_full  # one scenario
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="hold the write lock for 30 s")
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    args = parser.parse_args(argv)
    if args.full:
        os.environ["WEBUI_INSIGHTS_RELIABILITY_LOCK_S"] = "30"
    # Our warnings are expected here (that is the fault); keep the table readable.
    logging.getLogger("webui_insights").setLevel(logging.CRITICAL)
    import scenarios

    names = args.names or list(scenarios.SCENARIOS)
    rows = []
    for name in names:
        started = time.monotonic()
        out = scenarios.SCENARIOS[name]()
        rows.append((out, time.monotonic() - started))
    header = ("scenario", "injected", "host errors", "lost after recovery", "internal errors", "counted as", "s")
    table = [header] + [
        (o.scenario, str(o.injected), str(o.host_errors), str(o.lost), str(o.internal_errors), o.counted, f"{t:.1f}")
        for o, t in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    bad = [o.scenario for o, _ in rows if not o.ok]
    if bad:
        print(f"\nFAILED: {len(bad)} row(s) not 0/0 (or nothing injected): {', '.join(bad)}")
        return 1
    print(f"\nOK: {len(rows)} scenarios, every row 0 host errors / 0 lost after recovery")
    return 0


if __name__ == "__main__":
    sys.exit(main())
