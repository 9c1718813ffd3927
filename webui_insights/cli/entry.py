"""``main``: parse, set up output, run one command's presenter, and turn every way out into an exit status.

The only place that configures logging output: the library adds no
handlers. Usage errors (exit 2), Ctrl-C (exit 130, with what was done),
a closed pipe and any other failure (exit 1) each end in one line on
stderr and, with ``--json``, one error object on stdout.

Never: replace an embedding application's Ctrl-C handler, or leave ours
installed after a call from other code.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from .context import EXIT_ATTENTION, EXIT_INTERRUPTED, EXIT_USAGE, CommandRun, UsageError
from .parser import COMMANDS, BadArguments, build_parser

__all__ = ["main"]

SigintHandler = Callable[[int, FrameType | None], None]

# Commands that go through every chat of a home (tens of thousands of small objects a second).
_BULK_COMMANDS = frozenset({"status", "backfill", "verify"})


def _on_sigint(run: CommandRun) -> SigintHandler:
    """The Ctrl-C handler for this run: raise, unless the work in progress holds it (``CommandRun.hold_interrupt``)."""

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        # The first Ctrl-C interrupts; the clean-up after it (bounded) is not interrupted again.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if run.hold_interrupt is not None and run.hold_interrupt():
            return  # a commit is being counted: the batch raises it right after
        raise KeyboardInterrupt

    return on_sigint


@contextmanager
def _cycle_collector_paused(command: str) -> Iterator[None]:
    """Python's cycle collector off while a bulk command runs, back on (if it was) afterwards.

    A backfill makes and drops tens of thousands of snapshots, plans and
    rows a second, none of them in reference cycles (reference counting
    frees them), so the collector's passes over them are pure overhead —
    a noticeable share of the run. Only the command line does this, for
    its own command: the library never touches the collector of a host's
    process.
    """
    if command not in _BULK_COMMANDS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _bad_arguments(exc: BadArguments, argv: Sequence[str]) -> int:
    """argparse's usage and message on stderr, as argparse prints them; the error object too with ``--json``."""
    exc.parser.print_usage(sys.stderr)
    print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
    words = list(argv)
    if "--json" in (words[: words.index("--")] if "--" in words else words):
        prog = exc.parser.prog.split()
        # An error of a command's own parser names it; one found by the top parser
        # (arguments left over) belongs to the first word that is a command.
        command = prog[1] if len(prog) > 1 else next((w for w in words if w in COMMANDS), None)
        json.dump({"command": command, "error": exc.message, "exit_code": EXIT_USAGE}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return EXIT_USAGE


def _configure_output(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")  # a title in any script never fails a print


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and args.command != "run":  # run's own options are its to report (its --json object)
            parser.error("unrecognized arguments: " + " ".join(unknown))
    except BadArguments as exc:
        return _bad_arguments(exc, sys.argv[1:] if argv is None else argv)
    args.unknown = unknown
    _configure_output(args.verbose)
    run = CommandRun(args, sys.stdout)
    # Only a process's own Ctrl-C handling is replaced (not an embedding application's).
    handler: SigintHandler | None = None
    if threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        handler = _on_sigint(run)
        signal.signal(signal.SIGINT, handler)
    try:
        with _cycle_collector_paused(args.command):
            result: int = args.handler(args, run)
        return result
    except (KeyboardInterrupt, Exception) as exc:
        return _failed(exc, run, verbose=args.verbose)
    finally:
        # After a Ctrl-C the process is leaving: more Ctrl-C must not kill it on its way out
        # (it exits 130, not by SIGINT). Called with argv (tests, other code), restore.
        if handler is not None and (argv is not None or signal.getsignal(signal.SIGINT) is handler):
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _failed(exc: BaseException, run: CommandRun, *, verbose: bool) -> int:
    """How a command that did not return ends: its line on stderr, its error object with ``--json``, its status."""
    command = run.command
    if isinstance(exc, UsageError):
        print(f"webui-insights {command}: {exc}", file=sys.stderr)
        if run.json:
            run.emit({"command": command, "error": str(exc)}, EXIT_USAGE)
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        line = f"webui-insights {command}: interrupted while {run.phase}"
        print(line, file=sys.stderr)
        if run.json:
            run.emit({"command": command, "interrupted": True, "error": line}, EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        # The reader of our output went away (`| head`): nothing more to say, to anyone.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ATTENTION
    if verbose:
        logging.getLogger("webui_insights").exception("webui-insights %s failed", command)
    print(
        f"webui-insights {command}: failed: {type(exc).__name__}: {exc}" + ("" if verbose else " (-v shows where)"),
        file=sys.stderr,
    )
    if run.json:
        run.emit({"command": command, "error": f"{type(exc).__name__}: {exc}"}, EXIT_ATTENTION)
    return EXIT_ATTENTION
