"""``webui-insights`` command line: status, backfill, verify, demo.

The only place that configures logging output; the library itself adds no
handlers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webui-insights",
        description="Mirror hermes-webui chat usage into hermes-agent's state.db, and check that it worked.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the mirror does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = sub.add_parser(
        "demo",
        help="run a scripted WebUI chat in a temporary HERMES_HOME and print the real `hermes insights` report",
        description="Run a scripted three-turn WebUI chat through the wrapped save in a temporary "
        "HERMES_HOME, then print what `hermes insights --days 1 --source webui` shows.",
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary HERMES_HOME")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    result: int = args.handler(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
