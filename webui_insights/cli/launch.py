"""``webui-insights run``: a command with ``install()`` active in it; only its arguments and output here.

The launcher (``launcher.py``) builds the environment and execs.
"""

from __future__ import annotations

import argparse
import shlex

from .context import EXIT_OK, CommandRun, UsageError

__all__ = ["command"]


def command(args: argparse.Namespace, run: CommandRun) -> int:
    from ..launcher import LaunchError, exec_command, launch_env, recipe

    unknown: list[str] = getattr(args, "unknown", [])
    if unknown:
        run.json = run.json or "--json" in unknown  # ``--json run ...``: the error object as everywhere else
        raise UsageError(f"unknown option {unknown[0]!r}; options go before --, COMMAND after it (see run -h)")
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if args.print_env:
        if argv:
            raise UsageError("--print-env takes no COMMAND")
        env = recipe(enabled=args.enabled, transcripts=args.transcripts)
        if run.json:
            return run.emit({"command": "run", "env": env}, EXIT_OK)
        for key, value in env.items():
            print(f"{key}={shlex.quote(value)}", file=run.out)
        return EXIT_OK
    if not argv:
        raise UsageError("no command to run: webui-insights run [options] -- COMMAND [ARG...]")
    try:
        exec_command(argv, launch_env(enabled=args.enabled, transcripts=args.transcripts))
    except LaunchError as exc:
        raise UsageError(str(exc)) from None
