"""``webui-insights demo``: a scripted chat in a temporary HERMES_HOME, then the real ``hermes insights``."""

from __future__ import annotations

import argparse

from .context import CommandRun

__all__ = ["command"]


def command(args: argparse.Namespace, run: CommandRun) -> int:
    from ..commands.demo import run_demo

    run.phase = "running the demo in a temporary HERMES_HOME (removed)"
    return run_demo(keep=args.keep, as_json=args.json, out=run.out)
