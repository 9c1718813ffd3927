"""What table 4's gap to the previous release is made of: ``python -m benchmarks.backfill_gap [ROUNDS]``.

Not part of ``make bench`` (about two minutes). Table 4 races this
release's command line against the previous release's
(``bench_backfill.PREVIOUS_RELEASE``); this races, the same way — fresh
interpreters, back to back, the order turning round by round, each into a
fresh state.db over the same 10,000 session files — the previous release,
this release, and copies of this release with one thing the previous
release did not do left out of them:

- **usage row**: the database read as having no ``session_model_usage``
  (``schema.probe``), so no chat's usage row is checked or written;
- **record**: no ``webui_insights_chats`` row written (``apply_plans``);
- **spend accounting**: the spend taken as the WebUI's figures as they
  are (``plan._account`` not run, its fields not kept in the record);
- all three at once.

A copy is a measurement only: what it leaves in state.db is wrong. For
each, the median speed, its speed ratio to the previous release (per
round, as table 4 takes it), the command line process's own CPU time per
chat (the writer: the reader process is a child) and what leaving the
thing out saves against this release. The copies are made by replacing
one line of the source each; a line that moved stops this with its name.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .bench_backfill import PREVIOUS_RELEASE, SESSIONS, previous_release, timed_cli_run, write_sessions
from .common import ROOT, median, scratch_home
from .table import Row, Table, render

ROUNDS = 15

# What each copy leaves out: (file under webui_insights/, the line as it is, the line instead).
_USAGE_ROW = (
    "engine/schema.py",
    "    return frozenset(found)\n",
    "    found.discard(MODEL_USAGE)\n    return frozenset(found)\n",
)
_RECORD = (
    "engine/apply.py",
    "        write_records(conn, ((sid, merge(records.get(sid), changes)) "
    "for sid, changes in record_changes.items()), now)\n",
    "        pass\n",
)
_ACCOUNTING = (
    "engine/plan.py",
    "    account = _account(desired, rec, ledger, plan.notes, context.now, ordered=recorded is rec.version)\n"
    "    if not same or rec.digest != desired.digest or recorded is not rec.version:\n",
    "    figures = Counters.of(desired)\n"
    "    account = _Account(figures, figures, None, None, desired.last_active_at, True, figures, ZERO)\n"
    "    if not same or rec.digest != desired.digest or recorded is not rec.version:\n",
)
_ACCOUNTING_RECORD = ("engine/plan.py", "    changes.update(_account_changes(account, rec))\n", "")
VARIANTS = {
    "without the usage row": (_USAGE_ROW,),
    "without the record": (_RECORD,),
    "without the spend accounting": (_ACCOUNTING, _ACCOUNTING_RECORD),
    "without all three": (_USAGE_ROW, _RECORD, _ACCOUNTING, _ACCOUNTING_RECORD),
}


def _copy_without(dest: Path, changes: tuple[tuple[str, str, str], ...]) -> Path:
    """This release's package under ``dest``, each change made once."""
    shutil.copytree(ROOT / "webui_insights", dest / "webui_insights", ignore=shutil.ignore_patterns("__pycache__"))
    for name, line, instead in changes:
        path = dest / "webui_insights" / name
        text = path.read_text(encoding="utf-8")
        if text.count(line) != 1:
            raise SystemExit(f"backfill_gap: {name} no longer has, once, the line {line.strip()!r}; update VARIANTS")
        path.write_text(text.replace(line, instead), encoding="utf-8")
    return dest


def run(rounds: int = ROUNDS) -> Table:
    with scratch_home("backfill-gap", state_db=False) as root:
        webui_dir = root / "webui"
        write_sessions(webui_dir / "sessions")
        previous = previous_release(root / "previous-release")
        if previous is None:
            raise SystemExit(f"backfill_gap: the previous release ({PREVIOUS_RELEASE}) is not in git history here")
        packages = {"previous release": previous, "this release": ROOT}
        for k, (label, changes) in enumerate(VARIANTS.items()):
            packages[label] = _copy_without(root / f"variant-{k}", changes)
        runs: dict[str, list[tuple[float, float]]] = {label: [] for label in packages}
        order = list(packages)
        for k in range(rounds):
            for label in order[k % len(order) :] + order[: k % len(order)]:
                runs[label].append(timed_cli_run(packages[label], root, webui_dir))
    return _table(runs, rounds)


def _table(runs: dict[str, list[tuple[float, float]]], rounds: int) -> Table:
    """Per variant: speed ratio to the previous release and, against this release, what leaving it out saves.

    Every figure is a median over the rounds of a figure taken within one
    round (runs seconds apart), as table 4 takes its ratio: medians of whole
    runs would carry this machine's slower and faster minutes into the differences.
    """

    def paired(label: str, other: str, at: int) -> float:
        """Median over the rounds of (``other``'s − ``label``'s) seconds (at 0) or CPU seconds (at 1), µs per chat."""
        return median([(b[at] - a[at]) / SESSIONS * 1e6 for a, b in zip(runs[label], runs[other], strict=True)])

    previous = "previous release"
    rows = [Row(f"{SESSIONS:,} chats, command line (backfill --json), {rounds} rounds", "")]
    for label, samples in runs.items():
        ratio = median([p[0] / s[0] for p, s in zip(runs[previous], samples, strict=True)])
        value = f"{SESSIONS / median([s for s, _ in samples]):,.0f} chats/s; speed {ratio:.2f} of the previous"
        if label in VARIANTS:
            wall, cpu = paired(label, "this release", 0), paired(label, "this release", 1)
            value += f"; saves {wall:.1f} µs/chat ({cpu:.1f} CPU)"
        rows.append(Row(f"  {label}", value))
    rows.append(
        Row(
            "  gap, this release − the previous",
            f"{paired(previous, 'this release', 0):.1f} µs/chat ({paired(previous, 'this release', 1):.1f} CPU)",
        )
    )
    return Table("4", "backfill: what the gap to the previous release is made of", rows)


if __name__ == "__main__":
    print(render(run(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)))
