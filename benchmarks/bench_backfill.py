"""4. Backfill of 10,000 WebUI chats (issues 12 and 16), and 6. ``backfill --transcripts``.

Generates 10,000 session files the way the WebUI saves them (6 messages
each, 1 chat in 20 repeating an earlier title; the fields
``sources.snapshot_from_dict`` reads), then, into a fresh state.db each
time: the real command line (``cli.main(["backfill", ...])``, which reads
the files in forked reader processes while it writes), several times; the
library with its two phases apart (``scan_sessions(dir, workers=cpu_count)``
then ``commands.backfill.backfill``), timed part by part
(this VM's two speed phases show in the spread); the real command line
(``cli.main(["backfill", "--webui-dir", DIR, "--json"])``) end to end; and
the command again over the same state.db, which must write nothing. Every
row is then read back (read-only) against the files.

"Unchanged or better" (issue 16) is a ratio taken in this one run: the
previous release's command line (``PREVIOUS_RELEASE``, taken from git
history) and this one, each in a fresh interpreter, back to back, over the
same files into a fresh state.db each time; each round's ratio compares
two runs a second apart, and the median of the rounds is the figure. Figures
from different runs on this machine differ by its CPU phases more than the
two releases do, so the same comparison of the previous release with a
copy of itself runs beside it: the spread that is this machine's noise.

That ratio's target (≥ 0.95) is not met, and cannot be without writing
less than this release writes: the command line is bound by its one
writer process (its reader process stays ahead of it), and the writer does
three things per chat the previous release did not. What each costs,
measured by ``python -m benchmarks.backfill_gap 21`` (this release and
copies of it with one of them left out, raced against the previous
release the way this table races the two; 2 CPUs, load average 1.4–1.8,
at commit ebb8a2e), per chat, the wall time paired by round and, in
brackets, the writer's own CPU time:

- this release: 0.73 of the previous release's speed, 14.3 µs behind
  (25.6 CPU);
- the ``session_model_usage`` row each chat gets (so that ``hermes
  insights`` shows a total that went down, ARCHITECTURE.md): 4.2 µs (3.9) —
  without it 0.80;
- the record each chat gets (``webui_insights_chats``: owner, version,
  digest, title memory, spend — what lets every writer apply one rule and
  never an older state over a newer one): 10.8 µs (10.6) — without it 0.92;
- the spend accounting (``plan._account``: the figures' growth, the agent
  hook's ledger, copied chats; its fields are in the record, so it overlaps
  the record's figure): 6.0 µs (5.9) — without it 0.82;
- the three together: 15.5 µs (17.5), the whole gap — without them 1.04.

So the wall-time gap is what these three cost. Without them the writer
still spends about 8 µs more CPU per chat than the previous release's
command line (25.6 − 17.5: the rule's other steps — ownership, versions,
titles, each state's digest — the rows and records read per chunk, and the
layers; the batch, routing and sync bookkeeping are 2.7% of the writer's
py-spy samples), but reading in another process while the writer works
(the previous release read first, then wrote) hides it. Two more runs
under heavier load (load average 2–4) kept the CPU figures (usage row
3.5–4.5, record 9.6–10.6, accounting 4.3–5.9, all three 15.6–17.5 µs over
the three runs) but not the wall ratios (this release 0.67–0.73, the three
left out 0.86–1.04).

The three are written as plainly as the rest of the engine, with no trick
for speed, and none can go without changing what state.db holds. What
plain code recovered after the redesign: each chunk's usage rows written
by one statement over its ids instead of two per chat (−2.8 µs CPU per
chat), the record table's columns read once per transaction instead of per
chunk (−0.4 µs); this table's ratio went from 0.67 to 0.72–0.75 (before
and after, two runs each, load average 1.5–2; the noise row 1.00–1.02).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from .common import ROOT, LockHolds, count, fresh_state_db, median, ms, quartiles, read_sessions, scratch_home
from .common import main as bench_main
from .table import Row, Table

SESSIONS = 10_000
MESSAGES_PER_CHAT = 6
RUNS = 3
_DAY = 86_400.0
# The release first run on the real hosts (before the sync engine): what
# "backfill speed unchanged or better" is measured against.
PREVIOUS_RELEASE = "8002448"
COMPARE_ROUNDS = 9
# Times the command line inside a fresh interpreter (start-up and imports not
# counted: they are the same for both); prints {"s": seconds, "cpu": the
# process's own CPU seconds (the writer's: reader processes are children),
# "rc": exit, "file": package}.
_TIMED_CLI = """
import contextlib, io, json, sys, time
import webui_insights
from webui_insights.cli import main
out = io.StringIO()
cpu, started = time.process_time(), time.perf_counter()
with contextlib.redirect_stdout(out):
    rc = main(["backfill", "--webui-dir", sys.argv[1], "--json"])
took, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"s": took, "cpu": cpu, "rc": rc, "file": webui_insights.__file__}))
"""


def session_dict(i: int, now: float, messages: int = MESSAGES_PER_CHAT) -> dict[str, Any]:
    session_id = f"{i:012x}"
    return {
        "session_id": session_id,
        # One chat in 20 repeats an earlier title (taken titles become "X (WebUI)").
        "title": f"Bench chat {i - 1 if i % 20 == 19 else i}",
        "model": "bench/model-1",
        "model_provider": "bench",
        "profile": None,
        "messages": [
            {"role": "user", "content": f"question {i}.{n} about topic {n % 7}", "timestamp": now - 60 + n}
            if n % 2 == 0
            else {"role": "assistant", "content": f"answer {i}.{n} " + "words " * 8, "timestamp": now - 60 + n}
            for n in range(messages)
        ],
        "created_at": now - 60 - (i % 365) * _DAY,  # before its first message (older messages mark a copy)
        "updated_at": now - 60 + messages,
        "input_tokens": 1000 + i,
        "output_tokens": 200 + i,
        "cache_read_tokens": i % 300,
        "cache_write_tokens": i % 50,
        "estimated_cost": 0.001 * (i % 97),
    }


def write_sessions(sessions_dir: Path, count: int = SESSIONS) -> None:
    sessions_dir.mkdir(parents=True, exist_ok=True)
    now = time.time() - 3600
    for i in range(count):
        data = session_dict(i, now)
        (sessions_dir / f"{data['session_id']}.json").write_text(json.dumps(data), encoding="utf-8")


def _check_rows(db: Path) -> int:
    """Chats whose row matches its file (hermes' input convention, cost, counts, title form)."""
    rows = read_sessions(db, "source = 'webui'")
    right = 0
    for i in range(SESSIONS):
        row = rows.get(f"{i:012x}")
        if row is None:
            continue
        title = f"Bench chat {i - 1}" + " (WebUI)" if i % 20 == 19 else f"Bench chat {i}"
        if (
            row["input_tokens"] == max(0, 1000 + i - i % 300 - i % 50)
            and row["output_tokens"] == 200 + i
            and row["cache_read_tokens"] == i % 300
            and row["cache_write_tokens"] == i % 50
            and abs((row["estimated_cost_usd"] or 0.0) - 0.001 * (i % 97)) < 1e-9
            and row["message_count"] == MESSAGES_PER_CHAT
            and row["title"] == title
        ):
            right += 1
    return right


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the reader processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _library_run(root: Path, sessions_dir: Path, *, transcripts: bool = False) -> dict[str, Any]:
    from webui_insights.commands.backfill import backfill
    from webui_insights.profiles import Homes
    from webui_insights.sources import scan_sessions

    fresh_state_db(root)
    cpu_started = _cpu()
    started = time.perf_counter()
    scan = scan_sessions(sessions_dir, workers=os.cpu_count() or 1, keep_messages=transcripts)
    read_s = time.perf_counter() - started
    cpu_read = _cpu()
    with LockHolds() as holds:
        report = backfill(scan, Homes(root), transcripts=transcripts)
    total_s = time.perf_counter() - started
    cpu_done = _cpu()
    return {
        "read_s": read_s,
        "total_s": total_s,
        "write_s": sum(d.write_s for d in report.databases),
        "transactions": sum(d.transactions for d in report.databases),
        "hold_s": max((d.max_lock_hold_s for d in report.databases), default=0.0),
        "commit_hold_s": holds.longest,
        "p99_hold_s": holds.p99,
        "over_50ms": holds.over(0.05),
        "read_cpu_s": cpu_read - cpu_started,
        "write_cpu_s": cpu_done - cpu_read,
        "written": report.written,
        "complete": report.complete,
    }


def _cli(webui_dir: Path, *extra: str) -> tuple[int, dict[str, Any], float, float]:
    from webui_insights.cli import main

    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), LockHolds() as holds:
        status = main(["backfill", "--webui-dir", str(webui_dir), "--json", *extra])
    took = time.perf_counter() - started
    return status, json.loads(out.getvalue()), took, holds.longest


def previous_release(dest: Path) -> Path | None:
    """The previous release's package unpacked under ``dest`` (None outside a git checkout)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASE, "webui_insights"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+
            tar.extractall(dest, filter="data")
        else:  # our own repository's archive of our own package
            tar.extractall(dest)  # noqa: S202
    return dest


def _timed_cli(package_parent: Path, root: Path, webui_dir: Path) -> float:
    """Seconds of one ``backfill --json`` by the package under ``package_parent``, into a fresh state.db."""
    return timed_cli_run(package_parent, root, webui_dir)[0]


def timed_cli_run(package_parent: Path, root: Path, webui_dir: Path) -> tuple[float, float]:
    """(seconds, CPU seconds of the command line's own process) of one ``backfill --json``, as ``_timed_cli``."""
    fresh_state_db(root)
    env = {**os.environ, "PYTHONPATH": str(package_parent), "HERMES_HOME": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", _TIMED_CLI, str(webui_dir)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0 or not Path(result["file"]).is_relative_to(package_parent):
        raise RuntimeError(f"backfill by {package_parent}: exit {result['rc']}, imported {result['file']}")
    return float(result["s"]), float(result["cpu"])


def _against_previous(root: Path, webui_dir: Path) -> list[Row]:
    """This release's command line against the previous one's, and the previous one against itself, in this run.

    Each round runs the three (this release, the previous, a copy of the
    previous) back to back, in an order that turns round by round; a
    round's ratios are speeds relative to the previous release's run.
    """
    previous = previous_release(root / "previous-release")
    if previous is None:
        return [Row(f"previous release ({PREVIOUS_RELEASE}) for comparison", "not in git history here")]
    again = root / "previous-release-again"
    shutil.copytree(previous, again)
    seconds: dict[Path, list[float]] = {ROOT: [], previous: [], again: []}
    order = list(seconds)
    for k in range(COMPARE_ROUNDS):
        for parent in order[k % 3 :] + order[: k % 3]:
            seconds[parent].append(_timed_cli(parent, root, webui_dir))
    ratios = [p / o for o, p in zip(seconds[ROOT], seconds[previous], strict=True)]
    noise = [p / a for a, p in zip(seconds[again], seconds[previous], strict=True)]
    ratio = median(ratios)

    def spread(values: list[float]) -> str:
        low, high = quartiles(values)
        return f"{median(values):.2f} (quartiles {low:.2f}–{high:.2f})"

    return [
        Row(
            f"command line, this release vs the previous ({PREVIOUS_RELEASE}): back to back, fresh "
            f"interpreters, {COMPARE_ROUNDS} rounds; median chats/s",
            f"{SESSIONS / median(seconds[ROOT]):,.0f} vs {SESSIONS / median(seconds[previous]):,.0f}",
        ),
        Row("  each round, this ÷ previous", " / ".join(f"{r:.2f}" for r in ratios)),
        Row(
            "  speed ratio this ÷ previous, per round (issue 16: unchanged or better; 5% allowed for noise)",
            spread(ratios),
            "median ≥ 0.95",
            ratio >= 0.95,
        ),
        Row("  the previous release ÷ a copy of itself, the same way (this machine's noise)", spread(noise)),
        Row("  what the gap is made of (this module's docstring)", "python -m benchmarks.backfill_gap"),
    ]


def _sum(report: dict[str, Any], key: str) -> Any:
    return sum(d[key] for d in report["databases"])


def run() -> list[Table]:
    with scratch_home("backfill", state_db=False) as root:
        webui_dir = root / "webui"
        sessions_dir = webui_dir / "sessions"
        started = time.perf_counter()
        write_sessions(sessions_dir)
        generate_s = time.perf_counter() - started

        runs = [_library_run(root, sessions_dir) for _ in range(RUNS)]
        db = root / "state.db"
        right_library = _check_rows(db)

        cli_runs = []
        for _ in range(RUNS):
            fresh_state_db(root)
            cli_runs.append(_cli(webui_dir))
        right_cli = _check_rows(db)
        cli_status, cli_first, _, _ = cli_runs[-1]
        again_status, again, again_s, _ = _cli(webui_dir)
        comparison = _against_previous(root, webui_dir)

        transcripts = _library_run(root, sessions_dir, transcripts=True)
        messages_stored = count(db, "SELECT COUNT(*) FROM messages")

    rates = [SESSIONS / r["total_s"] for r in runs]
    rate = median(rates)
    hold = max(r["hold_s"] for r in runs)
    commit_hold = max(r["commit_hold_s"] for r in runs)
    cli_rates = [SESSIONS / took for _, _, took, _ in cli_runs]
    cli_rate = median(cli_rates)
    cli_hold = max(d["max_lock_hold_ms"] for _, report, _, _ in cli_runs for d in report["databases"])
    cli_commit_hold = max(hold for _, _, _, hold in cli_runs)
    messages = SESSIONS * MESSAGES_PER_CHAT
    message_rate = messages / transcripts["total_s"]
    rows = [
        Row(f"{SESSIONS:,} session files, {MESSAGES_PER_CHAT} messages each, written in", f"{generate_s:.1f} s"),
        Row(
            f"command line (cli.main backfill --json: reading overlapped with writing), median of {RUNS}",
            f"{cli_rate:,.0f} chats/s",
            "≥ 20,000/s",
            cli_rate >= 20_000 and cli_status == 0,
        ),
        Row("  each run", " / ".join(f"{r:,.0f}" for r in cli_rates)),
        Row(
            "  transactions; longest write-lock hold (engine's / incl. COMMIT)",
            f"{_sum(cli_first, 'transactions')}; {cli_hold:.1f} / {cli_commit_hold * 1e3:.1f} ms",
            "≤ 50 ms",
            cli_hold <= 50 and cli_commit_hold <= 0.05,
        ),
        Row(
            "  chats written; rows exact in state.db",
            f"{cli_first['written']:,}; {right_cli:,}",
            f"{SESSIONS:,}",
            cli_first["written"] == SESSIONS and right_cli == SESSIONS,
        ),
        Row(
            "command line again over the same state.db: chats written",
            f"{again['written']} ({again['outcomes'].get('unchanged', 0):,} up to date)",
            "0",
            again["written"] == 0 and again_status == 0,
        ),
        Row("  … in", f"{again_s:.3f} s"),
        Row("  … write transactions", str(_sum(again, "transactions"))),
        *comparison,
        Row(
            f"library, the two phases apart (read every file, then write), median of {RUNS}",
            f"{rate:,.0f} chats/s",
        ),
        Row("  each run", " / ".join(f"{r:,.0f}" for r in rates)),
        Row(
            f"  reading ({os.cpu_count()} reader processes), per run",
            " / ".join(f"{r['read_s']:.3f}" for r in runs) + " s",
        ),
        Row("  … CPU time of the readers and this process", " / ".join(f"{r['read_cpu_s']:.3f}" for r in runs) + " s"),
        Row("  writing (state.db transactions), per run", " / ".join(f"{r['write_s']:.3f}" for r in runs) + " s"),
        Row(
            "  … CPU time (the rest is disk waits, or other work running)",
            " / ".join(f"{r['write_cpu_s']:.3f}" for r in runs) + " s",
        ),
        Row("  write transactions, per run", " / ".join(str(r["transactions"]) for r in runs)),
        Row("  longest write-lock hold, all runs: the engine's own figure", ms(hold), "≤ 50 ms", hold <= 0.05),
        Row(
            "  … BEGIN IMMEDIATE → COMMIT returned (what other writers wait)",
            ms(commit_hold),
            "≤ 50 ms",
            commit_hold <= 0.05,
        ),
        Row(
            "  chats written; rows exact in state.db",
            f"{runs[-1]['written']:,}; {right_library:,}",
            f"{SESSIONS:,}",
            runs[-1]["written"] == SESSIONS and right_library == SESSIONS,
        ),
    ]
    transcript_rows = [
        Row(
            f"backfill --transcripts (library path): {messages:,} messages, end to end",
            f"{message_rate:,.0f} msg/s",
        ),
        Row(
            "  reading / writing",
            f"{transcripts['read_s']:.2f} / {transcripts['write_s']:.2f} s",
        ),
        Row("  write transactions", str(transcripts["transactions"])),
        Row(
            "  write-lock hold, incl. COMMIT: p99",
            ms(transcripts["p99_hold_s"]),
            "≤ 50 ms",
            transcripts["p99_hold_s"] <= 0.05,
        ),
        Row(
            "  … longest (engine's / incl. COMMIT); transactions over 50 ms",
            f"{transcripts['hold_s'] * 1e3:.1f} / {transcripts['commit_hold_s'] * 1e3:.1f} ms; "
            f"{transcripts['over_50ms']}",
        ),
        Row(
            "  messages in state.db",
            f"{messages_stored:,}",
            f"{messages:,}",
            messages_stored == messages and transcripts["written"] == SESSIONS,
        ),
    ]
    return [
        Table("4", f"backfill: {SESSIONS:,} WebUI chats", rows),
        Table("6", "transcripts (issue 17)", transcript_rows),
    ]


if __name__ == "__main__":
    bench_main(run)
